"""The renewal's pure parts: when a certificate is due, and finishing a renewal a stop interrupted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.renewal import due_at, finish_interrupted_renewal, renewal_due

START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(days=90)


def test_a_certificate_is_due_once_the_fraction_of_its_lifetime_is_left() -> None:
    assert due_at(START, END, 1 / 3) == START + timedelta(days=60)
    assert not renewal_due(START, END, START + timedelta(days=59, hours=23), 1 / 3)
    assert renewal_due(START, END, START + timedelta(days=60), 1 / 3)
    assert renewal_due(START, END, END + timedelta(days=1), 1 / 3)  # expired: due (the hub refuses it; logged)


def test_an_interrupted_renewal_is_finished_or_undone_so_the_key_and_certificate_belong_together(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "gateway.pem", tmp_path / "gateway.key"
    cert.write_text("old cert")
    key.write_text("old key")
    assert finish_interrupted_renewal(cert, key) is None

    # Stopped after the key was renamed: the new certificate follows it.
    key.write_text("new key")
    (tmp_path / "gateway.pem.next").write_text("new cert")
    assert finish_interrupted_renewal(cert, key) == "finished: the renewed certificate joined its key"
    assert (cert.read_text(), key.read_text()) == ("new cert", "new key")

    # Stopped before either rename: the old pair stays, the leftovers go.
    (tmp_path / "gateway.pem.next").write_text("newer cert")
    (tmp_path / "gateway.key.next").write_text("newer key")
    assert finish_interrupted_renewal(cert, key) == "undone: the old certificate and key stay"
    assert (cert.read_text(), key.read_text()) == ("new cert", "new key")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.key", "gateway.pem"]
