"""What an operator may ask a device to do through the hub's API, validated before anything is queued (pure).

The names are an allow-list: ``print`` (a ``test_page`` or a ``receipt``), ``snapshot``, ``status``, ``ping``
and ``restart`` for a device; ``ping`` and ``resend`` for the gateway itself. The arguments are checked here
against the limits the gateway's drivers apply (``device_drivers.printer.render.parse_document``,
``device_drivers.camera.driver.SnapshotArgs``), which the hub cannot import: a command the hub accepts is one
the driver can run, and a bad one is a 422 now rather than a ``rejected`` result minutes later. Text may not
carry control characters: on the printer, ESC or GS would be commands, not text (the driver blanks them; the
hub refuses them, so nobody is surprised by the paper).

A receipt needs ``operate`` (ops, admins: it is the store's business); the rest needs ``maintain``
(technicians, admins): :func:`needed_capability`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from hub.domain.access import Capability

# C0, DEL and C1: what the printer driver would otherwise turn into spaces (render.printable).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# The driver's limits (render.py): text fields 1..200 characters, free lines up to 200 each.
MAX_TEXT: Final = 200
MAX_LINES: Final = 200
MAX_ITEMS: Final = 500
MAX_TOTALS: Final = 20
MAX_FOOTER: Final = 20
MAX_AMOUNT: Final = Decimal(10**9)
MAX_QUANTITY: Final = Decimal(1_000_000)
# How long a queued command may wait for its gateway: at least long enough to reach it, at most a day.
MIN_EXPIRES_IN_S: Final = 10
MAX_EXPIRES_IN_S: Final = 24 * 3600


def _no_control(text: str) -> str:
    found = _CONTROL.search(text)
    if found is not None:
        raise ValueError(
            f"control character U+{ord(found.group()):04X} at position {found.start()}: "
            "text may not carry control characters (on a printer they would be commands)"
        )
    return text


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_no_control)]
Line = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_control)]
Amount = Annotated[Decimal, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="in the store's currency")]


class _Args(BaseModel):
    """Arguments of one command: unknown keys are refused, not silently sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TestPageArgs(_Args):
    """The printer's test page: model, width, scripts, a barcode and a QR code (the driver draws it)."""

    document: Literal["test_page"]


class ReceiptItem(_Args):
    """One item line: name, quantity and the line's total."""

    name: Text
    quantity: Decimal = Field(default=Decimal(1), gt=0, le=MAX_QUANTITY)
    amount: Amount


class ReceiptTotal(_Args):
    """One total line (subtotal, tax, total, paid, change)."""

    label: Text
    amount: Amount


class ReceiptArgs(_Args):
    """A receipt the hub sends: a title, free lines, items, totals and a footer; at least one of them."""

    document: Literal["receipt"]
    title: Text | None = None
    lines: list[Line] = Field(default_factory=list, max_length=MAX_LINES)
    items: list[ReceiptItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    totals: list[ReceiptTotal] = Field(default_factory=list, max_length=MAX_TOTALS)
    footer: list[Line] = Field(default_factory=list, max_length=MAX_FOOTER)

    @model_validator(mode="after")
    def _not_blank(self) -> ReceiptArgs:
        if self.title is None and not any(self.lines) and not self.items and not self.totals:
            raise ValueError("a receipt needs a title, lines, items or totals: this one would print blank paper")
        return self


PrintArgs = Annotated[TestPageArgs | ReceiptArgs, Field(discriminator="document")]


class SnapshotArgs(_Args):
    """A still on request; the camera driver also takes shelf and slot to say where it looked."""

    reason: Literal["requested"] = "requested"
    shelf_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_control)] | None = None
    slot: int | None = Field(default=None, ge=1, le=255)


class NoArgs(_Args):
    """``status`` and ``ping`` take no arguments."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expires_in_s: int | None = Field(
        default=None,
        ge=MIN_EXPIRES_IN_S,
        le=MAX_EXPIRES_IN_S,
        description="seconds the command may wait for its gateway before it expires unsent; default by command",
    )


class PrintRequest(_Request):
    """Print a test page (maintain) or a receipt (operate)."""

    name: Literal["print"]
    args: PrintArgs


class SnapshotRequest(_Request):
    """Take a still now (maintain); it arrives as a camera.snapshot event."""

    name: Literal["snapshot"]
    args: SnapshotArgs = SnapshotArgs()


class StatusRequest(_Request):
    """Read the device's state (maintain)."""

    name: Literal["status"]
    args: NoArgs = NoArgs()


class PingRequest(_Request):
    """Is the device there (maintain)."""

    name: Literal["ping"]
    args: NoArgs = NoArgs()


class RestartRequest(_Request):
    """Stop the device's driver and start it again (maintain); answered once it is connected again, or failed."""

    name: Literal["restart"]
    args: NoArgs = NoArgs()


CommandRequest = Annotated[
    PrintRequest | SnapshotRequest | StatusRequest | PingRequest | RestartRequest, Field(discriminator="name")
]


# The gateway's own commands (no device): ``ping``, and ``resend`` of the outbox's events from a seq on.
# ``config.apply`` is not among them: it goes out only through a config push (hub.fleet.config_api), with a version.
class ResendArgs(_Args):
    """The events from ``from_seq`` on go to the hub again (those the gateway still holds: unacknowledged ones)."""

    from_seq: int = Field(ge=1, le=2**63 - 1, description="the first seq of the gateway's outbox stream to resend")


class GatewayPingRequest(_Request):
    """Is the gateway there (maintain)."""

    name: Literal["ping"]
    args: NoArgs = NoArgs()


class ResendRequest(_Request):
    """Send the outbox's events from a seq on again (maintain); the hub keeps each event once."""

    name: Literal["resend"]
    args: ResendArgs


GatewayCommandRequest = Annotated[GatewayPingRequest | ResendRequest, Field(discriminator="name")]


def kind_of(request: CommandRequest | GatewayCommandRequest) -> str:
    """What is asked, as the tables below and the audit log name it: ``print:receipt``, ``ping``..."""
    if isinstance(request, PrintRequest):
        return f"print:{request.args.document}"
    return request.name


# What each kind needs, and how long it may wait for its gateway unless the caller says.
NEEDS: Final[dict[str, Capability]] = {
    "print:test_page": Capability.MAINTAIN,
    "print:receipt": Capability.OPERATE,
    "snapshot": Capability.MAINTAIN,
    "status": Capability.MAINTAIN,
    "ping": Capability.MAINTAIN,
    "restart": Capability.MAINTAIN,
    "resend": Capability.MAINTAIN,
}
DEFAULT_LIFETIME: Final[dict[str, timedelta]] = {
    "print:test_page": timedelta(minutes=15),
    "print:receipt": timedelta(hours=1),  # the customer may still be waiting; later it is no use
    "snapshot": timedelta(minutes=15),
    "status": timedelta(minutes=5),
    "ping": timedelta(minutes=5),
    "restart": timedelta(minutes=5),
    "resend": timedelta(minutes=15),
}


def needed_capability(request: CommandRequest | GatewayCommandRequest) -> Capability:
    """The capability a principal needs to send ``request``."""
    return NEEDS[kind_of(request)]


def lifetime(request: CommandRequest | GatewayCommandRequest) -> timedelta:
    """How long ``request`` may wait for its gateway: the caller's ``expires_in_s``, else its kind's default."""
    if request.expires_in_s is not None:
        return timedelta(seconds=request.expires_in_s)
    return DEFAULT_LIFETIME[kind_of(request)]


def wire_args(request: CommandRequest | GatewayCommandRequest) -> dict[str, JsonValue]:
    """The command's ``args`` as the gateway receives them (amounts as decimal strings, nothing unset)."""
    args: dict[str, JsonValue] = request.args.model_dump(mode="json", exclude_none=True)
    return args
