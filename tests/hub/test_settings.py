"""Hub settings: sources and precedence, and errors that name the key and the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.settings import ENV_PREFIX, HubSettings, load_hub_settings
from storegate.configfile import ConfigError
from storegate.env_names import unknown_variables


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def problems_of(path: Path | None, **overrides: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_hub_settings(path, **overrides)
    assert caught.value.path == path
    return caught.value.problems


def test_defaults_without_a_file() -> None:
    settings = load_hub_settings(None)
    assert settings.database_url == "sqlite+aiosqlite:///storegate-hub.sqlite3"
    assert settings.mqtt.address == "127.0.0.1:1883"
    assert settings.client_id == "storegate-hub"
    assert (settings.http_host, settings.http_port, settings.log_level) == ("127.0.0.1", 8000, "INFO")
    assert settings.shared_subscription_group is None


def test_file_then_environment_then_keywords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        'client_id = "hub-a"\nhttp_port = 8100\nlog_level = "debug"\n[mqtt]\nhost = "broker.local"\nport = 1884\n',
    )
    monkeypatch.setenv("STOREGATE_HUB_MQTT__PORT", "1885")
    monkeypatch.setenv("STOREGATE_HUB_HTTP_PORT", "8200")
    settings = load_hub_settings(path, http_port=8300)
    assert settings.client_id == "hub-a"  # file
    assert settings.log_level == "DEBUG"
    assert settings.mqtt.host == "broker.local"  # file, merged with the environment's mqtt.port
    assert settings.mqtt.port == 1885  # environment beats file
    assert settings.http_port == 8300  # keywords beat everything


def test_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'client_id = "x"\ndatabse_url = "sqlite+aiosqlite:///x.db"\n[mqtt]\nhots = "b"\n')
    with pytest.raises(ConfigError) as caught:
        load_hub_settings(path)
    assert str(path) in str(caught.value)
    assert "databse_url: unknown key (check its spelling and section)" in caught.value.problems
    assert "mqtt.hots: unknown key (check its spelling and section)" in caught.value.problems


def test_bad_port_names_the_dotted_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nport = 70000\n")
    assert problems_of(path) == ["mqtt.port: Input should be less than or equal to 65535 (got 70000)"]


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt\nport = 1\n")
    (problem,) = problems_of(path)
    assert problem.startswith("not valid TOML")


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "absent.toml") == ["file not found"]


def test_environment_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREGATE_HUB_MQTT__PORT", "0")
    (problem,) = problems_of(None)
    assert problem.startswith("mqtt.port: Input should be greater than or equal to 1")
    assert "[from environment variable STOREGATE_HUB_MQTT__PORT]" in problem


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\npassword = ["hunter2"]\n')
    text = "\n".join(problems_of(path, database_url="postgresql+psycopg2://hub:s3cret@db/hub"))
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert "database_url: Value error, driver 'postgresql+psycopg2' is not supported" in text
    assert "mqtt.password" in text


def test_database_url_password_is_not_in_repr() -> None:
    settings = load_hub_settings(None, database_url="postgresql+asyncpg://hub:s3cret@db/hub")
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///:memory:", "SQLite needs a file path"),
        ("mysql+aiomysql://db/hub", "driver 'mysql+aiomysql' is not supported"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_database_urls(url: str, expected: str) -> None:
    (problem,) = problems_of(None, database_url=url)
    assert problem.startswith("database_url:")
    assert expected in problem


def test_shared_subscription_needs_mqtt_5() -> None:
    postgresql = "postgresql+asyncpg://storegate@db/storegate"
    (problem,) = problems_of(
        None, database_url=postgresql, shared_subscription_group="hubs", mqtt={"protocol": "3.1.1"}
    )
    assert "shared_subscription_group needs mqtt.protocol = '5'" in problem
    shared = load_hub_settings(None, database_url=postgresql, shared_subscription_group="hubs")
    assert shared.shared_subscription_group == "hubs"


def test_shared_subscription_needs_postgresql() -> None:
    (problem,) = problems_of(None, shared_subscription_group="hubs")
    assert "shared_subscription_group needs PostgreSQL" in problem


def test_shared_subscription_group_must_be_a_topic_segment() -> None:
    (problem,) = problems_of(None, shared_subscription_group="a/b")
    assert problem.startswith("shared_subscription_group: String should match pattern")


def test_direct_construction_reads_only_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREGATE_HUB_CLIENT_ID", "from-env")
    assert HubSettings().client_id == "from-env"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ingest_linger_ms": -1}, "ingest_linger_ms"),
        ({"ingest_linger_ms": 101}, "ingest_linger_ms"),  # a linger past 0.1 s would be a stall, not a batch
        ({"ingest_linger_ms": "soon"}, "ingest_linger_ms"),
        ({"ingest_linger_messages": 0}, "ingest_linger_messages"),
        ({"ingest_linger_messages": 10_001}, "ingest_linger_messages"),
        ({"role": "leader"}, "role"),
    ],
)
def test_out_of_range_scale_out_settings_are_refused_by_name(overrides: dict[str, object], field: str) -> None:
    (problem,) = problems_of(None, **overrides)
    assert problem.startswith(f"{field}:")


def test_an_unknown_environment_variable_is_refused_with_the_nearest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREGATE_HUB_MQTT__PROT", "8883")  # a typo: before, the hub went on with port 1883
    monkeypatch.setenv("STOREGATE_HUB_DATABASE_URI", "sqlite+aiosqlite:///elsewhere.sqlite3")
    monkeypatch.setenv("storegate_hub_http_port", "8200")  # any case, as pydantic-settings reads them: known
    assert problems_of(None) == [
        "environment variable STOREGATE_HUB_DATABASE_URI: names no setting; did you mean STOREGATE_HUB_DATABASE_URL?",
        "environment variable STOREGATE_HUB_MQTT__PROT: names no setting; did you mean STOREGATE_HUB_MQTT__PORT?",
    ]


@pytest.mark.parametrize(
    "variable",
    [
        "STOREGATE_HUB_",
        "STOREGATE_HUB_NOTHING_LIKE_ANY_SETTING_AT_ALL",
        "STOREGATE_HUB_HTTP_PORT__DEEPER",  # below a plain value
        "STOREGATE_HUB_MQTT__PORT__",
    ],
)
def test_names_that_reach_no_setting_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    [problem] = problems_of(None)
    assert problem.startswith(f"environment variable {variable}: names no setting")


def test_every_variable_the_docs_and_code_name_is_still_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read elsewhere or documented: refusing one of these would break an installation that follows the docs.
    root = Path(__file__).resolve().parents[2]
    texts = [path.read_text(encoding="utf-8") for path in (root / "docs").glob("*.md")]
    texts += [
        path.read_text(encoding="utf-8") for pattern in ("hub/**/*.py", "launcher/*.py") for path in root.glob(pattern)
    ]
    named = {
        name
        for text in texts
        for name in re.findall(r"STOREGATE_HUB_[A-Z0-9_]*[A-Z0-9]", text)
        if not name.endswith("_") and name != "STOREGATE_HUB"
    }
    assert "STOREGATE_HUB_MQTT__PASSWORD_FILE" in named
    assert "STOREGATE_HUB_REPORTS__SMTP__PASSWORD" in named
    for name in named:
        assert unknown_variables(HubSettings, {name: "x"}, prefix=ENV_PREFIX) == [], name
