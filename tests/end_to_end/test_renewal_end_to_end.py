"""A gateway renews its certificate while events flow, and a revoked gateway's renewal is refused.

Real parts: Mosquitto running the hub's TLS configuration (tests/tls_broker.py), the hub with its gateway listener
on uvicorn over TLS, the agent in-process with its durable outbox, the openssl command making the new key, SQLite.
The proof that nothing is lost or repeated: numbered events recorded before, during and after the renewal are each
stored at the hub exactly once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import select

from edge_agent.agent import EdgeAgent
from edge_agent.renewal import finish_interrupted_renewal, renewal_due
from hub.db.models import Gateway, StoredEvent
from hub.fleet import registry
from launcher.broker import free_port
from storegate import wire
from storegate.csr import certificate_dates
from storegate.private_files import is_private
from tests.conftest import eventually
from tests.edge_agent.conftest import running, temperature
from tests.hub.conftest import running_hub
from tests.hub.snapshots.test_gateway_snapshots import agent_config, enrol, hub_settings_for
from tests.tls_broker import HOST, STORE_A, running_tls_broker

EVENTS = 120


async def test_the_agent_renews_mid_stream_and_the_hub_stores_each_event_once_then_a_revoked_one_is_refused(
    tmp_path: Path,
) -> None:
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    with running_tls_broker(tmp_path, (STORE_A,)) as tls:
        port = free_port(HOST)
        async with running_hub(hub_settings_for(tls, sqlite_url, tmp_path, port)) as hub:
            await enrol(hub, STORE_A)
            config = agent_config(tls, tmp_path, STORE_A, port)
            assert config.mqtt.cert_file is not None
            cert_file = config.mqtt.cert_file
            old_serial = tls.ca.records()[-1].serial
            agent = EdgeAgent(config=config, port_lister=None)

            async def stored() -> Counter[int]:
                async with hub.runtime.sessions() as session:
                    seqs = await session.scalars(select(StoredEvent.seq).where(StoredEvent.store_id == "store-a"))
                    return Counter(seqs)

            async with running(agent):

                async def connected() -> bool:
                    return agent.stats.connected

                await eventually(connected, timeout=20, what="the agent connected with its first certificate")
                assert agent.renewer is not None
                not_before, not_after = certificate_dates(cert_file.read_bytes())
                assert not renewal_due(not_before, not_after, wire.utc_now(), 1 / 3)  # fresh: the agent waits
                for n in range(EVENTS // 2):
                    await agent.record(temperature(n))

                async def some_stored() -> bool:
                    return len(await stored()) >= 10

                await eventually(some_stored, timeout=20, what="the first events at the hub")
                assert await agent.renewer.renew() == "renewed"  # mid-stream: events still in flight
                for n in range(EVENTS // 2, EVENTS):
                    await agent.record(temperature(n))

                async def all_stored() -> bool:
                    return len(await stored()) == EVENTS

                await eventually(all_stored, timeout=30, what="every event at the hub")
                counts = await stored()
                assert sorted(counts) == list(range(1, EVENTS + 1))
                assert set(counts.values()) == {1}, "an event stored twice"

                # The agent reconnected with the new pair: a new certificate of the CA, the key private, and the
                # hub's registry knows when it ends.
                new = [r for r in tls.ca.records() if r.name == STORE_A.common_name]
                assert len(new) == 2
                assert new[-1].serial != old_serial
                assert is_private(config.mqtt.key_file)  # type: ignore[arg-type]
                assert agent.stats.reconnects >= 1
                await eventually(connected, timeout=20, what="the agent connected again with its new certificate")
                async with hub.runtime.sessions() as session:
                    row = await session.get(Gateway, ("store-a", "gw-1"))
                    assert row is not None
                    assert row.certificate_expires_at == new[-1].not_after
                assert finish_interrupted_renewal(cert_file, config.mqtt.key_file) is None  # type: ignore[arg-type]
                metric = agent.registry.get_sample_value
                assert metric("storegate_agent_certificate_renewals_total") == 1
                assert metric("storegate_agent_certificate_expiry_timestamp_seconds") == new[-1].not_after.timestamp()

                # Revoked: the renewal is refused, and the agent says so in its health report.
                async with hub.runtime.sessions() as session:
                    await registry.revoke(session, "store-a", "gw-1", by="tests", now=wire.utc_now())
                    await session.commit()
                assert await agent.renewer.renew() == "refused"
                problems = agent.health().problems
                assert any("refused to renew" in p and "revoked" in p for p in problems), problems
                assert metric("storegate_agent_certificate_renewals_refused_total") == 1
