"""The hub's FastAPI application and the function that serves it with uvicorn.

``create_app(settings)`` builds the app without side effects; its lifespan migrates the
database, connects to MQTT and starts the consumer, and stops them in reverse order.
``serve(settings)`` runs it on ``settings.http_host:http_port`` until SIGINT/SIGTERM or ``stop``.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Final

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting import alerts_api, rules_api, webhooks_api
from hub.alerting.monitoring import MonitoringSettings
from hub.alerting.notifications import NotificationDispatcher
from hub.alerting.rules_db import seed_default_rules
from hub.api import events, gateways, health, losses, pages, stores
from hub.auth import api as operators_api
from hub.auth import guard
from hub.auth import pages as login_pages
from hub.catalog import api as catalog
from hub.commands.sender import CommandPublisher
from hub.db.checkpoint import WalCheckpointer
from hub.db.engine import create_engine, describe_error, redacted, session_factory, sqlite_path
from hub.db.migrate import upgrade_to_head
from hub.db.writegate import WriteGate, WriteGateTimeout
from hub.errors import HubError
from hub.ingest.consumer import Ingestor, subscriptions
from hub.ingest.operations import HubOperations
from hub.inventory import api as inventory_api
from hub.inventory import replenishment_api
from hub.inventory.apply import RestockSettings
from hub.metrics import HubMetrics
from hub.reports import api as reports
from hub.runtime import HubRuntime
from hub.settings import HubSettings
from storegate import __version__, wire
from storegate.mqtt import MqttLink

log = structlog.get_logger(__name__)

CONSUMER_STOP_TIMEOUT_S: Final = 10.0

DESCRIPTION: Final = """
The Storegate hub stores the events that store gateways publish over MQTT, exactly once,
acknowledges them to the gateways, and tracks each gateway's presence and health.

* `/api/v1/stores`, `/api/v1/gateways`, `/api/v1/events`: what the hub knows, as JSON.
* `/api/v1/data-losses`: events gateways reported they can never deliver; data loss is never silent.
* `/api/v1/catalog/...`: SKUs, store profiles and planograms, with CSV import (row and column errors) and export.
* `/healthz`: the hub's own health (503 with problems in words when degraded).
* `/metrics`: Prometheus metrics, `storegate_hub_*`.
* `/`: a dashboard page for people; `/login` signs in.

Every operation but `/healthz` and the sign-in form needs a principal: an API token
(`Authorization: Bearer sgt_...`, made with `storegate hub tokens create` or `POST /api/v1/tokens`) or a
browser session (changes also send `X-CSRF-Token`). What each role may do: docs/security.md.
"""


class HubStartupError(HubError, RuntimeError):
    """The hub could not start: the database, its migrations, or the HTTP listener failed."""


async def _start(
    settings: HubSettings, stack: AsyncExitStack, clock: Callable[[], datetime] = wire.utc_now
) -> HubRuntime:
    """Create the hub's long-lived objects; ``stack`` undoes each one in reverse order."""
    where = redacted(settings.database_url)
    try:
        await upgrade_to_head(settings.database_url)
    except Exception as err:  # unreachable server, bad path, a database newer than this code: all fatal here
        raise HubStartupError(f"cannot migrate the database {where}: {describe_error(err)}") from err
    database_file = sqlite_path(settings.database_url)
    engine = create_engine(settings.database_url, background_checkpoint=database_file is not None)
    stack.push_async_callback(engine.dispose)
    if database_file is not None:
        checkpointer = WalCheckpointer(path=database_file)
        checkpointer.start()
        stack.push_async_callback(checkpointer.stop)
    metrics = HubMetrics()
    # The hub's writers take turns at SQLite's one write lock instead of racing for it (hub.db.writegate).
    write_gate = WriteGate(serialise=database_file is not None, observe=metrics.observe_write_turn)
    link = MqttLink(
        settings=settings.mqtt,
        client_id=settings.client_id,
        subscriptions=subscriptions(settings.shared_subscription_group),
        persistent_session=True,
    )
    await stack.enter_async_context(link)
    metrics.queue_depth.set_function(lambda: link.queue_depth)
    metrics.mqtt_connected.set_function(lambda: 1 if link.connected else 0)
    operations, commands = await _start_operations(settings, engine, link, stack, clock, metrics, write_gate)
    ingestor = Ingestor(
        link=link,
        engine=engine,
        metrics=metrics,
        max_events_per_transaction=settings.max_events_per_transaction,
        rejected_keep=settings.rejected_messages_keep,
        operations=operations,
        clock=clock,
        write_gate=write_gate,
    )
    ingestor.start()
    stack.push_async_callback(ingestor.stop, timeout=CONSUMER_STOP_TIMEOUT_S)
    return HubRuntime(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        metrics=metrics,
        link=link,
        ingestor=ingestor,
        started_at=wire.utc_now(),
        operations=operations,
        commands=commands,
        write_gate=write_gate,
    )


async def _start_operations(
    hub_settings: HubSettings,
    engine: AsyncEngine,
    link: MqttLink,
    stack: AsyncExitStack,
    clock: Callable[[], datetime],
    metrics: HubMetrics,
    write_gate: WriteGate,
) -> tuple[HubOperations | None, CommandPublisher | None]:
    """Seed the default rules, warm the rules up, start the ticker, the command and notification senders."""
    settings = hub_settings.operations
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
    )
    await operations.warm_up()
    commands = CommandPublisher(engine=engine, link=link, clock=clock, write_gate=write_gate)
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
    )
    operations.add_sender(dispatcher)
    dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    operations.start()
    stack.push_async_callback(operations.stop)
    return operations, commands


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
        # Everything alive now (modules, schemas, the engine, the app) lives as long as the hub. Kept out
        # of the collector's full passes, which otherwise walk all of it again and again while batches are
        # decoded: a third of the decoding time. Cyclic garbage is still collected; unfreeze on the way out.
        gc.freeze()
        log.info("hub_started", database=where, broker=settings.mqtt.address)
        try:
            yield
        finally:
            gc.unfreeze()
            app.state.runtime = None
            log.info("hub_stopping")
    log.info("hub_stopped")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body plus a one-line ``message`` naming each bad parameter."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors), "message": message})


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


def create_app(settings: HubSettings, *, clock: Callable[[], datetime] = wire.utc_now) -> FastAPI:
    """The hub's app for ``settings``; nothing is connected or created until its lifespan starts.

    ``clock`` is the hub's notion of now for the consumer, the rules and commands: tests that replay a
    past store day pass the day's time; everyone else leaves the wall clock.
    """
    app = FastAPI(
        title="Storegate hub",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "stores", "description": "stores that have sent events or presence"},
            {"name": "gateways", "description": "edge gateways: presence, software, devices, stream marks"},
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
        ],
        # Every route passes the gate (hub.auth.guard), the docs included: they are added as routes by install().
        dependencies=[guard.GATE],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.runtime = None
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Errors of the database's availability, not of the request (an IntegrityError stays a bug: 500).
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(WriteGateTimeout, _database_unavailable)
    for module in (
        stores,
        gateways,
        events,
        losses,
        catalog,
        inventory_api,
        alerts_api,
        replenishment_api,
        rules_api,
        webhooks_api,
        reports,
        health,
        pages,
        login_pages,
        operators_api,
    ):
        app.include_router(module.router)
    guard.install(app, settings)
    return app


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind host:port before anything else starts, so a taken port fails fast and says why."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise HubStartupError(f"cannot listen on {host}:{port}: {(err.strerror or str(err)).lower()}") from err
    return sock


async def serve(settings: HubSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the hub until SIGINT/SIGTERM (handled by uvicorn) or until ``stop`` is set.

    Raises HubStartupError when the port cannot be bound or the app cannot start.
    """
    sock = _listening_socket(settings.http_host, settings.http_port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # logging is configured once per process by storegate.logs
        log_level=settings.log_level.lower(),
        server_header=False,
    )
    server = uvicorn.Server(config)

    async def stop_when_asked(event: asyncio.Event) -> None:
        await event.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked(stop)) if stop is not None else None
    try:
        log.info("hub_listening", address=f"http://{settings.http_host}:{settings.http_port}")
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
