"""Health checks of a running hub, each ending in a sentence for people when something is wrong."""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.engine import describe_error, ping, redacted
from hub.db.writegate import WriteGate
from hub.ingest.consumer import Ingestor
from hub.ingest.operations import HubOperations
from hub.ingest.shared import Leadership
from storegate.mqtt import MqttLink

CHECK_TIMEOUT_S: Final = 2.0
# A unit of the consumer takes well under a few seconds even on a Raspberry Pi; a turn at the write lock
# held this long is a writer stuck inside its transaction, and every change through the API waits.
WRITE_TURN_STUCK_S: Final = 60.0

_SOCKET_REASONS: Final[dict[int, str]] = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "connection timed out",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: whether it passed, what it saw, and the problem in words when it failed."""

    ok: bool
    detail: str
    problem: str | None = None


def _socket_reason(err: OSError) -> str:
    if isinstance(err, socket.gaierror):
        return "host name not found"
    if isinstance(err, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    if err.errno is not None and err.errno in _SOCKET_REASONS:
        return _SOCKET_REASONS[err.errno]
    return (err.strerror or str(err) or type(err).__name__).lower()


def _tcp_connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=CHECK_TIMEOUT_S):
        pass


async def tcp_problem(host: str, port: int) -> str | None:
    """Why nothing accepts TCP connections on host:port, or None when something does."""
    try:
        await asyncio.to_thread(_tcp_connect, host, port)
    except OSError as err:
        return _socket_reason(err)
    return None


async def check_database(engine: AsyncEngine, database_url: str, gate: WriteGate) -> CheckResult:
    """Whether ``SELECT 1`` answers within the timeout, and (SQLite) whether writers get their turns."""
    where = redacted(database_url)
    try:
        await asyncio.wait_for(ping(engine), timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        return CheckResult(False, where, f"database unreachable: no answer within {CHECK_TIMEOUT_S:g} s")
    except Exception as err:  # whatever the driver raises, the database is not usable
        return CheckResult(False, where, f"database unreachable: {describe_error(err)}")
    held = gate.held_for()
    if held is not None and held >= WRITE_TURN_STUCK_S:
        return CheckResult(
            False,
            f"{where}; write turn held by {gate.holder}",
            f"the {gate.holder} writer has held the database's write turn for {held:.0f} s and {gate.waiting} "
            "writer(s) wait: changes through the API are answered 503 and events wait at the gateways",
        )
    return CheckResult(True, where)


async def check_mqtt(link: MqttLink | None) -> CheckResult:
    """Whether the hub's MQTT session is up; if not, whether the broker is reachable at all."""
    if link is None:
        return CheckResult(True, "not used: an API process (role api) neither consumes nor publishes")
    address = link.settings.address
    if link.connected:
        return CheckResult(True, f"connected to {address} as {link.client_id}")
    reason = await tcp_problem(link.settings.host, link.settings.port)
    if reason is not None:
        return CheckResult(False, address, f"MQTT broker {address} unreachable: {reason}")
    why = link.last_error or "the MQTT session is not established yet"
    return CheckResult(False, address, f"MQTT broker {address} accepts connections but the hub is not connected: {why}")


def check_consumer(ingestor: Ingestor | None) -> CheckResult:
    """Whether the event consumer runs and can write to the database."""
    if ingestor is None:
        return CheckResult(True, "not run here: an API process (role api); the workers consume")
    if not ingestor.running:
        failure = ingestor.failure
        why = describe_error(failure) if failure is not None else "stopped"
        return CheckResult(False, "not running", f"event consumer is not running: {why}")
    if not ingestor.database_ok:
        return CheckResult(
            False,
            "holding messages",
            f"event consumer cannot write to the database and holds its messages: {ingestor.last_database_error}",
        )
    return CheckResult(True, f"running, {ingestor.units_committed} transactions committed")


def check_leadership(leadership: Leadership) -> CheckResult:
    """N workers: whether this one leads (runs the ticker and the senders), and whether it still tries to."""
    if not leadership.running:
        return CheckResult(False, "stopped", "the leader election stopped: this worker can never take over the timers")
    return CheckResult(True, "leader" if leadership.leading else "follower (another worker leads)")


def check_operations(operations: HubOperations | None) -> CheckResult:
    """Whether events are applied (inventory, rules) and the rules' clock ticks; which rules are skipped."""
    if operations is None:
        return CheckResult(True, "off: events are stored only (operations.enabled = false)")
    if not operations.ticker_running:
        return CheckResult(
            False, "ticker stopped", "the rules ticker is not running: grace periods, shrink and escalations stall"
        )
    if operations.last_tick_error is not None:
        return CheckResult(
            False,
            "ticker failing",
            f"the rules ticker fails ({operations.last_tick_error}): grace periods, shrink and escalations are late",
        )
    if operations.failures:
        return CheckResult(
            False,
            f"{operations.failures} units not applied",
            f"{operations.failures} units of events were stored but not applied to inventory and rules "
            "(a hub bug; their inventory events are listed as unplaced): see the log event operations_apply_failed",
        )
    skipped = operations.engine.rules.problems()
    detail = f"{len(operations.engine.rules.chain.rules)} chain rules, {operations.ticks} ticks"
    if skipped:
        first = skipped[0]
        where = f"store {first.store_id}" if first.store_id else "the chain"
        detail += f"; {len(skipped)} rules not in force as written, e.g. {first.rule_id} of {where}: {first.message}"
    return CheckResult(True, detail)
