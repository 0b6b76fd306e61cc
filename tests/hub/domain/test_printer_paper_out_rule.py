"""The printer_paper_out rule: a receipt printer out of paper (or open) raises once and clears once it can print."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from hub.alerting.alerts_db import category_of
from hub.alerting.rules_db import default_rule_set
from hub.domain.alerts import AlertSignal, Severity
from hub.domain.rules import EventObservation, PrinterPaperOutRule, Rule, evaluate, evaluate_all, initial_states
from storegate.wire import PrinterStatus
from tests.hub.domain.test_rules import CTX, M, ev, run, summary


def status(when: datetime, device: str = "receipt-printer", **fields: Any) -> EventObservation:
    payload = PrinterStatus.model_validate({"online": True, "paper": "ok", "cover_open": False} | fields)
    return ev("printer.status", when, device, **payload.model_dump(mode="json"))


def s(seconds: int) -> datetime:
    return M + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("rule", "observations", "expected"),
    [
        pytest.param(
            PrinterPaperOutRule(),
            [status(M), status(s(1), paper="low"), status(s(2), paper="out", online=False), status(s(9))],
            [("raise", "device:receipt-printer", s(2)), ("clear", "device:receipt-printer", s(9))],
            id="out then refilled",
        ),
        pytest.param(
            PrinterPaperOutRule(),
            [status(M, paper="out"), status(s(1), paper="out", cover_open=True), status(s(2), paper="out")],
            [("raise", "device:receipt-printer", M)],
            id="still out: one raise",
        ),
        pytest.param(
            PrinterPaperOutRule(),
            [status(M, cover_open=True, online=False), status(s(5), cover_open=False)],
            [("raise", "device:receipt-printer", M), ("clear", "device:receipt-printer", s(5))],
            id="cover open counts by default",
        ),
        pytest.param(
            PrinterPaperOutRule(cover_open=False),
            [status(M, cover_open=True, online=False), status(s(5))],
            [],
            id="cover open can be left out",
        ),
        pytest.param(PrinterPaperOutRule(), [status(M, paper="low"), status(s(1))], [], id="low is not out"),
        pytest.param(
            PrinterPaperOutRule(),
            [status(M, paper="out"), status(s(1), device="kitchen-printer", paper="out"), status(s(2))],
            [
                ("raise", "device:receipt-printer", M),
                ("raise", "device:kitchen-printer", s(1)),
                ("clear", "device:receipt-printer", s(2)),
            ],
            id="each printer on its own",
        ),
        pytest.param(
            PrinterPaperOutRule(), [ev("camera.tamper", M), status(s(1))], [], id="other events: nothing to clear"
        ),
    ],
)
def test_printer_paper_out(rule: Rule, observations: list[EventObservation], expected: list[Any]) -> None:
    assert summary(run(rule, list(observations))) == expected


def test_the_signal_says_what_is_wrong_and_carries_the_event() -> None:
    out = status(M, paper="out", cover_open=True, online=False)
    (raised,) = run(PrinterPaperOutRule(), [out])
    assert raised.message == "printer receipt-printer cannot print: out of paper and cover open"
    assert raised.evidence == (out.event_id,)
    assert raised.severity is Severity.WARNING
    (_, cleared) = run(PrinterPaperOutRule(), [out, status(s(1))])
    assert cleared.message == "printer receipt-printer can print again"


def test_it_reads_only_printer_status_and_skipping_the_rest_changes_nothing() -> None:
    rules: dict[str, Rule] = {"paper": PrinterPaperOutRule()}
    assert rules["paper"].events_read() == {"printer.status"}
    stream = [status(M, paper="out"), ev("scan.sale", s(1), "till-1"), status(s(2))]
    every = initial_states(rules)
    one_by_one: list[AlertSignal] = []
    for observation in stream:
        step = evaluate(rules, CTX, every, observation)
        every, one_by_one = dict(step.states), one_by_one + list(step.signals)
    together = evaluate_all(rules, CTX, initial_states(rules), stream)
    assert list(together.signals) == one_by_one
    assert dict(together.states) == every


def test_it_is_a_default_rule_of_the_operations_category() -> None:
    rule = default_rule_set().rules["printer-paper-out"]
    assert rule == PrinterPaperOutRule()
    assert category_of("printer_paper_out") == "operations"
