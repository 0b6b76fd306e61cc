"""``/fleet``: every gateway the reader may see, problems first, with its versions, backlog and certificate.

A row per gateway: its store, state (online, silent, offline, never connected, revoked), agent version, config hash,
last seen (the store's wall clock and how long ago), backlog, devices and their live alerts, and the expiry of its
newest certificate when the hub runs its own CA (hub.pki), flagged within :data:`CERTIFICATE_WARNING_DAYS`.
Filters: a store, a state, and a search over store id, store name and gateway id. Four queries whatever the number
of gateways (gateways, their losses, store profiles, live device alerts) and one read of the CA's index file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import AlertRow
from hub.api.deps import NowDep, RuntimeDep, SessionDep
from hub.api.listings import GatewayView, connectivity
from hub.catalog.models import StoreProfile
from hub.console.store import Problem, device_alerts, gateway_problems
from hub.console.templating import ReaderDep, page
from hub.db.models import DataLossRecord, Gateway
from hub.domain.alerts import AlertStatus
from hub.errors import HubError
from hub.fleet.credentials import hub_authority
from hub.pki.authority import CertificateRecord
from hub.reports.queries import FALLBACK_TIME_ZONE
from hub.settings import HubSettings
from storegate.wire import SEGMENT_PATTERN

log = structlog.get_logger(__name__)

router = APIRouter(tags=["dashboard"])

# A certificate that expires within this many days is flagged (renewal takes a technician's visit at worst).
CERTIFICATE_WARNING_DAYS: Final = 30
# Rows shown at most; the counts above the table cover every matching gateway.
MAX_ROWS: Final = 500
MAX_SEARCH_CHARS: Final = 100
State = Literal["online", "silent", "offline", "unknown", "revoked"]
CertificateState = Literal["ok", "expiring", "expired", "revoked", "none"]
_LIVE_ALERT: Final = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)
# Alerts about a zone or the store itself are not a device's.
_DEVICE_SUBJECTS: Final = ("device", "camera", "door", "printer", "shelf", "scanner")


def _(message: str) -> str:
    """Mark a message for the console's catalogs; the page's template translates it when it renders."""
    return message


@dataclass(frozen=True, slots=True)
class FleetLine:
    """One gateway as the fleet page shows it."""

    view: GatewayView
    store_name: str | None
    timezone: str
    state: str
    backlog: int | None
    device_count: int
    device_alerts: Sequence[AlertRow]
    problems: Sequence[Problem]
    certificate: CertificateRecord | None
    certificate_state: CertificateState

    @property
    def key(self) -> str:
        """``store_id/gateway_id``, as the row's data-gateway and a certificate's name."""
        return f"{self.view.gateway.store_id}/{self.view.gateway.gateway_id}"


# --------------------------------------------------------------------------- pure parts


def newest_certificates(records: Iterable[CertificateRecord]) -> dict[str, CertificateRecord]:
    """Each gateway's newest certificate (the index lists them oldest first), by ``store_id/gateway_id``."""
    return {record.name: record for record in records if record.kind == "gateway"}


def certificate_state(record: CertificateRecord | None, *, now: datetime) -> CertificateState:
    """Whether a certificate is fine, expires within the warning, has expired or was revoked."""
    if record is None:
        return "none"
    if record.revoked_at is not None:
        return "revoked"
    if record.not_after <= now:
        return "expired"
    if record.not_after - now <= timedelta(days=CERTIFICATE_WARNING_DAYS):
        return "expiring"
    return "ok"


def fleet_line(
    view: GatewayView,
    *,
    profile: tuple[str, str] | None,
    alerts: Sequence[AlertRow],
    certificate: CertificateRecord | None,
    ca_runs: bool,
    now: datetime,
) -> FleetLine:
    """A gateway's line: its problems in words, its devices' alerts, its certificate's state."""
    state, problems = gateway_problems(view, now=now)
    gateway = view.gateway
    own_alerts = [a for device in gateway.devices or () for a in device_alerts(device, alerts)]
    if own_alerts and state != "revoked":
        problems.append(Problem(_("Live alerts about its devices: %(count)s"), {"count": len(own_alerts)}))
    cert_state = certificate_state(certificate, now=now)
    if state != "revoked" and ca_runs:
        if cert_state == "expired":
            problems.append(Problem(_("Its certificate has expired: the broker refuses it")))
        elif cert_state == "expiring":
            problems.append(Problem(_("Its certificate expires within 30 days")))
        elif cert_state in ("none", "revoked"):
            problems.append(Problem(_("No valid certificate issued by the hub's CA")))
    depth = (gateway.last_health or {}).get("outbox_depth")
    return FleetLine(
        view=view,
        store_name=profile[0] if profile else None,
        timezone=profile[1] if profile else FALLBACK_TIME_ZONE,
        state=state,
        backlog=depth if isinstance(depth, int) else None,
        device_count=len(gateway.devices or ()),
        device_alerts=own_alerts,
        problems=problems,
        certificate=certificate,
        certificate_state=cert_state,
    )


def matches(line: FleetLine, *, state: str | None, search: str | None) -> bool:
    """Whether a line passes the state filter and the search (store id, store name or gateway id, any case)."""
    if state and line.state != state:
        return False
    if search:
        needle = search.casefold()
        gateway = line.view.gateway
        haystack = (gateway.store_id, gateway.gateway_id, line.store_name or "")
        return any(needle in text.casefold() for text in haystack)
    return True


def problems_first(lines: Iterable[FleetLine]) -> list[FleetLine]:
    """Gateways with problems first, then the others, revoked ones last; by store and gateway within each."""
    return sorted(
        lines,
        key=lambda line: (
            line.state == "revoked",
            not line.problems,
            line.view.gateway.store_id,
            line.view.gateway.gateway_id,
        ),
    )


def counts_of(lines: Sequence[FleetLine]) -> dict[str, int]:
    """How many gateways are in each state, have problems, or hold a certificate that needs renewing."""
    counts = dict.fromkeys(("online", "silent", "offline", "unknown", "revoked"), 0)
    for line in lines:
        counts[line.state] = counts.get(line.state, 0) + 1
    counts["all"] = len(lines)
    counts["problems"] = sum(1 for line in lines if line.problems and line.state != "revoked")
    counts["certificates"] = sum(
        1 for line in lines if line.state != "revoked" and line.certificate_state in ("expiring", "expired")
    )
    return counts


# --------------------------------------------------------------------------- queries and files


async def fleet_views(session: AsyncSession, *, now: datetime, grace_s: float) -> list[GatewayView]:
    """Every gateway with its connectivity and events lost, in two queries without lists of ids.

    ``hub.api.listings.list_gateways`` also finds each gateway's newest stream by the stores and ids it read, which
    the fleet does not show: with 2,000 gateways on PostgreSQL that read took 151 ms, this one 88 (best of 8, on a
    busy 2-core machine), most of it building the 2,000 ORM objects.
    """
    gateways = (await session.scalars(select(Gateway).order_by(Gateway.store_id, Gateway.gateway_id))).all()
    lost_rows = await session.execute(
        select(DataLossRecord.store_id, DataLossRecord.gateway_id, func.sum(DataLossRecord.count)).group_by(
            DataLossRecord.store_id, DataLossRecord.gateway_id
        )
    )
    lost = {(store_id, gateway_id): int(count) for store_id, gateway_id, count in lost_rows}
    return [
        GatewayView(
            gateway=gateway,
            connectivity=connectivity(gateway.online, gateway.last_seen_at, now=now, grace_s=grace_s),
            stream=None,
            through_seq=None,
            events_lost=lost.get((gateway.store_id, gateway.gateway_id), 0),
        )
        for gateway in gateways
    ]


async def _profiles(session: AsyncSession, store_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    rows = await session.execute(
        select(StoreProfile.store_id, StoreProfile.name, StoreProfile.timezone).where(
            StoreProfile.store_id.in_(store_ids)
        )
    )
    return {store_id: (name, zone) for store_id, name, zone in rows}


async def _device_alerts(session: AsyncSession, store_ids: Sequence[str] | None) -> dict[str, list[AlertRow]]:
    """Live alerts about devices, by store (ix_alerts_status_opened: live alerts are few)."""
    query = select(AlertRow).where(AlertRow.status.in_(_LIVE_ALERT), AlertRow.subject_kind.in_(_DEVICE_SUBJECTS))
    if store_ids is not None:
        query = query.where(AlertRow.store_id.in_(store_ids))
    found: dict[str, list[AlertRow]] = {}
    for alert in await session.scalars(query.order_by(AlertRow.opened_at.desc())):
        found.setdefault(alert.store_id, []).append(alert)
    return found


def _certificates(settings: HubSettings) -> tuple[bool, Mapping[str, CertificateRecord], str | None]:
    """Whether the hub runs a CA, each gateway's newest certificate, and why they could not be read (or None)."""
    try:
        authority = hub_authority(settings)
        if authority is None:
            return False, {}, None
        return True, newest_certificates(authority.records()), None
    except (HubError, OSError, ValueError, KeyError) as err:
        log.warning("fleet_certificates_unreadable", error=str(err))
        return True, {}, str(err)


# --------------------------------------------------------------------------- the page


@router.get(
    "/fleet",
    response_class=HTMLResponse,
    summary="The fleet of gateways",
    description="Every gateway the reader may see, problems first: state, agent and config versions, last seen, "
    "backlog, devices and certificate expiry; filtered by store, state and a search.",
    include_in_schema=False,
)
async def fleet_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
    reader: ReaderDep,
    store_id: Annotated[
        str | None, Query(max_length=63, pattern=f"^$|{SEGMENT_PATTERN}", description="only this store")
    ] = None,
    state: Annotated[Literal["", "online", "silent", "offline", "unknown", "revoked"] | None, Query()] = None,
    q: Annotated[
        str | None, Query(max_length=MAX_SEARCH_CHARS, description="part of a store id, store name or gateway id")
    ] = None,
) -> HTMLResponse:
    """The fleet page; a store outside the reader's scope is refused by the gate (403)."""
    who = reader.who
    # Every gateway the reader reaches, so the store menu and the counts cover them all; the filters apply below.
    views = await fleet_views(session, now=now, grace_s=runtime.settings.gateway_offline_grace_s)
    views = [v for v in views if who.reaches(v.gateway.store_id)]
    store_ids = sorted({v.gateway.store_id for v in views})
    profiles = await _profiles(session, store_ids) if store_ids else {}
    alerts = await _device_alerts(session, None if who.chain_wide else store_ids)
    ca_runs, certificates, certificate_problem = _certificates(runtime.settings)
    lines = [
        fleet_line(
            view,
            profile=profiles.get(view.gateway.store_id),
            alerts=alerts.get(view.gateway.store_id, ()),
            certificate=certificates.get(f"{view.gateway.store_id}/{view.gateway.gateway_id}"),
            ca_runs=ca_runs,
            now=now,
        )
        for view in views
    ]
    shown = problems_first(
        line
        for line in lines
        if matches(line, state=state or None, search=q or None)
        and (not store_id or line.view.gateway.store_id == store_id)
    )
    return page(
        "fleet.html",
        reader,
        request,
        now=now,
        lines=shown[:MAX_ROWS],
        matching=len(shown),
        counts=counts_of(lines),
        stores=[(s, profiles[s][0] if s in profiles else s) for s in store_ids],
        chosen={"store_id": store_id or "", "state": state or "", "q": q or ""},
        ca_runs=ca_runs,
        certificate_problem=certificate_problem,
        max_rows=MAX_ROWS,
    )
