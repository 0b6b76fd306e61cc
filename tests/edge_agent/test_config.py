"""The agent config file: defaults, path resolution, the hash, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_drivers.simulated.sequence import SimulatedSequenceConfig
from device_drivers.simulated.temperature import SimulatedSensorConfig
from edge_agent.config import AgentConfig, ProfiledDeviceConfig, config_hash, load_agent_config
from storegate.configfile import ConfigError

MINIMAL = """
store_id = "store-0042"
gateway_id = "gw-1"

[outbox]
path = "data/outbox.sqlite3"
"""

FULL = """
store_id = "store-0042"
gateway_id = "gw-1"

[mqtt]
host = "hub.example.net"
port = 8883
tls = true
ca_file = "certs/ca.pem"

[outbox]
path = "/var/lib/storegate/outbox.sqlite3"
max_batch = 200
max_in_flight = 2000
ack_timeout_s = 5.0
commit_max_events = 300
queue_size = 4000
max_events = 500000
max_bytes = 268435456

[health]
interval_s = 15
metrics_port = 9101

[[devices]]
device_id = "chiller-1-temp"
driver = "simulated-temperature"
zone = "chiller-1"
interval_s = 5
base_celsius = 3.5
amplitude_celsius = 0.8
noise_celsius = 0.05
seed = 7

[[devices]]
device_id = "door-1"
driver = "simulated-sequence"
kind = "door.contact"
count = 5000
rate_per_s = 400
seed = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "agent.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> tuple[ConfigError, list[str]]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    return info.value, info.value.problems


def test_minimal_config_gets_defaults_and_a_path_relative_to_the_file(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, MINIMAL))
    assert config.outbox.path == tmp_path / "etc" / "data" / "outbox.sqlite3"
    assert (config.outbox.max_batch, config.outbox.max_in_flight, config.outbox.ack_timeout_s) == (500, 5000, 10.0)
    assert (config.outbox.commit_max_events, config.outbox.queue_size) == (1000, 10_000)
    assert (config.outbox.max_events, config.outbox.max_bytes) == (2_000_000, 1024**3)
    assert (config.health.interval_s, config.health.metrics_host, config.health.metrics_port) == (30, "127.0.0.1", None)
    assert config.mqtt.address == "127.0.0.1:1883"
    assert config.devices == []


def test_full_config(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, FULL))
    assert config.outbox.path == Path("/var/lib/storegate/outbox.sqlite3")
    assert config.mqtt.ca_file == tmp_path / "etc" / "certs" / "ca.pem"
    assert config.health.metrics_port == 9101
    assert (config.outbox.max_events, config.outbox.max_bytes) == (500_000, 256 * 1024**2)
    device, door = config.devices
    assert isinstance(door, SimulatedSequenceConfig)
    assert (door.device_id, door.kind, door.count, door.rate_per_s, door.seed) == (
        "door-1",
        "door.contact",
        5000,
        400,
        3,
    )
    assert isinstance(device, SimulatedSensorConfig)
    assert (device.device_id, device.zone, device.interval_s, device.base_celsius, device.seed) == (
        "chiller-1-temp",
        "chiller-1",
        5,
        3.5,
        7,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "max_batch = -1\n", "outbox.max_batch: Input should be greater than 0 (got -1)"),
        (MINIMAL + "max_batch = 5000\n", "outbox.max_batch: Input should be less than or equal to 1000 (got 5000)"),
        (MINIMAL + "[mqtt]\nprot = 1883\n", "mqtt.prot: unknown key"),
        ("colour = 'blue'\n" + MINIMAL, "colour: unknown key"),
        (MINIMAL + "colour = 'blue'\n", "outbox.colour: unknown key"),
        (MINIMAL.replace('"gw-1"', '"GW 1"'), "gateway_id: must be 1 to 63 characters: lower-case letters"),
        (MINIMAL.replace('gateway_id = "gw-1"', ""), "gateway_id: required, but missing: add it"),
        (MINIMAL + "[health]\nmetrics_port = 70000\n", "health.metrics_port: Input should be less than or equal to"),
        (
            MINIMAL + '[[devices]]\ndevice_id = "t1"\ndriver = "thermo-9000"\n',
            "devices.0: unknown driver: use 'simulated-temperature' or 'simulated-sequence', "
            "or name a 'profile' (and leave 'driver' out) for a real device",
        ),
        (
            MINIMAL + '[[devices]]\ndevice_id = "t1"\ndriver = "simulated-temperature"\ninterval_s = 0\n',
            "devices.0.simulated-temperature.interval_s: Input should be greater than 0 (got 0)",
        ),
        (
            MINIMAL + '[[devices]]\ndevice_id = "t1"\ndriver = "simulated-temperature"\nbase = 4\n',
            "devices.0.simulated-temperature.base: unknown key",
        ),
        (
            MINIMAL + '[[devices]]\ndevice_id = "s1"\ndriver = "simulated-sequence"\n',
            "devices.0.simulated-sequence.count: required, but missing: add it",
        ),
        (
            MINIMAL + '[[devices]]\ndevice_id = "s1"\ndriver = "simulated-sequence"\ncount = 5\nkind = "outbox.loss"\n',
            "devices.0.simulated-sequence: Value error, kind 'outbox.loss' has a payload schema",
        ),
        (MINIMAL + "max_events = 5\n", "outbox.max_events: Input should be greater than or equal to 10 (got 5)"),
    ],
)
def test_a_bad_key_or_value_names_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    _, problems = problems_of(tmp_path, text)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, MINIMAL + "max_batch = 0\nqueue_size = 0\n[mqtt]\nprot = 1\n")
    assert len(problems) == 3


def test_duplicate_device_ids_are_refused(tmp_path: Path) -> None:
    device = '[[devices]]\ndevice_id = "t1"\ndriver = "simulated-temperature"\n'
    _, problems = problems_of(tmp_path, MINIMAL + device + device)
    assert any("'t1' appears more than once" in problem for problem in problems), problems


def test_broker_password_is_never_echoed(tmp_path: Path) -> None:
    error, _ = problems_of(tmp_path, MINIMAL + '[mqtt]\npassword = 12345678\nusername = "gw"\n')
    assert "12345678" not in str(error)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_agent_config(tmp_path / "absent.toml")
    _, problems = problems_of(tmp_path, "store_id = \n")
    assert problems[0].startswith("not valid TOML")


def test_config_hash_is_stable_and_tracks_changes(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    first, second = load_agent_config(path), load_agent_config(path)
    assert config_hash(first) == config_hash(second)
    assert len(config_hash(first)) == 64
    changed = first.model_copy(update={"outbox": first.outbox.model_copy(update={"max_batch": 201})})
    assert config_hash(changed) != config_hash(first)


def test_the_model_validates_without_a_file(tmp_path: Path) -> None:
    config = AgentConfig.model_validate(
        {"store_id": "s1", "gateway_id": "g1", "outbox": {"path": str(tmp_path / "o.sqlite3")}}
    )
    assert config.outbox.path == tmp_path / "o.sqlite3"


PROFILED = """
[[devices]]
device_id = "chiller-1"
profile = "xy-md02"
address = "/dev/ttyUSB0"
[devices.settings]
zone = "chiller-1"
[[devices.settings.alarms]]
high = 5.0
delay_s = 300

[[devices]]
device_id = "till-1-scanner"
profile = "zebra-ds-cdc"
identity = "usb-05e0:1701-S_N_21122B0012"
[devices.settings]
mode = "receiving"
"""


def test_profiled_devices_by_address_or_identity(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, MINIMAL + PROFILED))
    chiller, scanner = config.devices
    assert isinstance(chiller, ProfiledDeviceConfig)
    assert isinstance(scanner, ProfiledDeviceConfig)
    assert (chiller.driver, chiller.address, chiller.identity) == ("profile", "/dev/ttyUSB0", None)
    assert scanner.identity == "usb-05e0:1701-S_N_21122B0012"
    assert config.hotplug.enabled
    assert config.hotplug.watch == "auto"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('profile = "xy-md02"', 'profile = "xy-md03"'), "devices.0.profile: no device profile 'xy-md03' (known: "),
        (("high = 5.0", "colour = 1"), "devices.0.settings.alarms.0.colour: unknown key"),
        (("delay_s = 300", "delay_s = -1"), "devices.0.settings.alarms.0.delay_s: Input should be greater"),
        (('mode = "receiving"', 'mode = "refunds"'), "devices.1.settings.mode: Input should be 'checkout'"),
        (('address = "/dev/ttyUSB0"', ""), "devices.0.profile: Value error, give either 'address'"),
    ],
)
def test_a_profiled_device_with_an_unknown_profile_or_bad_settings_names_the_entry(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(write(tmp_path, MINIMAL + PROFILED.replace(*change)))
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems
