"""The ACL and mosquitto.conf rendered from the gateways: pure text, checked line by line."""

from __future__ import annotations

from pathlib import Path

from hub.pki.broker import MAX_PACKET_SIZE, BrokerFiles, render_acl, render_mosquitto_conf
from hub.pki.identity import GatewayIdentity
from storegate import wire

A = GatewayIdentity("store-a", "gw-1")
B = GatewayIdentity("store-b", "gw-2")


def block(acl: str, user: str) -> list[str]:
    lines = acl.splitlines()
    start = lines.index(f"user {user}") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("topic ")), len(lines))
    return lines[start:end]


def test_a_gateway_writes_and_reads_only_its_own_topics() -> None:
    acl = render_acl([B, A], ["storegate-hub"])
    root = "storegate/v1/store-a/gw-1"
    assert block(acl, "store-a/gw-1") == [
        f"topic write {root}/events",
        f"topic write {root}/status",
        f"topic write {root}/health",
        f"topic write {root}/command_results",
        f"topic read {root}/ack",
        f"topic read {root}/commands",
        f"topic read {root}/config",
    ]
    assert all("store-b" in line for line in block(acl, "store-b/gw-2"))


def test_only_a_hub_writes_acks_commands_config_and_alerts() -> None:
    acl = render_acl([A], ["storegate-hub", "hub-2"])
    for hub in ("storegate-hub", "hub-2"):
        assert block(acl, hub) == [
            "topic read storegate/v1/+/+/events",
            "topic read storegate/v1/+/+/status",
            "topic read storegate/v1/+/+/health",
            "topic read storegate/v1/+/+/command_results",
            "topic write storegate/v1/+/+/ack",
            "topic write storegate/v1/+/+/commands",
            "topic write storegate/v1/+/+/config",
            "topic readwrite storegate/alerts/#",
        ]
    writes = [line for line in block(acl, "store-a/gw-1") if "write" in line]
    assert not any(line.endswith(("/ack", "/commands", "/config")) or "alerts" in line for line in writes)


def test_nothing_is_granted_before_the_first_user_and_no_pattern_lines() -> None:
    acl = render_acl([A, B], ["storegate-hub"])
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "user storegate-hub"
    assert not any(line.startswith("pattern") for line in lines)
    assert render_acl([], []).strip().startswith("#")
    assert "user" not in "".join(line for line in render_acl([], []).splitlines() if not line.startswith("#"))


def test_the_config_requires_certificates_takes_the_identity_and_refuses_anonymous() -> None:
    files = BrokerFiles(Path("/etc/mosquitto/storegate"))
    conf = render_mosquitto_conf(files, port=8883, persistence_dir=Path("/var/lib/mosquitto")).splitlines()
    for line in (
        "allow_anonymous false",
        "listener 8883",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "cafile /etc/mosquitto/storegate/ca.crt",
        "certfile /etc/mosquitto/storegate/broker.crt",
        "keyfile /etc/mosquitto/storegate/broker.key",
        "crlfile /etc/mosquitto/storegate/crl.pem",
        "acl_file /etc/mosquitto/storegate/acl",
        f"max_packet_size {MAX_PACKET_SIZE}",
        "persistence_location /var/lib/mosquitto/",
    ):
        assert line in conf, line
    assert not any(line.startswith(("password_file", "listener 1883")) for line in conf)
    assert not any(line.startswith("user ") for line in conf)


def test_the_packet_limit_lets_the_largest_batch_through_with_its_headers() -> None:
    topic = wire.topic("s" * 31, "g" * 31, wire.Channel.COMMAND_RESULTS)
    # Fixed header (5) + topic length (2) + topic + packet id (2) + MQTT 5 properties (well under 100).
    assert wire.MAX_MESSAGE_BYTES + 5 + 2 + len(topic) + 2 + 100 < MAX_PACKET_SIZE
    assert MAX_PACKET_SIZE < 2 * wire.MAX_MESSAGE_BYTES
