"""The hub's check of a command's arguments agrees with the drivers that run it (pure, no I/O).

The hub cannot import the drivers, so ``hub.commands.requests`` mirrors their limits; these tests hold the two
together: what the hub accepts the printer driver parses and prints, and a document just past a limit is
refused by both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

import pytest
from pydantic import TypeAdapter, ValidationError

from device_drivers.camera.driver import SnapshotArgs as CameraSnapshotArgs
from device_drivers.printer.errors import PrintJobInvalidError
from device_drivers.printer.profile import PrinterProfile
from device_drivers.printer.render import parse_document, render
from device_drivers.profiles import load_catalog
from hub.commands.requests import (
    DEFAULT_LIFETIME,
    MAX_FOOTER,
    MAX_ITEMS,
    MAX_LINES,
    MAX_TEXT,
    MAX_TOTALS,
    NEEDS,
    CommandRequest,
    GatewayCommandRequest,
    kind_of,
    needed_capability,
    wire_args,
)
from hub.domain.access import Capability
from tests.device_drivers.printer.escpos_text import decode

REQUEST: Final[TypeAdapter[CommandRequest]] = TypeAdapter(CommandRequest)
GATEWAY_REQUEST: Final[TypeAdapter[GatewayCommandRequest]] = TypeAdapter(GatewayCommandRequest)


def at_the_limits() -> dict[str, Any]:
    """The largest receipt both accept."""
    return {
        "name": "print",
        "args": {
            "document": "receipt",
            "title": "T" * MAX_TEXT,
            "lines": ["L" * MAX_TEXT] * MAX_LINES,
            "items": [{"name": "I" * MAX_TEXT, "quantity": "1000000", "amount": "-1000000000"}] * MAX_ITEMS,
            "totals": [{"label": "TOTAL", "amount": "1000000000"}] * MAX_TOTALS,
            "footer": ["F"] * MAX_FOOTER,
        },
    }


def test_a_receipt_the_hub_accepts_is_one_the_printer_prints() -> None:
    body = {
        "name": "print",
        "args": {
            "document": "receipt",
            "title": "High Street",
            "lines": ["Order 1042", ""],
            "items": [{"name": "Biscuits", "quantity": 2, "amount": 3.5}, {"name": "Tea", "amount": "1.20"}],
            "totals": [{"label": "TOTAL", "amount": "4.70"}],
            "footer": ["Thank you"],
        },
    }
    args = wire_args(REQUEST.validate_python(body))
    profile = load_catalog().get("epson-tm-t20")
    assert isinstance(profile, PrinterProfile)
    paper = decode(render(parse_document(args), profile).data).text
    for shown in ("High Street", "Order 1042", "2 x Biscuits", "3.50", "Tea", "1.20", "TOTAL", "4.70", "Thank you"):
        assert shown in paper


PAST_A_LIMIT: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    "title": lambda a: a.update(title="T" * (MAX_TEXT + 1)),
    "a line": lambda a: a["lines"].__setitem__(0, "L" * (MAX_TEXT + 1)),
    "lines": lambda a: a["lines"].append("L"),
    "items": lambda a: a["items"].append({"name": "I", "amount": "1"}),
    "an item's name": lambda a: a["items"].__setitem__(0, {"name": "I" * (MAX_TEXT + 1), "amount": "1"}),
    "a quantity": lambda a: a["items"].__setitem__(0, {"name": "I", "quantity": "1000001", "amount": "1"}),
    "a zero quantity": lambda a: a["items"].__setitem__(0, {"name": "I", "quantity": "0", "amount": "1"}),
    "totals": lambda a: a["totals"].append({"label": "X", "amount": "1"}),
    "an amount": lambda a: a["totals"].__setitem__(0, {"label": "X", "amount": "1000000000.01"}),
    "footer": lambda a: a["footer"].append("F"),
}


def test_the_largest_receipt_passes_both() -> None:
    parse_document(wire_args(REQUEST.validate_python(at_the_limits())))


@pytest.mark.parametrize("past", sorted(PAST_A_LIMIT))
def test_a_receipt_past_a_limit_fails_both(past: str) -> None:
    body = copy.deepcopy(at_the_limits())
    PAST_A_LIMIT[past](body["args"])
    with pytest.raises(ValidationError):
        REQUEST.validate_python(body)
    with pytest.raises(PrintJobInvalidError):
        parse_document(body["args"])


def test_a_test_page_and_a_snapshot_are_what_their_drivers_take() -> None:
    page = REQUEST.validate_python({"name": "print", "args": {"document": "test_page"}})
    assert parse_document(wire_args(page)).document == "test_page"
    snapshot = REQUEST.validate_python({"name": "snapshot", "args": {"shelf_id": "shelf-3", "slot": 2}})
    taken = CameraSnapshotArgs.model_validate(wire_args(snapshot))
    assert (taken.reason, taken.shelf_id, taken.slot) == ("requested", "shelf-3", 2)
    assert wire_args(REQUEST.validate_python({"name": "ping"})) == {}


def test_a_receipt_needs_operate_everything_else_maintain_and_each_kind_has_a_lifetime() -> None:
    kinds = {
        kind_of(REQUEST.validate_python(body)): needed_capability(REQUEST.validate_python(body))
        for body in (
            {"name": "print", "args": {"document": "receipt", "title": "x"}},
            {"name": "print", "args": {"document": "test_page"}},
            {"name": "snapshot"},
            {"name": "status"},
            {"name": "ping"},
            {"name": "restart"},
        )
    }
    resend = GATEWAY_REQUEST.validate_python({"name": "resend", "args": {"from_seq": 1200}})
    kinds[kind_of(resend)] = needed_capability(resend)
    assert kinds == {
        "print:receipt": Capability.OPERATE,
        "print:test_page": Capability.MAINTAIN,
        "snapshot": Capability.MAINTAIN,
        "status": Capability.MAINTAIN,
        "ping": Capability.MAINTAIN,
        "restart": Capability.MAINTAIN,
        "resend": Capability.MAINTAIN,
    }
    assert set(NEEDS) == set(DEFAULT_LIFETIME) == set(kinds)
