"""The gateway's snapshot spool: stills kept by their hash within a quota, events that carry the reference, and
the cameras asked for a still when a shelf they watch reports a pick. (Uploads to a real hub: tests/hub/snapshots.)"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from PIL import Image
from pydantic import JsonValue

from device_drivers.base import DeviceUnavailableError, Driver, DriverHealth, DriverState, Reading
from edge_agent.agent import EdgeAgent
from edge_agent.config import SnapshotsConfig
from edge_agent.errors import InvalidReadingError
from edge_agent.snapshots import SnapshotSpool, spool_directory
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually, file_mode
from tests.edge_agent.conftest import T0, make_config, running


def jpeg(shade: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG of one grey shade (different shades, different bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, shade, shade)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_still_is_kept_once_by_its_hash_in_private_files(tmp_path: Path) -> None:
    spool = SnapshotSpool(directory=tmp_path / "spool", quota_bytes=1024 * 1024).open()
    data = jpeg(10)
    ref = spool.store(data, device_id="cam-1", taken_at=T0)
    assert ref == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "spool" / f"{ref}.jpg").read_bytes() == data
    assert file_mode(tmp_path / "spool") == "0700"
    assert file_mode(tmp_path / "spool" / f"{ref}.jpg") == "0600"
    assert spool.store(data) == ref  # the same still again: stored once
    assert spool.stats.spooled == 1
    [pending] = spool.pending()
    assert (pending.ref, pending.size, pending.device_id, pending.taken_at) == (ref, len(data), "cam-1", T0.isoformat())


def test_a_full_spool_evicts_the_oldest_stills_and_counts_them(tmp_path: Path) -> None:
    stills = [jpeg(shade) for shade in range(0, 250, 25)]
    quota = sum(len(s) for s in stills[:4])  # room for about four
    spool = SnapshotSpool(directory=tmp_path / "spool", quota_bytes=quota).open()
    refs = [spool.store(s) for s in stills]
    kept = [p.ref for p in spool.pending()]
    assert kept == refs[-len(kept) :], "the newest are kept, in order"
    assert spool.stats.evicted == len(stills) - len(kept) > 0
    assert spool.stats.bytes <= quota
    assert sorted(p.stem for p in (tmp_path / "spool").glob("*.jpg")) == sorted(kept)
    assert sorted(p.stem for p in (tmp_path / "spool").glob("*.json")) == sorted(kept)


def test_a_reopened_spool_finds_what_waits_and_clears_cut_writes(tmp_path: Path) -> None:
    first = SnapshotSpool(directory=tmp_path / "spool", quota_bytes=1024 * 1024).open()
    refs = [first.store(jpeg(1)), first.store(jpeg(200))]
    (tmp_path / "spool" / ".abc.jpg.123.tmp").write_bytes(b"half a still")
    again = SnapshotSpool(directory=tmp_path / "spool", quota_bytes=1024 * 1024).open()
    assert sorted(p.ref for p in again.pending()) == sorted(refs)
    assert again.stats.waiting == 2
    assert not list((tmp_path / "spool").glob(".*.tmp"))
    again.uploaded(refs[0])
    assert [p.ref for p in again.pending()] == [refs[1]]
    assert not (tmp_path / "spool" / f"{refs[0]}.jpg").exists()


def test_spool_refuses_empty_and_oversized_stills(tmp_path: Path) -> None:
    spool = SnapshotSpool(directory=tmp_path / "spool", quota_bytes=1000).open()
    for bad in (b"", b"x" * 1001):
        with pytest.raises(ValueError, match=r"empty|larger"):
            spool.store(bad)


def test_the_spool_sits_next_to_the_outbox_unless_configured(tmp_path: Path) -> None:
    assert spool_directory(SnapshotsConfig(), tmp_path / "outbox.sqlite3") == tmp_path / "snapshots"
    assert spool_directory(SnapshotsConfig(dir=tmp_path / "x"), tmp_path / "o.sqlite3") == tmp_path / "x"


def test_uploads_need_the_gateway_certificate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mqtt\.cert_file"):
        make_config(tmp_path, MqttSettings(), snapshots={"hub_url": "https://hub.example.net:8443"})


async def stored_payloads(agent: EdgeAgent, kind: str) -> list[dict[str, JsonValue]]:
    """The payloads of ``kind`` in the agent's outbox, oldest first."""
    outbox = agent.outbox
    assert outbox is not None
    fields = [row.fields() for row in await outbox.read_after(0, 1000)]
    return [f["payload"] for f in fields if f["kind"] == kind and isinstance(f["payload"], dict)]


async def test_a_reading_with_an_attachment_is_recorded_with_its_snapshot_ref(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings), port_lister=None)
    still = jpeg(128)
    async with running(agent):
        await eventually(lambda: outbox_open(agent), what="the outbox open")
        await agent.record(
            Reading(
                device_id="cam-1",
                kind=wire.EventKind.CAMERA_MOTION,
                ts=T0,
                payload={"zone": "aisle-3", "area_ratio": 0.2},
                attachment=still,
            )
        )
        await agent.flush()
        [payload] = await stored_payloads(agent, wire.EventKind.CAMERA_MOTION)
    ref = hashlib.sha256(still).hexdigest()
    assert payload == {"zone": "aisle-3", "area_ratio": 0.2, "snapshot_ref": ref}
    assert (tmp_path / "snapshots" / f"{ref}.jpg").read_bytes() == still
    assert agent.spool.stats.spooled == 1


async def test_an_event_is_never_lost_for_its_still(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    """A still that cannot be kept (larger than the whole quota here) costs the still, not the event."""
    config = make_config(tmp_path, mqtt_settings, snapshots={"quota_mb": 1})
    agent = EdgeAgent(config=config, port_lister=None)
    async with running(agent):
        await eventually(lambda: outbox_open(agent), what="the outbox open")
        await agent.record(
            Reading(
                device_id="cam-1",
                kind=wire.EventKind.CAMERA_TAMPER,
                ts=T0,
                payload={"reason": "covered"},
                attachment=b"\xff\xd8" + b"x" * (2 * 1024 * 1024),
            )
        )
        await agent.flush()
        [payload] = await stored_payloads(agent, wire.EventKind.CAMERA_TAMPER)
        # A camera.snapshot is nothing without its still: refused and counted like any invalid reading.
        with pytest.raises(InvalidReadingError, match="snapshot_ref"):
            await agent.record(
                Reading(
                    device_id="cam-1",
                    kind=wire.EventKind.CAMERA_SNAPSHOT,
                    ts=T0,
                    payload={"reason": "requested"},
                    attachment=b"",
                )
            )
    assert payload == {"reason": "covered"}
    assert agent.spool.stats.failed == 2


async def outbox_open(agent: EdgeAgent) -> bool:
    """Whether the running agent has opened its outbox (and its spool)."""
    return agent.outbox is not None


# ---------------------------------------------------------------------- a shelf pick asks its cameras


@dataclass(frozen=True)
class CameraSettings:
    """What a camera driver's settings say about the shelves it watches (the real class is the camera driver's);
    a double without them is no camera and watches no shelf."""

    watches_shelves: tuple[str, ...] = ()


@dataclass
class DriverDouble:
    """A device that yields the readings put in its queue; a camera answers ``snapshot`` with a still."""

    device_id: str
    settings: CameraSettings | None = None
    queue: asyncio.Queue[Reading] = field(default_factory=asyncio.Queue)
    commands: list[wire.Command] = field(default_factory=list)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        while True:
            yield await self.queue.get()

    async def execute(self, command: wire.Command) -> wire.CommandResult:
        self.commands.append(command)
        if self.settings is None:
            raise DeviceUnavailableError("not a camera")
        shade = 40 + 10 * len(self.commands)
        payload = {"reason": command.args["reason"], "shelf_id": command.args["shelf_id"], "slot": command.args["slot"]}
        # No snapshot_ref: the driver hands over the bytes, the agent's spool names them.
        self.queue.put_nowait(
            Reading(
                device_id=self.device_id,
                kind=wire.EventKind.CAMERA_SNAPSHOT,
                ts=command.issued_at,
                payload=payload,
                attachment=jpeg(shade),
            )
        )
        return wire.CommandResult(
            command_id=command.command_id,
            store_id=command.store_id,
            gateway_id=command.gateway_id,
            status="done",
            ts=command.issued_at,
        )

    def watches_shelf(self, shelf_id: str) -> bool:
        return self.settings is not None and shelf_id in self.settings.watches_shelves

    def health(self) -> DriverHealth:
        return DriverHealth(state=DriverState.UP)


async def test_a_shelf_pick_asks_each_camera_that_watches_the_shelf_for_a_still(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    doubles = {
        "shelf-7": DriverDouble("shelf-7"),
        "cam-aisle": DriverDouble("cam-aisle", CameraSettings(watches_shelves=("shelf-7", "shelf-8"))),
        "cam-door": DriverDouble("cam-door", CameraSettings(watches_shelves=("shelf-9",))),
    }
    devices = [
        {
            "device_id": device_id,
            "driver": "simulated-sequence",
            "kind": "test.placeholder",
            "count": 1,
            "rate_per_s": 1,
        }
        for device_id in doubles
    ]
    config = make_config(tmp_path, mqtt_settings, devices=devices)

    def factory(device: object) -> Driver:
        return doubles[device.device_id]  # type: ignore[attr-defined]

    agent = EdgeAgent(config=config, driver_factory=factory, port_lister=None)
    async with running(agent):

        async def devices_open() -> bool:
            return len(agent.devices.supervisors) == 3 and all(s.driver is not None for s in agent.devices.supervisors)

        async def still_spooled() -> bool:
            return agent.spool.stats.spooled == 1

        await eventually(devices_open, what="the devices open")
        for delta, ts in ((-2, T0), (+1, T0 + timedelta(seconds=5))):  # a put asks for nothing
            doubles["shelf-7"].queue.put_nowait(
                Reading(
                    device_id="shelf-7",
                    kind=wire.EventKind.SHELF_PICK if delta < 0 else wire.EventKind.SHELF_PUT,
                    ts=ts,
                    payload={"slot": 3, "delta": delta, "count": 5, "weight_g": 500.0},
                )
            )
        await eventually(still_spooled, what="the still spooled")
        await agent.flush()
        snapshots = await stored_payloads(agent, wire.EventKind.CAMERA_SNAPSHOT)
    [command] = doubles["cam-aisle"].commands
    assert (command.name, command.device_id) == ("snapshot", "cam-aisle")
    assert command.args == {"reason": "shelf_pick", "shelf_id": "shelf-7", "slot": 3}
    assert doubles["cam-door"].commands == []
    assert doubles["shelf-7"].commands == []
    [snapshot] = snapshots
    assert (snapshot["reason"], snapshot["shelf_id"], snapshot["slot"]) == ("shelf_pick", "shelf-7", 3)
    assert isinstance(snapshot["snapshot_ref"], str)
    assert (tmp_path / "snapshots" / f"{snapshot['snapshot_ref']}.jpg").exists()


async def test_unusable_tls_files_stop_the_uploads_not_the_agent(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    (tmp_path / "gateway.crt").write_text("not a certificate")
    (tmp_path / "gateway.key").write_text("not a key")
    (tmp_path / "gateway.key").chmod(0o600)
    mqtt = mqtt_settings.model_copy(
        update={"cert_file": tmp_path / "gateway.crt", "key_file": tmp_path / "gateway.key"}
    )
    config = make_config(tmp_path, mqtt, snapshots={"hub_url": "https://127.0.0.1:9"})
    agent = EdgeAgent(config=config, port_lister=None)
    async with running(agent):
        await eventually(lambda: outbox_open(agent), what="the outbox open")
        still = jpeg(77)
        await agent.record(
            Reading(device_id="cam-1", kind=wire.EventKind.CAMERA_MOTION, ts=T0, payload={}, attachment=still)
        )
        await agent.flush()
        [payload] = await stored_payloads(agent, wire.EventKind.CAMERA_MOTION)
        problems = agent.health().problems
    assert payload == {"snapshot_ref": hashlib.sha256(still).hexdigest()}
    assert [p.ref for p in agent.spool.pending()] == [payload["snapshot_ref"]], "kept for when the files are fixed"
    # The hub hears why, in the gateway's health.
    [said] = [p for p in problems if p.startswith("camera stills")]
    assert said.startswith("camera stills cannot be uploaded: the gateway's TLS files cannot be used (")
    assert said.endswith("; 1 kept on the gateway")
