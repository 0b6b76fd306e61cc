"""Issue 14's finding, replayed against the broker the hub configures: a forged ack deletes nothing.

On the old anonymous broker an ack with ``through_seq=50`` from any client made a real agent delete 50
events no hub had stored. Here a real agent connects with its own certificate, and the forger holds a
valid certificate too, another gateway's. The broker refuses the forgery; the hub's genuine ack,
published after it, is the positive control that arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_agent.agent import EdgeAgent
from hub.pki.identity import GatewayIdentity
from storegate import wire
from tests.conftest import eventually
from tests.edge_agent.conftest import GATEWAY, STORE, make_config, running, temperature
from tests.tls_broker import STORE_B, Client, running_tls_broker

AGENT = GatewayIdentity(STORE, GATEWAY)
EVENTS = 60


async def until(condition: Callable[[], object], what: str) -> None:
    async def probe() -> object:
        return condition()

    await eventually(probe, what=what, timeout=20)


def ack(stream: object, through_seq: int) -> bytes:
    return wire.encode(
        wire.Ack(
            store_id=STORE,
            gateway_id=GATEWAY,
            stream=stream,
            through_seq=through_seq,
            stored=through_seq,
            duplicates=0,
            ts=wire.utc_now(),
        )
    )


def seqs(messages: list[bytes]) -> set[int]:
    return {event.seq for payload in messages for event in wire.decode(wire.EventBatch, payload).events}


async def test_a_forged_ack_from_another_gateways_certificate_deletes_nothing(tmp_path: Path) -> None:
    with running_tls_broker(tmp_path / "broker", (AGENT, STORE_B)) as tls:
        agent = EdgeAgent(config=make_config(tmp_path, tls.gateway_settings(AGENT)))
        events, ack_topic = (
            wire.topic(STORE, GATEWAY, wire.Channel.EVENTS),
            wire.topic(STORE, GATEWAY, wire.Channel.ACK),
        )
        with Client(tls.hub_settings()) as hub, Client(tls.gateway_settings(STORE_B)) as forger:
            hub.subscribe(events)
            async with running(agent):
                await until(lambda: agent.stats.connected, "the agent connected over TLS with its certificate")
                for n in range(EVENTS):
                    await agent.record(temperature(n))
                # Until the hub first answers, the agent sends one probe batch of 50: seqs 1 to 50.
                await until(lambda: seqs(hub.messages(events)) >= set(range(1, 51)), "the first 50 events at the hub")
                assert agent.stream is not None
                assert agent.stats.depth == EVENTS
                forger.publish(ack_topic, ack(agent.stream, 50))  # the broker has answered it before the hub acks
                hub.publish(ack_topic, ack(agent.stream, 3))
                await until(lambda: agent.stats.last_ack_seq == 3, "the hub's genuine ack through 3")
                assert agent.stats.acked == 3
                assert agent.stats.depth == EVENTS - 3
