"""Config errors in plain words: id rules as sentences, "did you mean", the [[devices]] hint, outbox defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_agent_config
from storegate.configfile import ConfigError

IDS = 'store_id = "store-0042"\ngateway_id = "gw-1"\n'


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'store_id = "Store 42"\ngateway_id = "gw-1"\n',
            "store_id: must be 1 to 63 characters: lower-case letters, digits, '-' and '_', "
            "beginning with a letter or a digit (e.g. 'store-0042', 'gw-1') (got 'Store 42')",
        ),
        (
            IDS + '[[devices]]\ndevice_id = "-t1"\ndriver = "simulated-temperature"\n',
            "devices.0.simulated-temperature.device_id: must be 1 to 128 characters: letters, digits, '.', ':', "
            "'-' and '_', beginning with a letter or a digit (e.g. 'fridge-1', 'shelf-a3') (got '-t1')",
        ),
    ],
)
def test_an_id_rule_is_a_sentence_not_a_regex(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert found == [expected]
    assert "pattern" not in found[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            IDS + "[mqtt]\nprot = 8883\n",
            "mqtt.prot: unknown key (check its spelling and section); did you mean 'port'?",
        ),
        ("store_ib = 'x'\n" + IDS, "store_ib: unknown key (check its spelling and section); did you mean 'store_id'?"),
        (
            IDS + '[[devices]]\ndevice_id = "t1"\ndriver = "simulated-temperature"\nintervl_s = 5\n',
            "devices.0.simulated-temperature.intervl_s: unknown key (check its spelling and section); "
            "did you mean 'interval_s'?",
        ),
        (
            IDS + '[[devices]]\ndevice_id = "s1"\nprofile = "ds18b20"\naddress = "/x"\nadress = "/y"\n',
            "devices.0.profile.adress: unknown key (check its spelling and section); did you mean 'address'?",
        ),
        # Nothing close: no guess.
        (IDS + "[mqtt]\ncolour = 1\n", "mqtt.colour: unknown key (check its spelling and section)"),
    ],
)
def test_an_unknown_key_gets_the_nearest_known_one(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


def test_an_unknown_profile_gets_the_nearest_known_one(tmp_path: Path) -> None:
    text = IDS + '[[devices]]\ndevice_id = "scanner-1"\nprofile = "zebra-ds-cd"\naddress = "/dev/ttyACM0"\n'
    (found,) = problems(tmp_path, text)
    assert found.startswith("devices.0.profile: no device profile 'zebra-ds-cd' (known: ")
    assert found.endswith("; did you mean 'zebra-ds-cdc'?")


def test_devices_written_as_one_table_gets_the_two_brackets_hint(tmp_path: Path) -> None:
    text = IDS + '[devices]\ndevice_id = "t1"\ndriver = "simulated-temperature"\n'
    assert problems(tmp_path, text) == [
        "devices: a list of entries is expected, but [devices] is one table: "
        "begin each entry with [[devices]] (two brackets)"
    ]


def test_a_missing_key_says_so(tmp_path: Path) -> None:
    assert problems(tmp_path, 'store_id = "store-0042"\n') == ["gateway_id: required, but missing: add it"]


def test_the_outbox_section_may_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(IDS)
    config = load_agent_config(path)
    assert config.outbox.path == tmp_path / "outbox.sqlite"
    assert config.outbox.max_batch == 500
