"""A simulated store day replayed through the real broker into a running hub, on SQLite and PostgreSQL.

The catalog is the real retailer's (SKUs and prices from ``retail/`` invoice lines, imported as CSV over
HTTP) and the till scans that retailer's real baskets. The day, Saturday 1 March 2025 in London:

* 07:55 the gateway comes online; 08:00 the delivery is received (24 of every SKU the day will sell);
  08:05 the smart shelf reports its three slots full.
* 09:00-12:00 customers take items from the shelf and pay for real baskets at the till; whenever a slot
  falls below its minimum the hub prints a pick list at the store (the gateway answers the print command)
  and staff refill the slot before the next customer.
* 12:30 a stock count of the best seller finds one item fewer than expected.
* 14:00-14:20 the freezer door is left open: the door alarm goes off at 14:05 and the freezer's own
  excursion alarm once it has been above -18 °C for 15 minutes; both clear by themselves.
* 15:00 a shelf sweep: nine items of one slot taken within 16 seconds and never paid for; an hour later
  they are shrink, over this store's threshold (set through the rules API).
* 23:30 motion in the closed store, with a camera snapshot taken just before.

The hub runs on the day's clock, so grace periods and the shrink window elapse as they would have.
Everything asserted is exact: stock per SKU, tasks, prints, alerts, the excursion, shrink, suggestions.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from device_drivers.barcode.simulator import RETAIL_FILE, BasketReplayer
from device_drivers.simulated.climate import shared_data_dir
from hub.alerting.models import ExcursionRow
from hub.app import create_app, lifespan
from hub.catalog.csv_io import SKUS, write_csv
from hub.catalog.retail_sample import skus_from_invoices
from hub.runtime import HubRuntime
from hub.settings import load_hub_settings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.catalog.test_catalog_real_data import invoice_lines
from tests.hub.conftest import PlainGateway, make_token

STORE = "store-0042"
GATEWAY = "gw-till-1"
SHELF = "shelf-a1"
DAY = datetime(2025, 3, 1, tzinfo=UTC)  # London is on UTC in March before the 30th
CAPACITY, MINIMUM = 12, 4
BASKETS = 14


def at(hhmm: str, seconds: int = 0) -> datetime:
    hours, minutes = hhmm.split(":")
    return DAY + timedelta(hours=int(hours), minutes=int(minutes), seconds=seconds)


@dataclass
class Day:
    """The store's gateway and staff, and the hub's clock."""

    runtime: HubRuntime
    client: httpx.AsyncClient
    gateway: PlainGateway
    clock: list[datetime]
    stream: uuid.UUID = field(default_factory=uuid.uuid4)
    seqs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    last_seq: int = 0
    levels: dict[int, int] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)

    def event(self, kind: str, payload: dict[str, Any], when: datetime, device_id: str) -> wire.Event:
        self.last_seq = next(self.seqs)
        return wire.Event(
            event_id=uuid.uuid4(),
            store_id=STORE,
            gateway_id=GATEWAY,
            stream=self.stream,
            seq=self.last_seq,
            device_id=device_id,
            kind=kind,
            ts=when,
            payload=payload,
        )

    async def send(self, *events: wire.Event) -> None:
        """Publish a batch at the time of its last event and wait for the hub's ack of it."""
        self.clock[0] = max(self.clock[0], events[-1].ts)
        batch = wire.EventBatch(store_id=STORE, gateway_id=GATEWAY, sent_at=self.clock[0], events=list(events))
        self.gateway.publish(wire.topic(STORE, GATEWAY, wire.Channel.EVENTS), wire.encode(batch))
        ack_topic = wire.topic(STORE, GATEWAY, wire.Channel.ACK)

        async def acked() -> bool:
            acks = [wire.decode(wire.Ack, p) for p in self.gateway.received.on(ack_topic)]
            return any(a.stream == self.stream and a.through_seq >= self.last_seq for a in acks)

        await eventually(acked, timeout=20, what=f"the hub's ack of seq {self.last_seq}")

    async def status(self, online: bool, when: datetime) -> None:
        self.clock[0] = when
        message = wire.GatewayStatus(
            store_id=STORE, gateway_id=GATEWAY, online=online, reason="birth" if online else "lost", ts=when
        )
        self.gateway.publish(wire.topic(STORE, GATEWAY, wire.Channel.STATUS), wire.encode(message), retain=True)

    async def tick(self, when: datetime) -> None:
        self.clock[0] = when
        assert self.runtime.operations is not None
        await self.runtime.operations.tick()

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def _result(self, command: wire.Command, status: str, detail: str) -> None:
        result = wire.CommandResult.model_validate(
            {
                "command_id": command.command_id,
                "store_id": STORE,
                "gateway_id": GATEWAY,
                "status": status,
                "detail": detail,
                "ts": self.clock[0],
            }
        )
        self.gateway.publish(wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS), wire.encode(result))

    def _print_commands(self) -> list[wire.Command]:
        topic = wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS)
        commands = [wire.decode(wire.Command, payload) for payload in self.gateway.received.on(topic)]
        for command in commands:
            assert (command.name, command.device_id) == ("print", "receipt-printer")
        return commands

    async def answer_prints(self) -> int:
        """The gateway prints each pick list it is sent and says so, as its durable print queue does: "accepted"
        once stored, "done" once printed, and "accepted" once more after it (published again on a reconnect
        before the broker had acknowledged it), which must not undo the "done"."""
        answered = 0
        for command in self._print_commands():
            if str(command.command_id) in self.answered:
                continue
            self._result(command, "accepted", "stored on the gateway, waiting for printer receipt-printer")
            lines = command.args["lines"]
            assert isinstance(lines, list)
            self._result(command, "done", f"printed {len(lines)} lines")
            self._result(command, "accepted", "stored on the gateway, waiting for printer receipt-printer")
            self.answered.add(str(command.command_id))
            answered += 1
        return answered

    async def accept_prints(self) -> None:
        """The gateway stores the pick lists it has not answered yet: its printer is off."""
        for command in self._print_commands():
            if str(command.command_id) not in self.answered:
                self._result(command, "accepted", "stored on the gateway, waiting for printer receipt-printer")
                self.answered.add(str(command.command_id))

    async def open_tasks(self) -> list[dict[str, Any]]:
        return list((await self.get(f"/api/v1/stores/{STORE}/restock-tasks", status="open"))["items"])


async def _all_in(probe: Callable[[], Awaitable[set[str]]], wanted: set[str]) -> bool:
    return wanted <= await probe()


def shelf_change(slot: int, delta: int, count: int, sku: str) -> dict[str, Any]:
    return {"slot": slot, "sku": sku, "delta": delta, "count": count, "weight_g": 50.0 * count}


def checkout(code: str) -> dict[str, Any]:
    return {"code": code, "symbology": "code128", "mode": "checkout", "quantity": 1}


@contextlib.asynccontextmanager
async def running_day(database_url: str, mqtt_settings: MqttSettings) -> AsyncIterator[Day]:
    clock = [at("07:50")]
    settings = load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        operations={"rules_tick_s": 60},  # the test ticks at the moments that matter
        accept_unknown_gateways=True,
    )
    app = create_app(settings, clock=lambda: clock[0])
    gateway = PlainGateway(mqtt_settings, client_id=f"{GATEWAY}-{uuid.uuid4().hex[:6]}")
    try:
        gateway.subscribe(wire.topic(STORE, GATEWAY, wire.Channel.ACK))
        gateway.subscribe(wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS))
        gateway.subscribe("storegate/alerts/#")
        async with lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                client.headers["Authorization"] = f"Bearer {await make_token(app.state.runtime, 'admin')}"
                yield Day(runtime=app.state.runtime, client=client, gateway=gateway, clock=clock)
    finally:
        gateway.close()


def planned_baskets() -> list[list[str]]:
    """The first real baskets, each as the codes the till scans (a code once per unit, at most 3)."""
    data = shared_data_dir()
    assert data is not None, "the real retail data is missing (set STOREGATE_SHARED_DATA to the shared/data folder)"
    replayer = BasketReplayer(path=data / RETAIL_FILE, max_units_per_line=3)
    baskets = []
    for basket in itertools.islice(replayer.baskets(), BASKETS):
        baskets.append([line.stock_code for line in basket.lines for _ in range(min(line.quantity, 3))])
    return baskets


async def import_csv(client: httpx.AsyncClient, path: str, text: str) -> dict[str, Any]:
    response = await client.post(path, content=text.encode(), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@pytest.mark.timeout(180)
async def test_a_store_day(database_url: str, mqtt_settings: MqttSettings) -> None:
    baskets = planned_baskets()
    units = Counter(code for basket in baskets for code in basket)
    shelf_skus = [code for code, _ in units.most_common(3)]  # the best sellers are on the smart shelf
    best = shelf_skus[0]

    async with running_day(database_url, mqtt_settings) as day:
        client = day.client
        # ---------------------------------------------------------------- the catalog, from real data
        report = await import_csv(
            client, "/api/v1/catalog/skus/import", write_csv(SKUS, skus_from_invoices(invoice_lines()))
        )
        assert report["created"] == 1587
        hours = ["08:00-20:00"] * 7
        await import_csv(
            client,
            "/api/v1/catalog/stores/import",
            table(
                ["store_id", "name", "timezone", "currency", "mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                [[STORE, "Market Street", "Europe/London", "GBP", *hours]],
            ),
        )
        await import_csv(
            client,
            "/api/v1/catalog/planogram/import",
            table(
                ["store_id", "shelf_id", "slot", "sku_id", "capacity", "min_quantity"],
                [[STORE, SHELF, n, sku, CAPACITY, MINIMUM] for n, sku in enumerate(shelf_skus, start=1)],
            ),
        )
        await import_csv(
            client,
            "/api/v1/catalog/stock-policies/import",
            table(["store_id", "sku_id", "max_stock", "reorder_point"], [[STORE, sku, 48, 20] for sku in shelf_skus]),
        )
        # This store treats 5 missing items as too many (the chain's default is 10).
        response = await client.put(
            f"/api/v1/stores/{STORE}/rules/shrink-over-threshold",
            json={"max_units": 5},
            headers={"X-Storegate-Actor": "ops.lee"},
        )
        assert response.status_code in (200, 201), response.text

        # ---------------------------------------------------------------- opening
        await day.status(True, at("07:55"))
        received = [
            day.event(
                "scan.receiving",
                {"code": code, "symbology": "code128", "mode": "receiving", "quantity": 24},
                at("08:00", n),
                "till-1-scanner",
            )
            for n, code in enumerate(sorted(units))
        ]
        await day.send(*received)
        await day.send(
            *[
                day.event(
                    "shelf.stock", {"slot": n, "sku": sku, "count": CAPACITY, "weight_g": 600.0}, at("08:05"), SHELF
                )
                for n, sku in enumerate(shelf_skus, start=1)
            ]
        )
        day.levels = {n: CAPACITY for n in range(1, 4)}

        # ---------------------------------------------------------------- sales, a shelf running low, refills
        prints = refills = 0
        for index, basket in enumerate(baskets):
            start = at("09:00") + timedelta(minutes=13 * index)
            events = []
            second = itertools.count()
            for code in basket:
                if code in shelf_skus:
                    slot = shelf_skus.index(code) + 1
                    day.levels[slot] -= 1
                    events.append(
                        day.event(
                            "shelf.pick",
                            shelf_change(slot, -1, day.levels[slot], code),
                            start + timedelta(seconds=next(second)),
                            SHELF,
                        )
                    )
            for code in basket:
                events.append(
                    day.event(
                        "scan.sale", checkout(code), start + timedelta(seconds=60 + next(second)), "till-1-scanner"
                    )
                )
            await day.send(*events)
            for task in await day.open_tasks():  # staff see the printed pick list and refill the slot

                async def printed(task_id: str = task["task_id"]) -> bool:
                    await day.answer_prints()
                    tasks = await day.get(f"/api/v1/stores/{STORE}/restock-tasks")
                    return any(t["task_id"] == task_id and t["print_status"] == "printed" for t in tasks["items"])

                await eventually(printed, timeout=20, what=f"the pick list of task {task['task_id']} printed")
                prints += 1
                slot = task["slot"]
                put = CAPACITY - day.levels[slot]
                day.levels[slot] = CAPACITY
                await day.send(
                    day.event(
                        "shelf.put",
                        shelf_change(slot, put, CAPACITY, task["sku_id"]),
                        start + timedelta(minutes=8),
                        SHELF,
                    )
                )
                refills += 1
        assert prints >= 1, "the scenario must run a shelf low at least once"

        # ---------------------------------------------------------------- a stock count
        expected = {code: 24 - units[code] for code in units}
        await day.send(
            day.event(
                "scan.count",
                {"code": best, "symbology": "code128", "mode": "stock_count", "quantity": expected[best] - 1},
                at("12:30"),
                "till-1-scanner",
            )
        )
        expected[best] -= 1

        # ---------------------------------------------------------------- the freezer door left open
        readings = []
        for minute in range(0, 61):
            when = at("13:50") + timedelta(minutes=minute)
            if when < at("14:00"):
                value = -20.0
            elif when <= at("14:20"):
                value = round(-20.0 + 0.6 * (when - at("14:00")).total_seconds() / 60, 1)
            else:
                value = max(-20.0, round(-8.0 - (when - at("14:20")).total_seconds() / 60, 1))
            readings.append((when, value))
        door_events = {at("14:00"): True, at("14:20"): False}
        for when, value in readings:
            batch = []
            if when in door_events:
                opened = door_events[when]
                batch.append(
                    day.event(
                        "door.opened" if opened else "door.closed",
                        {"zone": "freezer-1", "open": opened},
                        when - timedelta(seconds=1),
                        "freezer-1-door",
                    )
                )
            batch.append(
                day.event(
                    "environment.reading",
                    {"quantity": "temperature", "value": value, "unit": "Cel", "zone": "freezer-1"},
                    when,
                    "freezer-1",
                )
            )
            await day.send(*batch)

        # ---------------------------------------------------------------- a shelf sweep, then shrink
        sweep_slot = 3
        sweep_sku = shelf_skus[sweep_slot - 1]
        sweep = []
        for n in range(9):
            day.levels[sweep_slot] -= 1
            sweep.append(
                day.event(
                    "shelf.pick",
                    shelf_change(sweep_slot, -1, day.levels[sweep_slot], sweep_sku),
                    at("15:00", 2 * n),
                    SHELF,
                )
            )
        await day.send(*sweep)
        await day.tick(at("15:59"))
        shrink_alerts = [
            a
            for a in (await day.get("/api/v1/alerts", store_id=STORE))["items"]
            if a["rule_kind"] == "shrink_over_threshold"
        ]
        assert shrink_alerts == []  # not an hour yet
        await day.tick(at("16:01"))

        # ---------------------------------------------------------------- after hours
        await day.send(
            day.event(
                "camera.snapshot", {"snapshot_ref": "snapshots/cam-2/2025-03-01T23-29-50.jpg"}, at("23:29", 50), "cam-2"
            ),
            day.event("motion.detected", {"zone": "sales-floor"}, at("23:30"), "pir-1"),
        )

        # ================================================================ what the hub made of it
        stock = {i["sku_id"]: i for i in (await day.get(f"/api/v1/stores/{STORE}/stock"))["items"]}
        assert {sku: i["on_hand"] for sku, i in stock.items()} == expected
        assert (stock[best]["last_variance"], stock[best]["variance_total"]) == (-1, -1)
        levels = {i["slot"]: i["quantity"] for i in (await day.get(f"/api/v1/stores/{STORE}/shelf-levels"))["items"]}
        assert levels == day.levels

        tasks = (await day.get(f"/api/v1/stores/{STORE}/restock-tasks"))["items"]
        closed = [t for t in tasks if t["status"] == "closed"]
        still_open = [t for t in tasks if t["status"] == "open"]
        assert len(closed) == refills == prints
        assert all(t["print_status"] == "printed" and t["level_at_close"] == CAPACITY for t in closed)
        # The sweep left slot 3 at 3, below the minimum: a task waits, its pick list sent to the gateway.
        assert [(t["slot"], t["level_at_open"], t["quantity"]) for t in still_open] == [
            (sweep_slot, day.levels[sweep_slot], CAPACITY - day.levels[sweep_slot])
        ]

        async def pick_list_sent() -> bool:
            return [t["print_status"] for t in await day.open_tasks()] == ["sent"]

        await eventually(pick_list_sent, timeout=20, what="the sweep's pick list sent to the gateway")
        # After hours the printer is off: the gateway keeps the pick list and says so; the task shows it queued.
        await day.accept_prints()

        async def pick_list_queued() -> bool:
            return [(t["print_status"], t["print_detail"]) for t in await day.open_tasks()] == [
                ("queued", "stored on the gateway, waiting for printer receipt-printer")
            ]

        await eventually(pick_list_queued, timeout=20, what="the sweep's pick list queued on the gateway")

        alerts = (await day.get("/api/v1/alerts", store_id=STORE))["items"]
        summary = sorted((a["rule_id"], a["subject"], a["status"], a["severity"], a["opened_at"]) for a in alerts)

        def iso(t: datetime) -> str:
            return t.isoformat().replace("+00:00", "Z")

        assert summary == sorted(
            [
                ("door-held-open", "door:freezer-1-door/freezer-1", "resolved", "warning", iso(at("14:04", 59))),
                ("freezers", "zone:freezer-1", "resolved", "critical", iso(at("14:19"))),
                ("shelf-sweep", f"slot:{SHELF}/{sweep_slot}", "open", "critical", iso(at("15:00", 10))),
                ("shrink-over-threshold", f"sku:{sweep_sku}", "open", "warning", iso(at("16:01"))),
                ("after-hours-motion", "camera:pir-1", "open", "critical", iso(at("23:30"))),
            ]
        )
        motion = next(a for a in alerts if a["rule_id"] == "after-hours-motion")
        assert motion["snapshot_ref"] == "snapshots/cam-2/2025-03-01T23-29-50.jpg"

        async with day.runtime.sessions() as session:
            (excursion,) = (await session.execute(select(ExcursionRow))).scalars().all()
        freezer_alert = next(a for a in alerts if a["rule_id"] == "freezers")
        assert (excursion.zone, excursion.direction, excursion.limit_value, excursion.peak) == (
            "freezer-1",
            "high",
            -18.0,
            -8.0,
        )
        assert (excursion.started_at, excursion.ended_at, excursion.peak_at) == (at("14:04"), at("14:31"), at("14:20"))
        assert (excursion.duration_s, excursion.alert_id) == (27 * 60.0, freezer_alert["alert_id"])
        shrink = await day.get("/api/v1/alerts", store_id=STORE, rule_id="shrink-over-threshold")
        assert "9 units" in shrink["items"][0]["message"]

        suggestions = await day.get(f"/api/v1/stores/{STORE}/reorder-suggestions")
        by_sku = {s["sku_id"]: s for s in suggestions["items"]}
        for sku in shelf_skus:
            if expected[sku] <= 20:
                assert by_sku[sku]["quantity"] == 48 - expected[sku]
            else:
                assert sku not in by_sku

        # A video-management system subscribed to the alert topic heard of every alert opening.
        async def announced() -> set[str]:
            notices = [
                json.loads(p)
                for m in day.gateway.received.messages
                if m.topic.startswith("storegate/alerts/")
                for p in [bytes(m.payload)]
            ]
            return {n["alert_id"] for n in notices if n["event"] == "alert.opened"}

        await eventually(
            lambda: _all_in(announced, {a["alert_id"] for a in alerts}),
            timeout=20,
            what="every opened alert on storegate/alerts/#",
        )

        # People take over: acknowledge the intrusion, resolve it with a note.
        alert_id = motion["alert_id"]
        anna = {"Authorization": f"Bearer {await make_token(day.runtime, 'ops', name='ops.anna')}"}
        ben = {"Authorization": f"Bearer {await make_token(day.runtime, 'ops', name='ops.ben')}"}
        response = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}, headers=anna)
        assert response.status_code == 200, response.text
        response = await client.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "cleaner"}, headers=anna)
        assert response.status_code == 200
        history = [(h["action"], h["actor"]) for h in response.json()["history"]]
        assert history == [("opened", "system"), ("acknowledged", "token:ops.anna"), ("resolved", "token:ops.anna")]
        response = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}, headers=ben)
        assert response.status_code == 409
