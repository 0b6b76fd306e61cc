"""The hub's FastAPI application and the function that serves it with uvicorn.

``create_app(settings)`` builds the app without side effects; its lifespan migrates the
database, connects to MQTT and starts the consumer, and stops them in reverse order.

``settings.role`` says what one process runs (docs/scaling.md): ``all`` everything (one hub process, as
always), ``api`` the HTTP API only (no MQTT, no consumer, no background senders), ``worker`` the MQTT consumer
and the operations on events with only ``/healthz`` and ``/metrics`` over HTTP. With a shared subscription
group the workers take their stores' locks per unit and one of them, the leader, runs the timers and senders.
``serve(settings)`` runs it on ``settings.http_host:http_port`` until SIGINT/SIGTERM or ``stop``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import JsonValue
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

from hub.alerting import alerts_api, rules_api, webhooks_api
from hub.alerting.monitoring import MonitoringSettings
from hub.alerting.notifications import NotificationDispatcher
from hub.alerting.rules_db import seed_default_rules
from hub.alerting.secret_box import SecretBox, SecretKeyError, seal_stored_secrets
from hub.alerting.webhooks import quiet_leaky_library_logs
from hub.api import events, gateways, health, losses, refused, stores
from hub.api.edge import HttpEdge, allowed_hosts_of
from hub.api.schemas import Problem, ValidationProblem
from hub.auth import api as operators_api
from hub.auth import guard
from hub.auth import pages as login_pages
from hub.catalog import api as catalog
from hub.commands import api as commands_api
from hub.commands.sender import CommandPublisher
from hub.console import alerts as console_alerts
from hub.console import assets as console_assets
from hub.console import audit_page as console_audit
from hub.console import enrol_page
from hub.console import fleet as console_fleet
from hub.console import language as console_language
from hub.console import live as console_live
from hub.console import overview as console_overview
from hub.console import reports_page as console_reports
from hub.console import store as console_store
from hub.console.live import LiveFeed
from hub.db.checkpoint import WalCheckpointer
from hub.db.engine import create_engine, describe_error, redacted, session_factory, sqlite_path
from hub.db.migrate import upgrade_to_head
from hub.db.writegate import WriteGate, WriteGateTimeout
from hub.errors import HubError
from hub.fleet import api as fleet_api
from hub.fleet import config_api as fleet_config_api
from hub.fleet import enrolment_api
from hub.footfall import api as footfall_api
from hub.ingest.consumer import Ingestor, subscriptions
from hub.ingest.operations import HubOperations
from hub.ingest.shared import Leadership, StoreLocks, startup_lock
from hub.inventory import api as inventory_api
from hub.inventory import replenishment_api
from hub.inventory.apply import RestockSettings
from hub.metrics import HubMetrics
from hub.pki.commands import pki_directory
from hub.releases import api as releases_api
from hub.releases.runner import RolloutRunner
from hub.reports import api as reports
from hub.reports.schedules import api as report_schedules_api
from hub.reports.schedules.runner import ScheduleRunner
from hub.runtime import HubRuntime
from hub.selftests import api as selftests_api
from hub.settings import HubSettings
from hub.snapshots import api as snapshots_api
from hub.snapshots.gateway_api import SnapshotListener, SnapshotService
from hub.snapshots.store import RetentionPurge, SnapshotFiles, SnapshotMetrics
from hub.sockets import bound_socket
from storegate import __version__, wire
from storegate.mqtt import MqttLink
from storegate.private_files import is_private, private_dir
from storegate.tasks import BackgroundTask

log = structlog.get_logger(__name__)

CONSUMER_STOP_TIMEOUT_S: Final = 10.0
# Shared mode: how long the broker keeps a worker's session (and deals it messages) after it went away.
SHARED_SESSION_EXPIRY_S: Final = 10
# Allocations between two young collections while the hub runs (CPython's default: 700). A unit of work allocates
# some 15 objects an event and holds most until it commits, so at 700 the young pass ran a few times per batch
# and promoted each unit into the older generations, whose passes then walked it again: issue 19 measured 0.92 s
# of collections per 100,000 events at 700 and 0.54 s at 20,000 (docs/benchmarks.md).
GC_YOUNG_THRESHOLD: Final = 20_000
# How long a stopping hub waits for open requests (the console's live streams stay open until cut).
GRACEFUL_SHUTDOWN_S: Final = 5
# Answers smaller than this go out as they are: compressing them saves less than it costs.
GZIP_MIN_BYTES: Final = 1024

DESCRIPTION: Final = """
The Storegate hub stores the events that store gateways publish over MQTT, exactly once,
acknowledges them to the gateways, and tracks each gateway's presence and health.

* `/api/v1/stores`, `/api/v1/gateways`, `/api/v1/events`: what the hub knows, as JSON.
* `/api/v1/stores/{store_id}/gateways`: a store's gateways; enrol one (POST) or revoke it (POST .../revoke).
  The hub accepts nothing from a gateway that is not enrolled.
* `/api/v1/data-losses`: events gateways reported they can never deliver; data loss is never silent.
* `/api/v1/refused-events`: events set aside from gateways' batches (invalid, or refused by the database).
* `/api/v1/catalog/...`: SKUs, store profiles and planograms, with CSV import (row and column errors) and export.
* `/healthz`: the hub's own health (503 with problems in words when degraded).
* `/metrics`: Prometheus metrics, `storegate_hub_*`.
* `/`, `/alerts`: the ops console for people, live over `/console/live`; `/login` signs in.

Every operation but `/healthz` and the sign-in form needs a principal: an API token
(`Authorization: Bearer sgt_...`, made with `storegate hub tokens create` or `POST /api/v1/tokens`) or a
browser session (changes also send `X-CSRF-Token`). What each role may do: docs/security.md.
"""


class HubStartupError(HubError, RuntimeError):
    """The hub could not start: the database, its migrations, or the HTTP listener failed."""


def _tighten_secrets_dir(path: Path) -> None:
    """Make an existing secrets_dir 0700 (one copied or restored as 0755); what writes into it creates it so."""
    if not path.is_dir() or is_private(path):
        return
    was = f"{path.stat().st_mode & 0o777:04o}"
    try:
        private_dir(path)
    except PermissionError as err:
        raise HubStartupError(f"secrets_dir {path} is open to others (mode {was}) and cannot be made 0700") from err
    log.warning("secrets_dir_made_private", path=str(path), was=was)


async def _start(
    settings: HubSettings, stack: AsyncExitStack, clock: Callable[[], datetime] = wire.utc_now
) -> HubRuntime:
    """Create the hub's long-lived objects; ``stack`` undoes each one in reverse order."""
    where = redacted(settings.database_url)
    _tighten_secrets_dir(settings.secrets_dir)
    try:
        # Several hub processes may start at once on PostgreSQL: one migrates, the others then find it done.
        async with startup_lock(settings.database_url):
            await upgrade_to_head(settings.database_url)
    except Exception as err:  # unreachable server, bad path, a database newer than this code: all fatal here
        raise HubStartupError(f"cannot migrate the database {where}: {describe_error(err)}") from err
    database_file = sqlite_path(settings.database_url)
    engine = create_engine(settings.database_url, background_checkpoint=database_file is not None)
    stack.push_async_callback(engine.dispose)
    secret_box = await _seal_webhook_secrets(settings, engine)
    if database_file is not None:
        checkpointer = WalCheckpointer(path=database_file)
        checkpointer.start()
        stack.push_async_callback(checkpointer.stop)
    metrics = HubMetrics()
    # The hub's writers take turns at SQLite's one write lock instead of racing for it (hub.db.writegate).
    write_gate = WriteGate(serialise=database_file is not None, observe=metrics.observe_write_turn)
    metrics.watch_write_turn(write_gate.held_for)
    snapshots = (
        None
        if settings.role == "worker"
        else await _start_snapshots(settings, stack, engine, write_gate, metrics, clock)
    )
    if settings.role == "api":  # HTTP only: the workers consume, apply, tick and send
        log.info("hub_role", role="api", consumer="none", senders="none")
        return HubRuntime(
            snapshots=snapshots,
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            metrics=metrics,
            mqtt=None,
            consumer=None,
            started_at=wire.utc_now(),
            write_gate=write_gate,
        )
    leadership = None
    if settings.shared:
        # Started before the operations: the ticker and the senders ask it before each pass.
        leadership = Leadership(engine=engine, metrics=metrics)
        leadership.start()
        stack.push_async_callback(leadership.stop)
    # A worker's session stays a member of the shared group while it lasts, and the broker goes on dealing it
    # messages while the worker is away: a dead worker must leave the group soon. What it held is resent by the
    # gateways (nothing unacknowledged is lost); a worker back within this keeps its queue.
    link_options: dict[str, Any] = {"session_expiry_s": SHARED_SESSION_EXPIRY_S} if settings.shared else {}
    link = MqttLink(
        settings=settings.mqtt,
        client_id=settings.client_id,
        subscriptions=subscriptions(settings.shared_subscription_group),
        persistent_session=True,
        **link_options,
    )
    await stack.enter_async_context(link)
    metrics.queue_depth.set_function(lambda: link.queue_depth)
    metrics.mqtt_connected.set_function(lambda: 1 if link.connected else 0)
    operations, commands = await _start_operations(
        settings, engine, link, stack, clock, metrics, write_gate, secret_box, leadership
    )
    schedules = _start_report_schedules(settings, engine, stack, clock, metrics, write_gate, secret_box, leadership)
    rollouts = _start_rollouts(settings, engine, stack, clock, metrics, write_gate, leadership, commands)
    ingestor = Ingestor(
        link=link,
        engine=engine,
        metrics=metrics,
        max_events_per_transaction=settings.max_events_per_transaction,
        linger_s=settings.ingest_linger_ms / 1000,
        linger_messages=settings.ingest_linger_messages,
        rejected_keep=settings.rejected_messages_keep,
        operations=operations,
        clock=clock,
        write_gate=write_gate,
        accept_unknown_gateways=settings.accept_unknown_gateways,
        event_clock=settings.event_clock,
        store_locks=StoreLocks(metrics=metrics) if settings.shared else None,
    )
    ingestor.start()
    log.info("hub_role", role=settings.role, shared_group=settings.shared_subscription_group)
    stack.push_async_callback(ingestor.stop, timeout=CONSUMER_STOP_TIMEOUT_S)
    return HubRuntime(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        metrics=metrics,
        mqtt=link,
        consumer=ingestor,
        started_at=wire.utc_now(),
        operations=operations,
        commands=commands,
        write_gate=write_gate,
        leadership=leadership,
        snapshots=snapshots,
        report_schedules=schedules,
        rollouts=rollouts,
    )


async def _start_snapshots(
    settings: HubSettings,
    stack: AsyncExitStack,
    engine: AsyncEngine,
    write_gate: WriteGate,
    metrics: HubMetrics,
    clock: Callable[[], datetime],
) -> SnapshotService:
    """The stills' files and counters, their retention purge, and the gateway listener when a port is set."""
    config = settings.snapshots
    files = SnapshotFiles(config.directory)
    if config.listen_port is not None:  # stills arrive only through the listener: no directory without one
        try:
            files.open()
        except OSError as err:
            raise HubStartupError(f"cannot use the snapshot directory {config.directory}: {err}") from err
    service = SnapshotService(
        settings=config,
        files=files,
        sessions=session_factory(engine),
        write_gate=write_gate,
        metrics=SnapshotMetrics(metrics.registry),
        accept_unknown_gateways=settings.accept_unknown_gateways,
        clock=clock,
        hub_settings=settings,
        hub_metrics=metrics,
    )
    purge = RetentionPurge(
        files=files,
        sessions=service.sessions,
        write_gate=write_gate,
        metrics=service.metrics,
        interval_s=config.purge_interval_s,
        clock=clock,
    )
    purger = BackgroundTask(purge.run, name="snapshot retention")
    purger.start()
    stack.push_async_callback(_cancelled, purger)
    if config.listen_port is not None:
        client_ca = config.client_ca_file or pki_directory(settings) / "ca.crt"
        try:
            listener = SnapshotListener(service=service, client_ca=client_ca)
            listener.start()
        except (OSError, ssl.SSLError, ValueError) as err:
            raise HubStartupError(f"cannot start the gateway listener: {err}") from err
        stack.push_async_callback(listener.stop)
        service.listener = listener
    return service


async def _cancelled(task: BackgroundTask) -> None:
    task.cancel()
    await task.wait()


async def _seal_webhook_secrets(settings: HubSettings, engine: AsyncEngine) -> SecretBox:
    """The webhook key (made when a secret first needs it); secrets in plain text, or under an older key, sealed."""
    box = SecretBox.open(settings.secrets_dir)
    try:
        box.check()
        sealed = await seal_stored_secrets(engine, box)
    except SecretKeyError as err:
        raise HubStartupError(f"cannot use the webhook key: {err}") from err
    if sealed:
        log.info("webhook_secrets_sealed", webhooks=sealed)
    return box


async def _start_operations(
    hub_settings: HubSettings,
    engine: AsyncEngine,
    link: MqttLink,
    stack: AsyncExitStack,
    clock: Callable[[], datetime],
    metrics: HubMetrics,
    write_gate: WriteGate,
    secret_box: SecretBox,
    leadership: Leadership | None = None,
) -> tuple[HubOperations | None, CommandPublisher | None]:
    """Seed the default rules, warm the rules up, start the ticker, the command and notification senders.

    With ``leadership`` (N workers) every worker starts them, and they work while this worker leads.
    """
    settings = hub_settings.operations
    active: Callable[[], bool] = leadership if leadership is not None else _always
    if not settings.enabled:
        return None, None
    async with session_factory(engine)() as session:
        seeded = await seed_default_rules(session, now=clock())
    if seeded:
        log.info("default_rules_seeded", rules=seeded)
    operations = HubOperations(
        engine=engine,
        monitoring=MonitoringSettings(
            tick_s=settings.rules_tick_s,
            shrink_window_s=settings.shrink_window_s,
            snapshot_window_s=settings.snapshot_window_s,
            warm_up_hours=settings.warm_up_hours,
        ),
        restock=RestockSettings(printer_device_id=settings.restock_printer_device_id),
        clock=clock,
        metrics=metrics,
        write_gate=write_gate,
        shared=leadership is not None,
        active=active,
    )
    await operations.warm_up()
    commands = CommandPublisher(engine=engine, link=link, clock=clock, write_gate=write_gate, active=active)
    operations.add_sender(commands)
    commands.start()
    stack.push_async_callback(commands.stop)
    dispatcher = NotificationDispatcher(
        engine=engine,
        link=link,
        registry=metrics.registry,
        settings=hub_settings.notifications,
        clock=clock,
        write_gate=write_gate,
        secret_box=secret_box,
        active=active,
    )
    operations.add_sender(dispatcher)
    dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    operations.start()
    stack.push_async_callback(operations.stop)
    return operations, commands


def _start_report_schedules(
    settings: HubSettings,
    engine: AsyncEngine,
    stack: AsyncExitStack,
    clock: Callable[[], datetime],
    metrics: HubMetrics,
    write_gate: WriteGate,
    secret_box: SecretBox,
    leadership: Leadership | None,
) -> ScheduleRunner | None:
    """The report schedules' runner (hub.reports.schedules): every worker starts it, the leader runs its passes."""
    if not settings.reports.schedules_enabled:
        return None
    runner = ScheduleRunner(
        engine=engine,
        settings=settings,
        metrics=metrics,
        secret_box=secret_box,
        clock=clock,
        write_gate=write_gate,
        active=leadership if leadership is not None else _always,
    )
    runner.start()
    stack.push_async_callback(runner.stop)
    return runner


def _start_rollouts(
    settings: HubSettings,
    engine: AsyncEngine,
    stack: AsyncExitStack,
    clock: Callable[[], datetime],
    metrics: HubMetrics,
    write_gate: WriteGate,
    leadership: Leadership | None,
    commands: CommandPublisher | None,
) -> RolloutRunner:
    """The rollouts' runner (hub.releases): every worker starts it, the leader runs its passes."""
    runner = RolloutRunner(
        engine=engine,
        poll_s=settings.releases.poll_s,
        metrics=metrics,
        notify_commands=commands.notify if commands is not None else lambda: None,
        clock=clock,
        write_gate=write_gate,
        active=leadership if leadership is not None else _always,
    )
    runner.start()
    stack.push_async_callback(runner.stop)
    return runner


def _always() -> bool:
    """One hub process does the leader's work itself."""
    return True


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate the database, connect to MQTT, start the consumer; undo all of it on shutdown."""
    settings: HubSettings = app.state.settings
    where = redacted(settings.database_url)
    log.info("hub_starting", database=where, broker=settings.mqtt.address, client_id=settings.client_id)
    async with AsyncExitStack() as stack:
        try:
            runtime = await _start(settings, stack, app.state.clock)
        except Exception as err:
            # Kept for serve(): uvicorn reports a failed startup only by exiting.
            error = err if isinstance(err, HubStartupError) else HubStartupError(f"cannot start: {describe_error(err)}")
            app.state.startup_error = error
            if error is err:
                raise
            raise error from err
        app.state.runtime = runtime
        if settings.role != "worker":  # the console's live pages: one poller, started when a page listens
            app.state.live = LiveFeed(sessions=runtime.sessions, grace_s=settings.gateway_offline_grace_s)
            stack.push_async_callback(app.state.live.close)
        # Everything alive now (modules, schemas, the engine, the app) lives as long as the hub. Kept out
        # of the collector's full passes, which otherwise walk all of it again and again while batches are
        # decoded: a third of the decoding time. Cyclic garbage is still collected; unfreeze on the way out.
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        log.info("hub_started", database=where, broker=settings.mqtt.address)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            app.state.runtime = None
            app.state.live = None
            log.info("hub_stopping")
    log.info("hub_stopped")


# What a 422 repeats of the refused input: a client needs to see which value was wrong, not to get a large body
# back (a 33 MB JSON body once came back whole inside its 422).
MAX_ECHOED_CHARS: Final = 120
MAX_ECHOED_JSON_BYTES: Final = 1024
MAX_VALIDATION_ISSUES: Final = 100
MAX_VALIDATION_MESSAGE_CHARS: Final = 2000


def _echoed_input(value: object) -> tuple[bool, JsonValue]:
    """Whether to repeat a refused input, and what of it: long strings are cut, large values left out."""
    if isinstance(value, str):
        return True, value if len(value) <= MAX_ECHOED_CHARS else value[:MAX_ECHOED_CHARS] + "…"
    encoded: JsonValue = jsonable_encoder(value)
    if len(json.dumps(encoded, default=str)) > MAX_ECHOED_JSON_BYTES:
        return False, None
    return True, encoded


def _issue(error: Mapping[str, Any]) -> dict[str, JsonValue]:
    """One pydantic error as a ValidationIssue: its input bounded, its context plain JSON."""
    issue: dict[str, JsonValue] = {
        "type": str(error.get("type", "value_error")),
        "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
    }
    if "input" in error:
        keep, echoed = _echoed_input(error["input"])
        if keep:
            issue["input"] = echoed
    if isinstance(error.get("ctx"), Mapping):
        context = {str(k): v if isinstance(v, int | float | bool | None) else str(v) for k, v in error["ctx"].items()}
        issue["ctx"] = {k: v[:MAX_ECHOED_CHARS] if isinstance(v, str) else v for k, v in context.items()}
    return issue


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A ValidationProblem: each bad value with its input bounded, and a one-line ``message`` naming each."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    issues = [_issue(e) for e in errors[:MAX_VALIDATION_ISSUES]]
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in errors
    )
    if len(errors) > MAX_VALIDATION_ISSUES:
        message = f"{len(errors)} problems, the first {MAX_VALIDATION_ISSUES} listed: {message}"
    if len(message) > MAX_VALIDATION_MESSAGE_CHARS:
        message = message[:MAX_VALIDATION_MESSAGE_CHARS] + "…"
    first = issues[0]["loc"] if issues else None
    log.info("api_request_invalid", method=request.method, path=request.url.path, problems=len(errors), first=first)
    body = ValidationProblem.model_validate({"detail": issues, "message": message})
    return JSONResponse(status_code=422, content=body.model_dump(mode="json", exclude_unset=True))


# How long a client is told to wait before trying again after a 503 of the database.
DATABASE_RETRY_AFTER_S: Final = 5


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with the cause in words when the database cannot answer: unreachable, or no turn at SQLite's write lock
    within the wait allowed (another process holding it, or the hub's own writers). The request did nothing; it
    can be sent again."""
    cause = describe_error(exc)
    log.warning("api_database_unavailable", method=request.method, path=request.url.path, error=cause)
    runtime: HubRuntime | None = request.app.state.runtime
    if runtime is not None:
        runtime.metrics.api_database_unavailable.inc()
    return JSONResponse(
        status_code=503,
        content={"detail": f"the database could not answer ({cause}); nothing was changed, try again"},
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


class HubApp(FastAPI):
    """The hub's FastAPI app: the HTTP edge (hub.api.edge) in front of everything, Starlette's own error
    middleware included, so a 500 carries the security headers too (``add_middleware`` would put it inside)."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack, wrapped in the edge made by create_app."""
        edge: Callable[[ASGIApp], ASGIApp] = self.state.edge
        return edge(super().build_middleware_stack())


# The routers of the API (roles all and api).
_API_MODULES: Final = (
    stores,
    gateways,
    fleet_api,
    events,
    losses,
    refused,
    catalog,
    inventory_api,
    commands_api,
    alerts_api,
    replenishment_api,
    rules_api,
    webhooks_api,
    reports,
    footfall_api,
    health,
    console_overview,
    console_alerts,
    console_live,
    login_pages,
    operators_api,
    snapshots_api,
    console_assets,
    console_language,
    report_schedules_api,
    console_reports,
    console_store,
    console_fleet,
    console_audit,
    fleet_config_api,
    releases_api,
    selftests_api,
    enrolment_api,
    enrol_page,
)


def create_app(settings: HubSettings, *, clock: Callable[[], datetime] = wire.utc_now) -> FastAPI:
    """The hub's app for ``settings``; nothing is connected or created until its lifespan starts.

    ``clock`` is the hub's notion of now for the consumer, the rules and commands: tests that replay a
    past store day pass the day's time; everyone else leaves the wall clock.
    """
    app = HubApp(
        title="Storegate hub",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # The error shapes every operation may answer with, in place of FastAPI's HTTPValidationError (hub.api.edge
        # answers 400 and 413 before any route runs; a database that cannot answer is a 503 anywhere).
        responses={
            400: {"model": Problem, "description": "the Host header is not one this hub answers to"},
            401: {"model": Problem, "description": "no valid credentials: sign in at /login or send an API token"},
            403: {"model": Problem, "description": "the principal's role or store scope does not allow this"},
            413: {"model": Problem, "description": "the request body is too large"},
            422: {"model": ValidationProblem, "description": "a value of the request is not acceptable"},
            503: {"model": Problem, "description": "the hub or its database cannot answer now; try again"},
        },
        openapi_tags=[
            {"name": "stores", "description": "stores with an enrolled gateway, their counts of gateways and events"},
            {"name": "gateways", "description": "gateways (store, gateway): enrolment, presence, stream marks"},
            {"name": "events", "description": "stored events, filtered and paginated"},
            {"name": "data losses", "description": "events gateways reported they can never deliver"},
            {"name": "catalog", "description": "SKUs, store profiles and planograms: CSV import and export"},
            {"name": "reports", "description": "sales, stock, shrink, alert and cold-chain reports: JSON, CSV, PDF"},
            {"name": "inventory", "description": "stock, shelf levels, restock tasks, the ledger, manual movements"},
            {"name": "alerts", "description": "security and environment alerts: list, acknowledge, resolve, history"},
            {"name": "replenishment", "description": "reorder suggestions per store and transfers between near stores"},
            {"name": "rules", "description": "the chain's monitoring rules and each store's overrides, as data"},
            {"name": "notifications", "description": "webhooks that receive alert notifications, and their deliveries"},
            {"name": "operations", "description": "health and metrics of the hub itself"},
            {"name": "dashboard", "description": "the HTML page for people"},
            {"name": "operators", "description": "who am I; operators, API tokens and the audit log (admins)"},
            {"name": "evidence", "description": "camera stills of a store, for ops and admins; every fetch audited"},
        ],
        # Every route passes the gate (hub.auth.guard), the docs included: they are added as routes by install().
        dependencies=[guard.GATE],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    quiet_leaky_library_logs()  # before any request: their DEBUG lines carry webhook URLs
    app.openapi = functools.partial(_openapi_with_json_errors, app)  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.clock = clock
    app.state.runtime = None
    app.state.live = None
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Errors of the database's availability, not of the request (an IntegrityError stays a bug: 500).
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(WriteGateTimeout, _database_unavailable)
    # A worker answers its health and metrics only: the API runs in processes of its own behind a load balancer.
    routers = (health,) if settings.role == "worker" else _API_MODULES
    for module in routers:
        app.include_router(module.router)
    app.state.edge = functools.partial(
        HttpEdge,
        allowed_hosts=allowed_hosts_of(settings.http_allowed_hosts, settings.http_host),
        max_body_bytes=settings.http_max_body_bytes,
        large_body_bytes=settings.http_max_import_body_bytes,
        large_body_paths=[
            *(r.path for r in catalog.router.routes if isinstance(r, APIRoute) and _is_import(r)),
            releases_api.RELEASES_PATH,  # a wheel, up to releases.max_bytes (checked by its route)
        ],
    )
    # Pages, scripts and JSON compressed for clients that accept it (the console's first load is measured over the
    # wire); server-sent events are never compressed (Starlette leaves text/event-stream alone), so they flow at once.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES)
    guard.install(app, settings)
    return app


_PROBLEM_SCHEMA: Final = {"schema": {"$ref": "#/components/schemas/Problem"}}


def _openapi_with_json_errors(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error under application/json: FastAPI files the app-wide error models of a
    page route (``/``, HTML) under text/html, but the errors of every route are JSON; an error a route declares
    by its description alone is a Problem."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if not status.startswith(("4", "5")) or "application/json" in content:
                        continue
                    if response.pop("x-html", False):  # a page's own error page (the sign-in form again)
                        continue
                    # A route's error declared by description alone is a Problem, like every error in words.
                    response["content"] = {"application/json": next(iter(content.values()), _PROBLEM_SCHEMA)}
        app.openapi_schema = spec
    return app.openapi_schema


def _is_import(route: APIRoute) -> bool:
    """A CSV import of the catalog: its body is a whole file, allowed up to http_max_import_body_bytes."""
    return route.path.endswith("/import")


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind host:port before anything else starts, so a taken port fails fast and says why."""
    try:
        return bound_socket(host, port)
    except OSError as err:
        raise HubStartupError(f"cannot listen on {host}:{port}: {(err.strerror or str(err)).lower()}") from err


def _check_tls_files(settings: HubSettings) -> None:
    """Load the TLS certificate and key once before serving, so a bad file fails the start and says which."""
    if settings.http_tls_certfile is None or settings.http_tls_keyfile is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.http_tls_certfile, settings.http_tls_keyfile
        )
    except (OSError, ssl.SSLError) as err:
        raise HubStartupError(
            f"cannot use the TLS certificate {settings.http_tls_certfile} with the key {settings.http_tls_keyfile}: "
            f"{(getattr(err, 'strerror', None) or str(err)).lower()}"
        ) from err


async def serve(settings: HubSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the hub until SIGINT/SIGTERM (handled by uvicorn) or until ``stop`` is set.

    Raises HubStartupError when the port cannot be bound or the app cannot start.
    """
    _check_tls_files(settings)
    sock = _listening_socket(settings.http_host, settings.http_port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # logging is configured once per process by storegate.logs
        log_level=settings.log_level.lower(),
        server_header=False,
        # The console's live streams never end by themselves: at shutdown they are cut after this.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ssl_certfile=settings.http_tls_certfile,
        ssl_keyfile=settings.http_tls_keyfile,
        # uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; the hub believes only the proxies named.
        proxy_headers=bool(settings.http_trusted_proxies),
        forwarded_allow_ips=settings.http_trusted_proxies or None,
    )
    server = uvicorn.Server(config)

    async def stop_when_asked(event: asyncio.Event) -> None:
        await event.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked(stop)) if stop is not None else None
    try:
        scheme = "https" if settings.http_tls_certfile is not None else "http"
        log.info("hub_listening", address=f"{scheme}://{settings.http_host}:{settings.http_port}")
        await server.serve(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits the process when startup fails; turn that into an error
        cause = getattr(app.state, "startup_error", None)
        reason = str(cause) if cause is not None else "the HTTP server did not start (see the log above)"
        raise HubStartupError(reason) from (cause or exc)
    finally:
        sock.close()
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
