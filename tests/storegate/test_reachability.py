"""When the MQTT link warns that the broker cannot be reached: the pure decision, with made-up times."""

from __future__ import annotations

import socket
import ssl

import pytest

from storegate.reachability import Outage, UnreachableWarnings, describe_connect_error


def warned_at(warnings: UnreachableWarnings, attempts: list[float]) -> list[float]:
    return [now for now in attempts if warnings.failed(now) is not None]


def test_the_first_failure_warns_at_once_then_the_interval_doubles_up_to_five_minutes() -> None:
    warnings = UnreachableWarnings()
    # paho retries every second or so: an hour of attempts.
    assert warned_at(warnings, [float(t) for t in range(3600)]) == [
        0,
        10,
        30,
        70,
        150,
        310,
        # 320 s would be next; from here on every 300 s.
        610,
        910,
        1210,
        1510,
        1810,
        2110,
        2410,
        2710,
        3010,
        3310,
    ]


def test_a_warning_says_how_long_and_how_many_attempts() -> None:
    warnings = UnreachableWarnings(first_repeat_s=10)
    assert warnings.failed(100.0) == Outage(failing_for_s=0.0, attempts=1)
    assert warnings.failed(105.0) is None
    assert warnings.failed(111.0) == Outage(failing_for_s=11.0, attempts=3)


def test_reaching_the_broker_ends_the_outage_once_and_the_next_one_warns_at_once_again() -> None:
    warnings = UnreachableWarnings()
    assert warnings.reached(0.0) is None, "no outage: nothing to say on the first connection"
    warnings.failed(10.0)
    warnings.failed(12.0)
    assert warnings.unreachable
    assert warnings.reached(42.5) == Outage(failing_for_s=32.5, attempts=2)
    assert not warnings.unreachable
    assert warnings.reached(43.0) is None
    assert warnings.failed(50.0) == Outage(failing_for_s=0.0, attempts=1)
    assert warnings.failed(55.0) is None, "the backoff starts over, from the first interval"
    assert warnings.failed(60.0) is not None


def test_intervals_must_make_sense() -> None:
    with pytest.raises(ValueError, match="first_repeat_s"):
        UnreachableWarnings(first_repeat_s=0)
    with pytest.raises(ValueError, match="first_repeat_s"):
        UnreachableWarnings(first_repeat_s=600, max_repeat_s=300)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "nothing listens on that port"),
        (socket.gaierror(-2, "Name or service not known"), "host name does not resolve (Name or service not known)"),
        (TimeoutError("timed out"), "no answer in time"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "the TLS handshake failed"),
        (OSError(113, "No route to host"), "network error: No route to host"),
        (None, "no reason given"),
    ],
    ids=["refused", "dns", "timeout", "tls", "no-route", "none"],
)
def test_connect_errors_in_words(error: BaseException | None, words: str) -> None:
    assert words in describe_connect_error(error)


def test_an_untrusted_certificate_names_ca_file() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    said = describe_connect_error(error)
    assert "not trusted (unable to get local issuer certificate)" in said
    assert "ca_file" in said
