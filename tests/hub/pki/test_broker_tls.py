"""The broker the hub configures, attacked: a real Mosquitto on the files hub.pki writes, real TLS.

Every "not delivered" is proved with a positive control: something allowed is sent after the forbidden
message on the same path and awaited; only then is the forbidden one checked for.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import ssl

from cryptography import x509

from hub.pki.authority import CertificateAuthority
from hub.pki.broker import MAX_PACKET_SIZE, sync_broker
from hub.pki.identity import GatewayIdentity
from hub.pki.settings import BrokerSettings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until
from tests.tls_broker import STORE_A, STORE_B, Client, TlsBroker

SHARED = "$share/hubs/"


def t(gateway: GatewayIdentity, channel: wire.Channel) -> str:
    return wire.topic(gateway.store_id, gateway.gateway_id, channel)


def config_topic(gateway: GatewayIdentity) -> str:
    return f"{wire.TOPIC_ROOT}/{gateway.store_id}/{gateway.gateway_id}/config"


def hub_subscriptions() -> list[str]:
    """What the hub consumes, through a shared subscription as a scaled-out hub does."""
    return [
        SHARED + wire.subscription(channel)
        for channel in (
            wire.Channel.EVENTS,
            wire.Channel.STATUS,
            wire.Channel.HEALTH,
            wire.Channel.COMMAND_RESULTS,
        )
    ]


def test_the_hub_certificate_reads_every_gateway_and_writes_acks_and_commands(tls_broker: TlsBroker) -> None:
    with (
        Client(tls_broker.hub_settings(), client_id="storegate-hub") as hub,
        Client(tls_broker.gateway_settings(STORE_A)) as a,
    ):
        assert hub.connected
        assert a.connected
        assert hub.subscribe(*hub_subscriptions()) == [1, 1, 1, 1]
        a.subscribe(t(STORE_A, wire.Channel.ACK), t(STORE_A, wire.Channel.COMMANDS), config_topic(STORE_A))
        for channel in (wire.Channel.EVENTS, wire.Channel.STATUS, wire.Channel.HEALTH, wire.Channel.COMMAND_RESULTS):
            a.publish(t(STORE_A, channel), b"from a")
            hub.wait_for(t(STORE_A, channel), b"from a")
        hub.publish(t(STORE_A, wire.Channel.ACK), b"ack")
        hub.publish(t(STORE_A, wire.Channel.COMMANDS), b"command")
        hub.publish(config_topic(STORE_A), b"config")
        a.wait_for(t(STORE_A, wire.Channel.ACK), b"ack")
        a.wait_for(t(STORE_A, wire.Channel.COMMANDS), b"command")
        a.wait_for(config_topic(STORE_A), b"config")


def test_a_gateway_cannot_publish_into_another_stores_topics(tls_broker: TlsBroker) -> None:
    with Client(tls_broker.hub_settings()) as hub, Client(tls_broker.gateway_settings(STORE_A)) as a:
        hub.subscribe(*hub_subscriptions())
        ghost = GatewayIdentity("store-z", "gw-9")
        a.publish(t(STORE_B, wire.Channel.EVENTS), b"forged camera.tamper")
        a.publish(t(STORE_B, wire.Channel.STATUS), b"forged online", retain=True)
        a.publish(t(ghost, wire.Channel.STATUS), b"ghost online", retain=True)
        a.publish(t(STORE_B, wire.Channel.HEALTH), b"forged health")
        a.publish(t(STORE_B, wire.Channel.COMMAND_RESULTS), b"forged result")
        a.publish(t(STORE_A, wire.Channel.EVENTS), b"control")  # the positive control, after the forgeries
        hub.wait_for(t(STORE_A, wire.Channel.EVENTS), b"control")
        assert hub.messages() == [b"control"]
    # A hub that subscribes later finds no forged retained status (no ghost gateway online).
    with Client(tls_broker.hub_settings()) as late, Client(tls_broker.gateway_settings(STORE_B)) as b:
        late.subscribe(wire.subscription(wire.Channel.STATUS))
        b.publish(t(STORE_B, wire.Channel.STATUS), b"real b", retain=True)
        late.wait_for(t(STORE_B, wire.Channel.STATUS), b"real b")
        assert late.messages() == [b"real b"]


def test_a_gateway_cannot_publish_acks_commands_config_or_alerts(tls_broker: TlsBroker) -> None:
    alerts = "storegate/alerts/store-b/critical"
    with (
        Client(tls_broker.hub_settings()) as hub,
        Client(tls_broker.gateway_settings(STORE_A)) as a,
        Client(tls_broker.gateway_settings(STORE_B)) as b,
    ):
        b_topics = [t(STORE_B, wire.Channel.ACK), t(STORE_B, wire.Channel.COMMANDS), config_topic(STORE_B)]
        b.subscribe(*b_topics)
        a.subscribe(t(STORE_A, wire.Channel.ACK), t(STORE_A, wire.Channel.COMMANDS))
        hub.subscribe(alerts)
        forged = b'{"through_seq": 50}'
        for topic in [*b_topics, t(STORE_A, wire.Channel.ACK), t(STORE_A, wire.Channel.COMMANDS), alerts]:
            a.publish(topic, forged)
        for topic in [*b_topics, alerts]:  # the controls: the hub may
            hub.publish(topic, b"genuine")
        hub.publish(t(STORE_A, wire.Channel.ACK), b"genuine")
        for topic in b_topics:
            b.wait_for(topic, b"genuine")
        hub.wait_for(alerts, b"genuine")
        a.wait_for(t(STORE_A, wire.Channel.ACK), b"genuine")
        assert forged not in b.messages() + hub.messages() + a.messages()


def test_a_gateway_cannot_read_another_gateways_commands_or_events(tls_broker: TlsBroker) -> None:
    with (
        Client(tls_broker.hub_settings()) as hub,
        Client(tls_broker.gateway_settings(STORE_A)) as a,
        Client(tls_broker.gateway_settings(STORE_B)) as b,
    ):
        # Mosquitto 2.0 grants the SUBACK and filters at delivery: what matters is what arrives.
        a.subscribe(t(STORE_B, wire.Channel.COMMANDS), "storegate/v1/#", "#", SHARED + "storegate/v1/+/+/events")
        hub.publish(t(STORE_B, wire.Channel.COMMANDS), b"b's command")
        b.publish(t(STORE_B, wire.Channel.EVENTS), b"b's events")
        hub.publish(t(STORE_A, wire.Channel.COMMANDS), b"a's command")  # the control
        a.wait_for(t(STORE_A, wire.Channel.COMMANDS), b"a's command")
        assert set(a.messages()) == {b"a's command"}


def test_anonymous_plain_and_foreign_ca_clients_cannot_connect(tls_broker: TlsBroker) -> None:
    a = tls_broker.gateway_settings(STORE_A)
    foreign = CertificateAuthority.create(tls_broker.workdir / "foreign-ca")
    # A rogue CA issues certificates with the very names the broker trusts.
    foreign.issue_gateway(STORE_A).write(tls_broker.workdir / "rogue-a", stem="gateway")
    rogue_hub = foreign.issue_hub("storegate-hub")
    rogue_hub.write(tls_broker.workdir / "rogue-hub", stem="hub")
    rogue = tls_broker.workdir / "rogue-a"
    attempts = {
        "anonymous over TLS": Client(a.model_copy(update={"cert_file": None, "key_file": None})),
        "plain MQTT on the TLS port": Client(a, tls=False),
        "foreign CA, gateway's name": Client(
            a.model_copy(update={"cert_file": rogue / "gateway.crt", "key_file": rogue / "gateway.key"})
        ),
        "foreign CA, hub's name": Client(
            a.model_copy(
                update={
                    "cert_file": tls_broker.workdir / "rogue-hub" / "hub.crt",
                    "key_file": tls_broker.workdir / "rogue-hub" / "hub.key",
                }
            )
        ),
        "broker's own server certificate": Client(
            a.model_copy(
                update={"cert_file": tls_broker.ca.broker_cert_path, "key_file": tls_broker.ca.broker_key_path}
            )
        ),
    }
    for what, attempt in attempts.items():
        with attempt:
            assert not attempt.accepted.is_set(), what
    with Client(a) as control:
        assert control.connected


def test_a_revoked_certificate_is_refused_once_the_broker_reloads(tls_broker: TlsBroker) -> None:
    tls_broker.ca.revoke_gateway(STORE_B)
    tls_broker.rewrite()
    acl = tls_broker.files.acl.read_text()
    assert f"user {STORE_B.common_name}\n" not in acl
    assert f"user {STORE_A.common_name}\n" in acl
    revoked = tls_broker.gateway_settings(STORE_B)
    assert not _refused(revoked)  # the broker has not read the new files yet: the reload is what applies them
    tls_broker.reload()
    wait_until(lambda: _refused(revoked), what="the revoked certificate refused after SIGHUP")
    with Client(tls_broker.gateway_settings(STORE_A)) as a:  # the control: the other gateway still gets in
        assert a.connected


def test_a_revoked_gateways_open_connection_loses_its_rights_at_the_reload(tls_broker: TlsBroker) -> None:
    newcomer = GatewayIdentity("store-c", "gw-1")
    with Client(tls_broker.hub_settings()) as hub, Client(tls_broker.gateway_settings(STORE_B)) as open_b:
        hub.subscribe(*hub_subscriptions())
        tls_broker.ca.revoke_gateway(STORE_B)
        tls_broker.issue(newcomer)
        tls_broker.rewrite()
        with Client(tls_broker.gateway_settings(newcomer)) as c:
            tls_broker.reload()

            # The newcomer's events pass once the broker has reread the ACL (no other B may connect meanwhile:
            # the broker would close open_b's connection for the new one with its client id).
            def newcomer_heard() -> bool:
                c.publish(t(newcomer, wire.Channel.EVENTS), b"newcomer")
                return b"newcomer" in hub.messages()

            wait_until(newcomer_heard, what="the reload applied (the new gateway's events pass)")
            assert open_b.connected  # TLS is not renegotiated: the ACL is what stops it now
            open_b.publish(t(STORE_B, wire.Channel.EVENTS), b"from revoked b")
            c.publish(t(newcomer, wire.Channel.EVENTS), b"control")  # after b's, on the hub's queue
            hub.wait_for(t(newcomer, wire.Channel.EVENTS), b"control")
        assert b"from revoked b" not in hub.messages()


def _refused(settings: MqttSettings) -> bool:
    with Client(settings) as attempt:
        return not attempt.accepted.is_set()


def test_a_reenrolled_gateway_gets_in_while_its_revoked_certificate_stays_out(tls_broker: TlsBroker) -> None:
    old = tls_broker.bundles[STORE_B]
    kept = tls_broker.workdir / "old-b"
    shutil.copytree(old, kept)
    tls_broker.ca.revoke_gateway(STORE_B)
    tls_broker.issue(STORE_B)  # the replacement gateway, same name
    tls_broker.rewrite()
    tls_broker.reload()
    stale = tls_broker.gateway_settings(STORE_B).model_copy(
        update={"cert_file": kept / "gateway.crt", "key_file": kept / "gateway.key"}
    )
    wait_until(lambda: _refused(stale), what="the old certificate refused")
    with Client(tls_broker.gateway_settings(STORE_B)) as renewed:
        assert renewed.connected


def test_a_gateway_cannot_take_over_the_hubs_session_by_its_client_id(tls_broker: TlsBroker) -> None:
    with Client(tls_broker.hub_settings(), client_id="storegate-hub") as hub:
        hub.subscribe(*hub_subscriptions())
        with Client(tls_broker.gateway_settings(STORE_A), client_id="storegate-hub") as a:
            assert a.connected
            a.publish(t(STORE_A, wire.Channel.EVENTS), b"control")
            hub.wait_for(t(STORE_A, wire.Channel.EVENTS), b"control")
            assert hub.connected  # the broker named a "store-a/gw-1", so the hub was not kicked off


def test_the_largest_batch_passes_and_an_oversized_message_ends_the_sender(tls_broker: TlsBroker) -> None:
    largest = b"x" * wire.MAX_MESSAGE_BYTES
    with Client(tls_broker.hub_settings()) as hub:
        hub.subscribe(*hub_subscriptions())
        with Client(tls_broker.gateway_settings(STORE_A)) as a:
            a.publish(t(STORE_A, wire.Channel.EVENTS), largest)
            hub.wait_for(t(STORE_A, wire.Channel.EVENTS), largest)
        for size in (MAX_PACKET_SIZE + 1, 64 * 1024 * 1024):
            with Client(tls_broker.gateway_settings(STORE_A)) as a:
                a.publish_nowait(t(STORE_A, wire.Channel.EVENTS), b"y" * size)
                wait_until(a.ended.is_set, timeout=20, what=f"the broker dropping a {size}-byte message's sender")
        with Client(tls_broker.gateway_settings(STORE_A)) as a:
            a.publish(t(STORE_A, wire.Channel.EVENTS), b"control")
            hub.wait_for(t(STORE_A, wire.Channel.EVENTS), b"control")
        assert [len(m) for m in hub.messages()] == [len(largest), len(b"control")]


def served_serial(tls: TlsBroker) -> int:
    """The serial of the certificate the broker presents in a handshake (with a valid client certificate)."""
    settings = tls.gateway_settings(STORE_A)
    context = ssl.create_default_context(cafile=str(settings.ca_file))
    context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    with (
        socket.create_connection((settings.host, settings.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=settings.host) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_broker_certificate_is_served_after_a_reload(tls_broker: TlsBroker) -> None:
    before = served_serial(tls_broker)
    record = tls_broker.ca.renew_broker(["127.0.0.1", "broker.example"])
    tls_broker.rewrite()
    assert served_serial(tls_broker) == before  # not before the reload
    tls_broker.reload()
    wait_until(lambda: served_serial(tls_broker) == record.serial, what="the new certificate served")
    with Client(tls_broker.gateway_settings(STORE_A)) as a:
        assert a.connected


def test_sync_broker_rewrites_the_files_and_reloads_the_broker_from_its_pid_file(tls_broker: TlsBroker) -> None:
    """The registry's path: add a gateway, revoke another, one call, and the running broker follows."""
    pid_file = tls_broker.workdir / "mosquitto.pid"
    pid_file.write_text(f"{tls_broker.broker.process.pid}\n")
    settings = BrokerSettings(
        files_dir=tls_broker.files.directory,
        port=tls_broker.port,
        bind_address="127.0.0.1",
        persistence_dir=None,
        run_as=getpass.getuser(),
        pid_file=pid_file,
    )
    newcomer = GatewayIdentity("store-c", "gw-1")
    with Client(tls_broker.hub_settings()) as hub:
        hub.subscribe(*hub_subscriptions())
        tls_broker.issue(newcomer)
        tls_broker.ca.revoke_gateway(STORE_B)
        # The registry passes its own list: here it also leaves out store-a, whose certificate is still valid.
        files = sync_broker(tls_broker.ca, settings, gateways=[newcomer])
        assert files is not None
        assert "user store-a/gw-1\n" not in files.acl.read_text()
        with Client(tls_broker.gateway_settings(newcomer)) as c:

            def newcomer_heard() -> bool:
                c.publish(t(newcomer, wire.Channel.EVENTS), b"newcomer")
                return b"newcomer" in hub.messages()

            wait_until(newcomer_heard, what="the reloaded ACL letting the new gateway in")
        wait_until(lambda: _refused(tls_broker.gateway_settings(STORE_B)), what="store-b refused by the reloaded CRL")
        with Client(tls_broker.gateway_settings(STORE_A)) as a, Client(tls_broker.gateway_settings(newcomer)) as c:
            a.publish(t(STORE_A, wire.Channel.EVENTS), b"from a, not in the registry")
            c.publish(t(newcomer, wire.Channel.EVENTS), b"control")
            hub.wait_for(t(newcomer, wire.Channel.EVENTS), b"control")
        assert b"from a, not in the registry" not in hub.messages()
    assert sync_broker(tls_broker.ca, BrokerSettings()) is None  # no files_dir: the hub manages no broker
