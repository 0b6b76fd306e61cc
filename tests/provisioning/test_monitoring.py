"""The monitoring kit as shipped: Prometheus's config and alert rules through promtool, the Grafana dashboard's
queries against the metrics a running hub and an agent really export, and those services' build and process metrics.

promtool is Debian's package `prometheus` (installed by .ci/run); without it these tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.health import AgentStats, agent_registry
from hub.app import serve
from hub.settings import HubSettings
from launcher.broker import free_port
from storegate import __version__
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import token_in_database

DEPLOY = Path(__file__).resolve().parents[2] / "provisioning" / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "storegate.json"
# Series Prometheus makes itself for every target, not exported by a service.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
# The conditions docs/operations.md says are worth an alert, each needing a rule.
CONDITIONS = {
    "gateway offline": "StoregateGatewayOffline",
    "backlog growing": "StoregateGatewayBacklogGrowing",
    "oldest unacked age": "StoregateGatewayOldestUnackedOld",
    "data lost": "StoregateDataLost",
    "broker unreachable (hub)": "StoregateHubBrokerUnreachable",
    "broker unreachable (agent)": "StoregateAgentBrokerUnreachable",
    "a writer stuck in its turn": "StoregateHubWriterStuck",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (the Debian package; .ci/run installs it)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def alert_rules() -> dict[str, str]:
    """Each alert of alerts.yml with the text of its rule."""
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    blocks = re.split(r"^\s*- alert: ", text, flags=re.MULTILINE)[1:]
    return {block.split("\n", 1)[0].strip(): block for block in blocks}


# ------------------------------------------------------------------ Prometheus: config and rules


def test_the_scrape_config_passes_promtool_check_config(tmp_path: Path) -> None:
    # promtool also opens the files the config names: the hub's token file gets a stand-in of the same mode.
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    token = tmp_path / "storegate-hub.token"
    token.write_text("sg_test_token\n")
    token.chmod(0o600)
    config = tmp_path / "prometheus.yml"
    text = config.read_text()
    assert "/etc/prometheus/storegate-hub.token" in text
    config.write_text(text.replace("/etc/prometheus/storegate-hub.token", str(token)))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


def test_the_alert_rules_pass_promtool_and_each_says_what_to_do() -> None:
    checked = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = alert_rules()
    assert set(CONDITIONS.values()) <= set(rules), "a condition of docs/operations.md without an alert"
    for name, rule in rules.items():
        assert "summary:" in rule, name
        assert "description:" in rule, name
        assert "severity:" in rule, name


def test_every_alert_fires_and_stays_quiet_in_promtool_test_rules() -> None:
    tested = promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = (PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8")
    for name in alert_rules():
        evaluations = re.findall(rf"alertname: {name}\n\s+exp_alerts:(.*)", cases)
        assert "[]" in [e.strip() for e in evaluations], f"{name}: no case where it stays quiet"
        assert "" in [e.strip() for e in evaluations], f"{name}: no case where it fires"


def test_a_rule_that_cannot_fire_fails_its_test(tmp_path: Path) -> None:
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    text = rules.read_text()
    assert "storegate_hub_write_turn_held_seconds > 60" in text
    rules.write_text(
        text.replace("storegate_hub_write_turn_held_seconds > 60", "storegate_hub_write_turn_held_seconds > 6e9")
    )
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "StoregateHubWriterStuck" in tested.stdout + tested.stderr


# ------------------------------------------------------------------ Grafana: the dashboard's queries


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard["panels"])
    return found


_PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords or label names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # strings: label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()[:1]
        if following == "(" or match.group() in _PROMQL_WORDS or re.fullmatch(r"\d.*", match.group()):
            continue
        names.add(match.group())
    return names


def test_metric_names_are_found_in_promql() -> None:
    assert metric_names(
        'sum by (le, writer) (rate(storegate_hub_write_turn_wait_seconds_bucket{job=~"a.*"}[5m])) '
        "/ on (instance) group_left up > bool 0.5 or vector(0)"
    ) == {"storegate_hub_write_turn_wait_seconds_bucket", "up"}


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions offline only within rules: each query becomes a recording rule.
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query_{number}\n        expr: {json.dumps(expression)}\n"
        for number, expression in enumerate(expressions)
    )
    (tmp_path / "dashboard-rules.yml").write_text(rules)
    checked = promtool("check", "rules", str(tmp_path / "dashboard-rules.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def exported_names(exposition: str) -> set[str]:
    """Every series name an exposition offers, with the suffixes Prometheus sees (_total, _bucket, ...)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def agent_exposition() -> str:
    """What an agent's /metrics serves: its registry, as MetricsServer hands it to prometheus_client."""
    stats = AgentStats(
        depth=3, published=10, acked=7, resent=0, reconnects=0, rejected=0, last_ack_seq=7, connected=True,
        oldest_unacked_age_s=1.5, evicted_by_priority=(("telemetry", 0),),
    )  # fmt: skip
    return generate_latest(agent_registry(lambda: stats)).decode()


@pytest.fixture
async def hub_exposition(tmp_path: Path, mqtt_settings: MqttSettings) -> AsyncIterator[str]:
    """A hub served on loopback (uvicorn, SQLite, the test's Mosquitto): its /metrics, read with an API token."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    token = await token_in_database(database_url, "viewer", name="prometheus")
    port = free_port()
    stop = asyncio.Event()
    settings = HubSettings(database_url=database_url, mqtt=mqtt_settings, http_port=port, secrets_dir=tmp_path / "s")
    task = asyncio.create_task(serve(settings, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def scraped() -> str | None:
                assert not task.done(), task
                try:
                    answer = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
                except httpx.TransportError:
                    return None
                # Once connected to the broker, so the connection gauge reads 1.
                return answer.text if "storegate_hub_mqtt_connected 1.0" in answer.text else None

            exposition = await eventually(scraped, timeout=30, what="the hub's /metrics")
            assert exposition is not None
            anonymous = await http.get("/metrics")
            assert anonymous.status_code == 401, "Prometheus needs the token: no anonymous scrape"
            yield exposition
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_the_dashboard_and_the_alerts_read_only_metrics_the_services_export(
    hub_exposition: str, agent_exposition: str
) -> None:
    exported = exported_names(hub_exposition) | exported_names(agent_exposition) | SYNTHETIC
    rule_expressions = re.findall(
        r"expr: (?:>-\n)?(.+?)\n\s+(?:for|labels):", (PROMETHEUS / "alerts.yml").read_text(), re.S
    )
    assert len(rule_expressions) == len(alert_rules())
    for source, expressions in (("dashboard", dashboard_expressions()), ("alerts.yml", rule_expressions)):
        for expression in expressions:
            unknown = metric_names(expression) - exported
            assert not unknown, f"{source}: {expression!r} reads {sorted(unknown)}, which no service exports"

    # What the dashboard shows of the processes and versions, on both services.
    hub_families = {family.name: family for family in text_string_to_metric_families(hub_exposition)}
    [build] = hub_families["storegate_build_info"].samples
    assert build.labels["service"] == "hub"
    assert build.labels["version"] == __version__
    assert build.value == 1
    assert hub_families["process_resident_memory_bytes"].samples[0].value > 0
    assert hub_families["process_cpu_seconds"].samples[0].value > 0
    assert "python_info" in hub_families
    assert 'storegate_build_info{implementation="CPython",python=' in agent_exposition
    assert 'service="agent"' in agent_exposition
    assert "process_resident_memory_bytes" in agent_exposition


def test_metrics_the_hub_does_not_export_are_caught(agent_exposition: str) -> None:
    # The check above can fail: a misspelt name is not among the exported ones.
    assert metric_names("rate(storegate_hub_events_stord_total[5m])") - exported_names(agent_exposition) == {
        "storegate_hub_events_stord_total"
    }


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_files() -> Iterator[None]:
    yield
    assert not list(PROMETHEUS.glob("*.tmp")), "tests write into tmp_path only"
