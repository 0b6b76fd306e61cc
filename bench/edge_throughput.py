#!/usr/bin/env python3
"""Edge throughput benchmark: the agent's durable end-to-end path against real Mosquitto and the real hub.

Prints, from one run on one machine:
  1. baseline: raw paho-mqtt QoS 1 publish rate, one message per event, same payload size;
  2. durable end-to-end rate: events recorded by the agent, committed to its outbox,
     published, stored by the hub and acknowledged back, per second;
  3. end-to-end latency p50/p99 (device timestamp -> hub commit) at a steady 1,000 events/s;
  4. drain rate of a 100,000-event backlog built while the broker was down;
  5. the agent's RSS: peak, and at 10,000 and 200,000 events of backlog.

Usage: .venv/bin/python bench/edge_throughput.py [--events 100000] [--backlog 200000] [--json out.json] [--keep]
The agent runs in a child process (this file with --child), so its RSS is its own.

With --tls [--rounds 3] it measures only the durable end-to-end rate, on two brokers of the same
Mosquitto binary side by side: the plain loopback one above, and one running the configuration the
hub writes (hub.pki: TLS, client certificates, ACL, CRL), with the agent and the hub on their own
certificates. Runs alternate (plain, TLS, then TLS, plain, ...) so drift on a shared machine hits both.
Not a test: it prints figures; docs/benchmarks.md records them with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAYLOAD_BYTES = 200
RAW_MAX_OUTSTANDING = 10_000
STORE, GATEWAY = "store-bench", "gw-bench"


# --------------------------------------------------------------------------- the agent child


def _payload(n: int) -> dict[str, Any]:
    """A sale-like payload of about PAYLOAD_BYTES bytes of JSON."""
    base = {"gtin": "05012345678900", "qty": 1, "price_minor": 199, "currency": "EUR", "n": n, "till": "till-1"}
    filler = PAYLOAD_BYTES - len(json.dumps(base)) - len(', "note": ""')
    return {**base, "note": "x" * max(filler, 0)}


async def _child(args: argparse.Namespace) -> None:
    from device_drivers.base import Reading
    from edge_agent.agent import EdgeAgent
    from edge_agent.config import AgentConfig

    config = AgentConfig.model_validate(
        {
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "mqtt": {
                "host": "127.0.0.1",
                "port": args.port,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
                **(
                    {"tls": True, "ca_file": args.ca, "cert_file": args.cert, "key_file": args.key} if args.cert else {}
                ),
            },
            "outbox": {"path": args.outbox},
            "health": {"interval_s": 5, "metrics_port": args.metrics_port},
        }
    )
    agent = EdgeAgent(config=config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.create_task(agent.run(stop))

    async def produce() -> None:
        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        start = time.monotonic()
        for n in range(1, args.count + 1):
            if interval:
                due = start + (n - 1) * interval
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing a simulated device, not synchronisation
            reading = Reading(device_id=args.device, kind="sale.item", ts=datetime.now(UTC), payload=_payload(n))
            await agent.record(reading)
        print(json.dumps({"produced": args.count, "produce_s": time.monotonic() - start}), flush=True)

    producer = asyncio.create_task(produce())
    await stop.wait()
    producer.cancel()
    await asyncio.gather(producer, return_exceptions=True)
    await runner
    stats = agent.stats
    final = {"published": stats.published, "acked": stats.acked, "resent": stats.resent}
    print(json.dumps({"final": final}), flush=True)


# --------------------------------------------------------------------------- the parent


def _metric(client: Any, port: int, name: str) -> float | None:
    import httpx

    try:
        text = client.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class AgentProcess:
    """The agent child with RSS sampling."""

    started: list[AgentProcess] = []

    def __init__(
        self,
        workdir: Path,
        broker_port: int,
        *,
        count: int,
        rate: float,
        device: str,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        from launcher.broker import free_port

        self.metrics_port = free_port()
        self.outbox = workdir / "outbox.sqlite3"
        argv = [
            sys.executable,
            __file__,
            "--child",
            "--port",
            str(broker_port),
            "--outbox",
            str(self.outbox),
            "--metrics-port",
            str(self.metrics_port),
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--device",
            device,
        ]
        if tls is not None:
            argv += ["--ca", str(tls[0]), "--cert", str(tls[1]), "--key", str(tls[2])]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        import httpx
        import psutil

        self._http = httpx.Client()
        self._ps = psutil.Process(self.process.pid)
        self.peak_rss = 0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        AgentProcess.started.append(self)

    def _sample(self) -> None:
        while self._sampling:
            try:
                self.peak_rss = max(self.peak_rss, self._ps.memory_info().rss)
            except Exception:
                return
            time.sleep(0.05)  # sampling interval

    def rss(self) -> int:
        return int(self._ps.memory_info().rss)

    def depth(self) -> float | None:
        return _metric(self._http, self.metrics_port, "storegate_agent_outbox_depth")

    def acked(self) -> float:
        return _metric(self._http, self.metrics_port, "storegate_agent_acked_total") or 0.0

    def stop(self) -> list[dict[str, Any]]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self._sampling = False
        self._http.close()
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)  # polling another process's metrics; each poll costs it CPU
    raise SystemExit(f"benchmark gave up waiting for {what} after {timeout}s")


def raw_qos1_rate(port: int, count: int) -> float:
    """The baseline: paho-mqtt publishing one QoS 1 message per event, waiting for every PUBACK."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    done = threading.Event()
    acked = [0]
    progress = threading.Condition()

    def on_publish(*_: Any) -> None:
        # paho may call this from the publishing thread as well as its network thread.
        with progress:
            acked[0] += 1
            progress.notify()
            if acked[0] == count:
                done.set()

    client.on_publish = on_publish
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    payload = json.dumps(_payload(0)).encode()
    started = time.perf_counter()
    for sent in range(count):
        # MQTT message ids are 16-bit: a publisher must not have more than 65,535 outstanding,
        # or paho reuses ids and loses track of acknowledgements. Keep at most 10,000 queued.
        def has_room(sent: int = sent) -> bool:
            return sent - acked[0] < RAW_MAX_OUTSTANDING

        with progress:
            progress.wait_for(has_room, timeout=60)
        client.publish(f"bench/{GATEWAY}/raw", payload, qos=1)
    if not done.wait(120):
        raise SystemExit("raw baseline: not every PUBACK arrived")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return count / elapsed


def hub_latencies(database: Path, device_id: str, since_n: int) -> list[float]:
    """Device timestamp to hub commit, in ms, of one device's readings numbered ``since_n`` and up."""
    from tests.procs import hub_rows

    rows = hub_rows(database, "SELECT device_ts, received_at, payload FROM events WHERE device_id = ?", (device_id,))
    latencies = []
    for device_ts, received_at, payload in rows:
        if json.loads(payload)["n"] < since_n:
            continue
        sent = datetime.fromisoformat(device_ts)
        stored = datetime.fromisoformat(received_at)
        latencies.append((stored - sent).total_seconds() * 1000)
    return latencies


def durable_rate(workdir: Path, port: int, count: int, device: str, tls: tuple[Path, Path, Path] | None) -> float:
    """Events/s recorded by an agent, stored by the hub and acknowledged back, as fast as the agent takes them."""
    agent = AgentProcess(workdir, port, count=count, rate=0, device=device, tls=tls)
    started = time.perf_counter()
    _wait(lambda: agent.acked() >= count, 600, f"the {device} run to be acknowledged")
    elapsed = time.perf_counter() - started
    agent.stop()
    return count / elapsed


def tls_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """The durable end-to-end rate without and with TLS, interleaved, on the same Mosquitto binary."""
    import getpass

    from hub.pki.authority import CertificateAuthority
    from hub.pki.broker import write_broker_files
    from hub.pki.identity import GatewayIdentity
    from launcher.broker import free_port, start_mosquitto, start_mosquitto_with
    from storegate.mqtt import MqttSettings
    from tests.procs import hub_rows, hub_service

    work = Path(tempfile.mkdtemp(prefix="storegate-bench-tls-"))
    ca = CertificateAuthority.create(work / "secrets" / "pki")
    gateway = ca.issue_gateway(GatewayIdentity(STORE, GATEWAY))
    cert, key, ca_file = gateway.write(work / "gateway", stem="gateway")
    tls_port = free_port()
    files = write_broker_files(
        ca, work / "tls-broker", port=tls_port, bind_address="127.0.0.1", run_as=getpass.getuser()
    )
    brokers = {"plain": start_mosquitto(work / "plain-broker")}
    brokers["tls"] = start_mosquitto_with(files.conf, host="127.0.0.1", port=tls_port)
    hub_mqtt = {
        "plain": MqttSettings(host="127.0.0.1", port=brokers["plain"].port),
        "tls": MqttSettings(
            host="127.0.0.1",
            port=tls_port,
            tls=True,
            ca_file=ca.ca_cert_path,
            cert_file=ca.hub_cert_path,
            key_file=ca.hub_key_path,
        ),
    }
    agent_tls = {"plain": None, "tls": (ca_file, cert, key)}
    hubs = {mode: hub_service(work / f"hub-{mode}", mqtt, http_port=free_port()) for mode, mqtt in hub_mqtt.items()}
    rates: dict[str, list[float]] = {"plain": [], "tls": []}
    try:
        for mode, hub in hubs.items():
            hub.start()
            database = work / f"hub-{mode}" / "hub.sqlite3"
            _wait(lambda db=database: bool(hub_rows(db, "SELECT version_num FROM alembic_version")), 30, "a hub")
        for round_ in range(args.rounds):
            order = ("plain", "tls") if round_ % 2 == 0 else ("tls", "plain")
            for mode in order:
                rate = durable_rate(
                    work / f"{mode}-{round_}", brokers[mode].port, args.events, f"till-{mode}-{round_}", agent_tls[mode]
                )
                rates[mode].append(rate)
                print(f"round {round_ + 1} {mode:5}: {rate:,.0f} events/s durable end to end", flush=True)
    finally:
        for hub in hubs.values():
            if hub.alive:
                hub.stop()
        for broker in brokers.values():
            broker.stop()
        if args.keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    plain, tls = statistics.median(rates["plain"]), statistics.median(rates["tls"])
    figures: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "events_per_run": args.events,
        "plain_per_s": rates["plain"],
        "tls_per_s": rates["tls"],
        "plain_median_per_s": plain,
        "tls_median_per_s": tls,
        "tls_vs_plain": tls / plain,
        "tls_vs_plain_per_round": [t / p for p, t in zip(rates["plain"], rates["tls"], strict=True)],
    }
    print(f"median: plain {plain:,.0f}/s, TLS {tls:,.0f}/s = {tls / plain:.2f}x (target >= 0.9x)", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--outbox", default="", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="till-1", help=argparse.SUPPRESS)
    parser.add_argument("--ca", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cert", default="", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help="compare the durable rate with and without TLS only")
    parser.add_argument("--rounds", type=int, default=3, help="with --tls: runs of each, interleaved")
    parser.add_argument("--events", type=int, default=100_000, help="events for the rate measurements")
    parser.add_argument("--backlog", type=int, default=200_000, help="backlog for the RSS and drain measurements")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="length of the 1,000/s latency run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, outboxes, the database)")
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args))
        return
    if args.tls:
        compared = tls_comparison(args)
        if args.json:
            args.json.write_text(json.dumps(compared, indent=2) + "\n")
        print(json.dumps(compared, indent=2))
        return

    from launcher.broker import free_port, start_mosquitto
    from storegate.mqtt import MqttSettings
    from tests.procs import hub_rows, hub_service

    work = Path(tempfile.mkdtemp(prefix="storegate-bench-"))
    broker = start_mosquitto(work / "broker")
    mqtt = MqttSettings(host=broker.host, port=broker.port)
    hub = hub_service(work / "hub", mqtt, http_port=free_port())
    database = work / "hub" / "hub.sqlite3"
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "payload_bytes": PAYLOAD_BYTES}

    def stored() -> int:
        rows = hub_rows(database, "SELECT count(*) FROM events")
        return int(rows[0][0]) if rows else 0

    try:
        hub.start()
        _wait(lambda: bool(hub_rows(database, "SELECT version_num FROM alembic_version")), 30, "the hub's database")

        # 1. baseline
        figures["raw_qos1_per_s"] = raw_qos1_rate(broker.port, args.events)
        print(f"baseline raw paho QoS 1, 1 message/event: {figures['raw_qos1_per_s']:,.0f} events/s", flush=True)

        # 2. durable end to end, as fast as the agent takes them
        base = stored()
        agent = AgentProcess(work / "rate", broker.port, count=args.events, rate=0, device="till-rate")
        started = time.perf_counter()
        _wait(lambda: agent.acked() >= args.events, 300, "the end-to-end run to be acknowledged")
        elapsed = time.perf_counter() - started
        agent.stop()
        assert stored() - base == args.events, "the hub does not hold every event"
        figures["durable_e2e_per_s"] = args.events / elapsed
        figures["e2e_vs_raw"] = figures["durable_e2e_per_s"] / figures["raw_qos1_per_s"]
        print(
            f"durable end to end (acked by the hub): {figures['durable_e2e_per_s']:,.0f} events/s "
            f"= {figures['e2e_vs_raw']:.2f}x baseline",
            flush=True,
        )

        # 3. latency at a steady 1,000 events/s (device timestamp -> hub commit)
        steady = int(1000 * args.latency_seconds)
        agent = AgentProcess(work / "latency", broker.port, count=steady, rate=1000, device="till-latency")
        _wait(lambda: agent.acked() >= steady, args.latency_seconds + 60, "the latency run")
        agent.stop()
        # Skip the first second: connection set-up is not steady state.
        lat = sorted(hub_latencies(database, "till-latency", since_n=1000))
        assert len(lat) == steady - 999, f"expected {steady - 999} latency samples, got {len(lat)}"
        figures["latency_ms_p50"] = statistics.median(lat)
        figures["latency_ms_p99"] = lat[int(len(lat) * 0.99) - 1]
        print(
            f"latency at 1,000 events/s: p50 {figures['latency_ms_p50']:.1f} ms, "
            f"p99 {figures['latency_ms_p99']:.1f} ms",
            flush=True,
        )

        # 4 + 5. backlog while the broker is down: RSS at 10,000 and 200,000; then the drain
        broker.stop()
        agent = AgentProcess(work / "backlog", broker.port, count=args.backlog, rate=0, device="till-backlog")
        _wait(lambda: (agent.depth() or 0) >= 10_000, 120, "a 10,000-event backlog")
        figures["rss_mb_backlog_10k"] = agent.rss() / 2**20
        _wait(lambda: (agent.depth() or 0) >= args.backlog, 600, f"a {args.backlog:,}-event backlog")
        figures["rss_mb_backlog_full"] = agent.rss() / 2**20
        figures["rss_growth"] = figures["rss_mb_backlog_full"] / figures["rss_mb_backlog_10k"] - 1
        print(
            f"agent RSS with 10,000 events waiting: {figures['rss_mb_backlog_10k']:.1f} MB; with "
            f"{args.backlog:,}: {figures['rss_mb_backlog_full']:.1f} MB ({figures['rss_growth']:+.1%})",
            flush=True,
        )
        acked_before = agent.acked()
        broker.restart()
        started = time.perf_counter()
        _wait(lambda: agent.acked() - acked_before >= 100_000, 300, "100,000 events of backlog to drain")
        figures["drain_100k_per_s"] = 100_000 / (time.perf_counter() - started)
        _wait(lambda: agent.acked() - acked_before >= args.backlog, 300, "the whole backlog to drain")
        figures["drain_all_per_s"] = args.backlog / (time.perf_counter() - started)
        print(
            f"backlog drain: first 100,000 at {figures['drain_100k_per_s']:,.0f} events/s, all "
            f"{args.backlog:,} at {figures['drain_all_per_s']:,.0f} events/s",
            flush=True,
        )
        agent.stop()
        figures["rss_mb_peak"] = max(a.peak_rss for a in AgentProcess.started) / 2**20
        print(f"agent peak RSS over all runs: {figures['rss_mb_peak']:.1f} MB", flush=True)
    finally:
        if hub.alive:
            hub.stop()
        broker.stop()
        if args.keep:
            print(f"kept {work}: the hub's and the agents' logs and databases", flush=True)
        else:  # a run leaves some 340 MB of outboxes and databases: too much to leave on a gateway-sized disk
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
