"""The parts of N hub workers one at a time: roles, settings refused, store locks, leader failover, state rows."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import hub.domain.rules as rules_module
from hub.alerting import shared_states
from hub.alerting.monitoring import MonitoringEngine, UnitEvaluation
from hub.app import create_app, lifespan
from hub.auth.guard import app_routes
from hub.db.engine import create_engine, session_factory
from hub.db.store_locks import lock_order
from hub.domain.excursions import ExcursionState
from hub.ingest.classify import BatchMessage
from hub.ingest.eventlog import StreamMark
from hub.ingest.operations import HubOperations
from hub.ingest.ordering import in_order
from hub.ingest.shared import Leadership, StoreLocks
from hub.ingest.unit import ORDER_WAIT_S, hold_gapped, store_messages
from hub.metrics import HubMetrics
from hub.settings import load_hub_settings
from storegate import wire
from storegate.configfile import ConfigError
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import running_hub

# --------------------------------------------------------------------------- settings and roles


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (
            {"shared_subscription_group": "hubs", "mqtt": {"protocol": "5"}},
            "shared_subscription_group needs PostgreSQL",
        ),
        ({"role": "worker"}, "role = 'worker' needs PostgreSQL"),
        ({"role": "api"}, "role = 'api' needs PostgreSQL"),
        (
            {
                "shared_subscription_group": "hubs",
                "database_url": "postgresql+asyncpg://h/db",
                "mqtt": {"protocol": "3.1.1"},
            },
            "shared_subscription_group needs mqtt.protocol = '5'",
        ),
    ],
)
def test_combinations_that_cannot_work_are_refused_in_words(
    overrides: dict[str, object], refusal: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_hub_settings(None, secrets_dir=tmp_path, **overrides)
    assert refusal in str(caught.value)


def test_all_is_the_default_role_and_not_shared(tmp_path: Path) -> None:
    settings = load_hub_settings(None, secrets_dir=tmp_path)
    assert settings.role == "all"
    assert not settings.shared


async def test_an_api_process_serves_without_a_broker(postgres_url: str, tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, and an API process must not need it.
    settings = load_hub_settings(
        None,
        database_url=postgres_url,
        role="api",
        secrets_dir=tmp_path / "secrets",
        mqtt=MqttSettings(host="127.0.0.1", port=9),
    )
    async with running_hub(settings) as hub:
        assert hub.runtime.consumer is None
        assert hub.runtime.mqtt is None
        assert hub.runtime.operations is None
        health = await hub.client.get("/healthz")
        assert health.status_code == 200, health.text
        assert "role api" in health.json()["checks"]["consumer"]["detail"]
        assert (await hub.client.get("/api/v1/stores")).status_code == 200


async def test_a_worker_serves_health_and_metrics_only(
    postgres_url: str, mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    settings = load_hub_settings(
        None,
        database_url=postgres_url,
        role="worker",
        shared_subscription_group="hubs",
        client_id=f"worker-{uuid.uuid4().hex[:6]}",
        secrets_dir=tmp_path / "secrets",
        mqtt=mqtt_settings.model_copy(update={"protocol": "5"}),
    )
    app = create_app(settings)
    paths = {path for _, path in app_routes(app)}
    assert {"/healthz", "/metrics"} <= paths
    assert not any(path.startswith("/api/") or path == "/" for path in paths)
    async with lifespan(app):
        runtime = app.state.runtime
        assert runtime.leadership is not None
        await eventually(lambda: _leads(runtime.leadership), timeout=10, what="the only worker to lead")
        assert runtime.metrics.leader._value.get() == 1


async def _leads(leadership: Leadership) -> bool:
    return leadership.leading


# --------------------------------------------------------------------------- locks and the leader


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


async def test_a_unit_waits_for_the_store_another_unit_holds_and_not_for_others(pg_engine: AsyncEngine) -> None:
    metrics = HubMetrics()
    locks = StoreLocks(metrics=metrics)
    sessions = session_factory(pg_engine)
    async with sessions() as first, first.begin():
        await locks(first, ["store-0001", "store-0002"])

        async def second_unit(stores: list[str]) -> None:
            async with sessions() as second, second.begin():
                await locks(second, stores)

        await asyncio.wait_for(second_unit(["store-0003"]), 5)  # another store: no wait
        blocked = asyncio.create_task(second_unit(["store-0002", "store-0003"]))
        done, _ = await asyncio.wait({blocked}, timeout=0.5)  # bounded: it must still be waiting then
        assert not done
    await asyncio.wait_for(blocked, 5)  # the first unit committed: its locks went with it
    assert metrics.store_lock_wait_seconds.labels(holder="unit")._sum.get() >= 0.4


def test_lock_order_is_sorted_and_each_store_once() -> None:
    keys = lock_order(["b", "a", "b", "c"])
    assert keys == sorted(keys)
    assert len(keys) == 3


async def test_when_the_leader_dies_another_worker_takes_over(pg_engine: AsyncEngine, postgres_url: str) -> None:
    other_engine = create_engine(postgres_url)
    first = Leadership(engine=pg_engine, metrics=HubMetrics(), retry_s=0.1)
    second = Leadership(engine=other_engine, metrics=HubMetrics(), retry_s=0.1)
    try:
        first.start()
        await eventually(lambda: _leads(first), timeout=5, what="the first to lead")
        second.start()
        await asyncio.sleep(0.3)  # a few of its tries: the lock is taken, so it must not lead
        assert not second.leading
        # The leader's connection dies as with a killed process: PostgreSQL ends its session.
        async with pg_engine.connect() as admin:
            await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid <> pg_backend_pid()"
                )
            )
        await eventually(lambda: _leads(second), timeout=5, what="the second to take over")
        await eventually(lambda: _not(first), timeout=5, what="the first to step down")
    finally:
        await first.stop()
        await second.stop()
        await other_engine.dispose()


async def _not(leadership: Leadership) -> bool:
    return not leadership.leading


# --------------------------------------------------------------------------- rule states in rows


def test_a_state_row_round_trips_the_rules_own_values() -> None:
    at = datetime(2025, 3, 1, 12, tzinfo=UTC)
    state = shared_states.StoreState(
        rules={
            "freezers": {"freezer-1": ExcursionState()},
            "sweeps": {"aisle-1/slot-1": (rules_module._Pick(at=at, items=3, event_id="e-1"),)},
            "x": {"at": at, "value": Decimal("1.5")},
        },
        waiting={("store-0001", "A"): ()},
        snapshots=[(at, "snap-1", "cam-1"), (at, "snap-2", None)],
        latest=(at, at + timedelta(seconds=1)),
    )
    assert shared_states.decode(shared_states.encode(state)) == state
    # A row written before snapshots named their camera: its (at, ref) pairs read as of no known camera.
    older = pickle.dumps((state.rules, state.waiting, [(at, "snap-1")], state.latest))
    assert shared_states.decode(older).snapshots == [(at, "snap-1", None)]


def test_a_row_that_would_run_code_is_refused() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("true",))

    with pytest.raises(shared_states.RuleStateDecodeError, match="may not hold"):
        shared_states.decode(pickle.dumps(({"r": Evil()}, {}, [], None)))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("hub.domain.rules", "fnmatch.os.system"),  # a dotted path through a module the rules import
        ("hub.domain.rules", "load_rule_set"),  # a function of hub.domain, not a state's class
        ("hub.domain.rules", "TypeAdapter"),  # a class hub.domain imports but does not define
        ("hub.domain.rules", "__builtins__"),
    ],
)
def test_a_row_may_not_reach_past_the_domain_classes(module: str, name: str) -> None:
    forged = b"\x80\x04" + b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)])
    forged += name.encode() + b"\x93."  # SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL, STOP
    with pytest.raises(shared_states.RuleStateDecodeError, match="may not hold"):
        shared_states.decode(forged)


async def test_a_worker_reads_a_store_again_only_when_another_moved_its_version(pg_engine: AsyncEngine) -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    mine, theirs = MonitoringEngine(shared=True), MonitoringEngine(shared=True)
    sessions = session_factory(pg_engine)
    evaluation = UnitEvaluation(states={"store-0001": {"rule": "theirs"}})
    async with sessions() as session, session.begin():
        await theirs.save_shared(session, evaluation, ["store-0001"], now=now)
    theirs.adopt(evaluation)
    async with sessions() as session:
        assert await mine.load_shared(session, ["store-0001", "store-0002"]) == 1
        assert mine._states["store-0001"] == {"rule": "theirs"}
        assert await mine.load_shared(session, ["store-0001"]) == 0  # same version: the copy is kept
        assert await theirs.load_shared(session, ["store-0001"]) == 0  # its own write


# --------------------------------------------------------------------------- order


def _event(seq: int, stream: uuid.UUID) -> wire.Event:
    return wire.Event(
        event_id=uuid.uuid4(),
        store_id="store-0001",
        gateway_id="gw-1",
        stream=stream,
        seq=seq,
        device_id="dev-1",
        kind="scan.sale",
        ts=datetime(2025, 3, 1, 12, tzinfo=UTC),
        payload={"code": "A", "symbology": "code128", "mode": "checkout", "quantity": 1},
    )


async def test_events_above_a_gap_are_held(pg_engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    later = [_event(seq, stream) for seq in (6, 7)]
    key = ("store-0001", "gw-1", stream)
    async with session_factory(pg_engine)() as session:
        # Seqs 1-5 are with another worker: the mark stays at 0, 6 and 7 wait for them.
        held = await in_order(session, later, {}, {key: StreamMark(through=0, gaps=[(1, 5)])})
        assert held.events == []
        assert held.held == 2
        # Nothing above the mark before: the unit's own events, all of them, in seq order.
        own = await in_order(session, later[::-1], {}, {key: StreamMark(through=7, gaps=[])})
        assert [e.seq for e in own.events] == [6, 7]
        assert own.held == 0


def test_storegate_hub_role_worker_on_sqlite_exits_2_and_says_why(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "hub", "--role", "worker", "--database-url", database],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "role = 'worker' needs PostgreSQL" in result.stderr
    assert not (tmp_path / "hub.sqlite3").exists()  # refused before anything was made


def _batch_of(seqs: range, stream: uuid.UUID, *, received_at: datetime) -> BatchMessage:
    events = [_event(seq, stream) for seq in seqs]
    batch = wire.EventBatch(store_id="store-0001", gateway_id="gw-1", sent_at=received_at, events=events)
    return BatchMessage(batch, received_at)


def test_a_batch_above_a_gap_waits_for_it_and_no_longer_than_order_wait() -> None:
    stream = uuid.uuid4()
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    key = ("store-0001", "gw-1", str(stream))
    first, second, third = (_batch_of(range(n, n + 8), stream, received_at=now) for n in (9, 17, 25))
    # The stream is stored through 8: 9-16, 17-24 and 25-32 follow on in this unit; 41-48 comes after a gap.
    later = _batch_of(range(41, 49), stream, received_at=now)
    kept, held = hold_gapped([later, third, second, first], {key: (8, 8)}, wall=now + timedelta(seconds=0.1))
    assert kept == [third, second, first]
    assert held == [later]
    # 17-24 is with another worker: 25-32 waits for it.
    kept, held = hold_gapped([third], {key: (16, 16)}, wall=now)
    assert held == [third]
    # No longer than ORDER_WAIT_S after its receipt: a gap nobody fills must not hold the stream.
    kept, held = hold_gapped([third], {key: (16, 16)}, wall=now + timedelta(seconds=ORDER_WAIT_S))
    assert kept == [third]
    assert held == []


async def test_one_hub_process_keeps_its_states_in_memory_only(pg_engine: AsyncEngine) -> None:
    operations = HubOperations(engine=pg_engine)  # no shared group: today's path
    stream = uuid.uuid4()
    batch = _batch_of(range(1, 4), stream, received_at=wire.utc_now())
    async with operations.unit(), session_factory(pg_engine)() as session, session.begin():
        result = await store_messages(
            session, [batch], now=wire.utc_now(), rejected_keep=100, operations=operations, accept_unknown_gateways=True
        )
    assert result.stored == 3
    async with pg_engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM rule_states"))).scalar_one() == 0
