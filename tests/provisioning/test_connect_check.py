"""``storegate provision check --connect`` against real brokers: each broken link found, named, and its fix given.

A plain Mosquitto for the network steps and the good path (through a real hub's ingest to its ack); the Mosquitto
running the hub's TLS configuration (client certificates, ACL) for the TLS and identity steps, started once for the
module, its certificate valid for ``localhost`` only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.status import write_status
from hub.app import serve
from hub.db.engine import create_engine
from hub.db.models import StoredEvent
from hub.fleet.commands import add_gateway
from hub.pki.identity import GatewayIdentity
from hub.settings import HubSettings
from launcher.broker import LocalBroker, free_port
from provisioning.connect_check import CHECK_KIND, ConnectReport, Step, check_connection, run_connect_check
from storegate.mqtt import MqttSettings
from tests.edge_agent.test_secrets import USER, auth_broker  # noqa: F401 - the fixture, used by name
from tests.edge_agent.test_status import sample_status
from tests.tls_broker import STORE_A, STORE_B, TlsBroker, running_tls_broker

UNLISTED = GatewayIdentity("store-c", "gw-1")  # issued by the CA after the ACL was written: in no ACL block


def config_of(tmp_path: Path, mqtt: MqttSettings, store: str = "store-0042", gateway: str = "gw-1") -> AgentConfig:
    return AgentConfig.model_validate(
        {"store_id": store, "gateway_id": gateway, "mqtt": mqtt.model_dump(), "outbox": {"path": tmp_path / "o.sq"}}
    )


def failed_at(report: ConnectReport) -> tuple[Step, str, str]:
    last = report.steps[-1]
    assert not last.ok, report
    assert all(step.ok for step in report.steps[:-1]), report
    assert last.fix is not None
    return last.step, last.detail, last.fix


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with running_tls_broker(tmp_path_factory.mktemp("tls"), (STORE_A, STORE_B), broker_hosts=("localhost",)) as tls:
        tls.issue(UNLISTED)
        yield tls


def gateway_mqtt(tls: TlsBroker, gateway: GatewayIdentity, **changes: object) -> MqttSettings:
    return tls.gateway_settings(gateway).model_copy(update={"host": "localhost", **changes})


def test_a_wrong_port_is_named_with_the_broker_s_usual_port(tmp_path: Path) -> None:
    port = free_port()
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, MqttSettings(port=port)), timeout_s=3))
    assert step == Step.TCP
    assert detail == f"nothing listens on 127.0.0.1:{port} (connection refused)"
    assert fix.startswith("is the port right? the hub's broker listens on 8883 with TLS by default")


def test_a_host_name_that_does_not_resolve(tmp_path: Path) -> None:
    mqtt = MqttSettings(host="hub.no-such-store.invalid")
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt), timeout_s=3))
    assert step == Step.DNS
    assert detail.startswith("the host name 'hub.no-such-store.invalid' cannot be found")
    assert "mqtt.host" in fix


def test_a_broker_certificate_the_ca_file_does_not_vouch_for(tmp_path: Path, tls: TlsBroker) -> None:
    # No ca_file: the system's CAs, which never signed the hub's broker.
    mqtt = gateway_mqtt(tls, STORE_A, ca_file=None, cert_file=None, key_file=None)
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt), timeout_s=5))
    assert step == Step.TLS
    assert detail.startswith("the broker's certificate is not signed by the CA in None")
    assert "hub's CA certificate" in fix


def test_a_host_name_the_broker_certificate_does_not_hold(tmp_path: Path, tls: TlsBroker) -> None:
    mqtt = gateway_mqtt(tls, STORE_A, host="127.0.0.1")
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt, "store-a"), timeout_s=5))
    assert step == Step.TLS
    assert detail.startswith("the broker's certificate is not valid for '127.0.0.1'")
    assert "storegate hub pki renew broker --broker-host" in fix


def test_a_plain_port_given_as_tls(tmp_path: Path, mqtt_settings: MqttSettings, tls: TlsBroker) -> None:
    mqtt = gateway_mqtt(tls, STORE_A, host=mqtt_settings.host, port=mqtt_settings.port)
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt, "store-a"), timeout_s=5))
    assert step == Step.TLS
    assert detail.startswith(f"the TLS handshake with {mqtt_settings.host}:{mqtt_settings.port} failed")
    assert "8883" in fix


def test_a_certificate_of_another_ca_is_refused_before_the_network(tmp_path: Path, tls: TlsBroker) -> None:
    with running_tls_broker(tmp_path / "other", (STORE_A,)) as other:  # another hub's CA, never started here
        mqtt = gateway_mqtt(tls, STORE_A, cert_file=other.bundles[STORE_A] / "gateway.crt")
        mqtt = mqtt.model_copy(update={"key_file": other.bundles[STORE_A] / "gateway.key"})
        step, detail, _ = failed_at(check_connection(config_of(tmp_path, mqtt, "store-a"), timeout_s=5))
    assert step == Step.FILES
    assert "is not accepted by the CA in" in detail


def test_an_identity_the_acl_does_not_know_cannot_act_as_the_gateway(tmp_path: Path, tls: TlsBroker) -> None:
    # The certificate is the CA's and in date (the broker lets it in), but no ACL block names it.
    mqtt = gateway_mqtt(tls, UNLISTED)
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt, "store-c"), timeout_s=5))
    assert step == Step.PUBLISH
    assert "store-c/gw-1" in detail
    assert "is the certificate (or user) this gateway's" in fix


def test_another_gateways_certificate_cannot_publish_as_this_one(tmp_path: Path, tls: TlsBroker) -> None:
    mqtt = gateway_mqtt(tls, STORE_B)  # store-b's certificate in store-a's config
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt, "store-a"), timeout_s=5))
    assert step == Step.PUBLISH
    assert "store-a/gw-1" in detail
    assert "store_id and gateway_id in the config right?" in fix


def test_a_wrong_password_is_refused_at_the_login(tmp_path: Path, auth_broker: LocalBroker) -> None:  # noqa: F811
    password = tmp_path / "mqtt-password"
    password.write_text("not the password\n")
    password.chmod(0o600)
    mqtt = MqttSettings(host=auth_broker.host, port=auth_broker.port, username=USER, password_file=password)
    step, detail, fix = failed_at(check_connection(config_of(tmp_path, mqtt), timeout_s=5))
    assert step == Step.MQTT
    assert detail.startswith("the broker refused the gateway: ")
    assert "Not authorized" in detail or "Bad user name or password" in detail
    assert fix == "check mqtt.username and the password (mqtt.password_file); the hub's operator can reset them"
    assert "not the password" not in detail + fix


def test_a_good_gateway_without_a_hub_reaches_the_broker_and_waits_for_the_ack(tmp_path: Path, tls: TlsBroker) -> None:
    report = check_connection(config_of(tmp_path, gateway_mqtt(tls, STORE_A), "store-a"), timeout_s=1)
    assert [result.step for result in report.steps] == list(Step)
    step, detail, fix = failed_at(report)
    assert step == Step.HUB_ACK
    assert detail == "the hub did not acknowledge the check event within 1 s"
    assert "storegate hub gateways list shows store-a/gw-1" in fix


async def test_a_good_gateway_through_to_the_hubs_ack(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    await add_gateway(database_url, "store-0042/gw-1", by="test-operator")
    stop = asyncio.Event()
    hub = asyncio.create_task(
        serve(HubSettings(database_url=database_url, mqtt=mqtt_settings, http_port=free_port()), stop=stop)
    )
    try:
        config = tmp_path / "agent.toml"
        config.write_text(
            f'store_id = "store-0042"\ngateway_id = "gw-1"\n[mqtt]\nhost = "{mqtt_settings.host}"\n'
            f"port = {mqtt_settings.port}\n"
        )
        text, code = await asyncio.to_thread(run_connect_check, config, as_json=False, timeout_s=20)
    finally:
        stop.set()
        await asyncio.wait_for(hub, 20)
    assert code == 0, text
    lines = text.splitlines()
    assert lines[-1] == "all steps passed"
    assert "  ok   hub ack: the hub stored the check event and acknowledged it" in lines
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            kinds = (await conn.execute(select(StoredEvent.kind))).scalars().all()
    finally:
        await engine.dispose()
    assert kinds == [CHECK_KIND]  # the one check event; nothing else (no stock, no sale) came of it


def test_the_check_does_not_take_the_place_of_a_running_agent(tmp_path: Path) -> None:
    config_path = tmp_path / "agent.toml"
    config_path.write_text('store_id = "store-0042"\ngateway_id = "gw-1"\n')
    outbox = load_agent_config(config_path).outbox.path
    with outbox.open("w"):  # this process holds the outbox open, as a running agent does
        write_status(outbox.with_name(outbox.name + ".status.json"), sample_status(pid=os.getpid()))
        text, code = run_connect_check(config_path, as_json=False, timeout_s=1)
    assert code == 2
    assert text.startswith(f"the agent runs (pid {os.getpid()}) with this config: stop it first")
