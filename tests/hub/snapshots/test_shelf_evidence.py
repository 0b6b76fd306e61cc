"""A shelf swept while the store is closed: the hub's alert carries a still of the shelf's camera, faces blurred
on the gateway, which ops may open and a viewer may not.

Every part is real: the shelf controller's firmware on a pty, the camera driver reading a video file that OpenCV
wrote (a face in view), the agent with its snapshot spool and uploader, Mosquitto with TLS and the gateway's
certificate from the hub's CA, and the hub with its gateway listener on loopback.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select

from device_drivers.camera.privacy import FaceBlurrer
from device_drivers.camera.simulator import Clip
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.simulated.pty import PtyPort
from edge_agent.agent import EdgeAgent
from hub.db.models import StoredEvent
from launcher.broker import free_port
from storegate import wire
from tests.conftest import eventually
from tests.device_drivers.camera.clips import read_video
from tests.edge_agent.conftest import running
from tests.hub.conftest import running_hub
from tests.hub.snapshots.test_gateway_snapshots import (
    SKUS_CSV,
    STORES_CSV,
    agent_config,
    enrol,
    hub_settings_for,
    tls,  # noqa: F401 (a fixture)
)
from tests.tls_broker import HOST, STORE_A, TlsBroker

# store-a is closed all day (STORES_CSV gives it no opening hours); shelf-7's slot 3 holds razor blades, 50 g each,
# and the planogram names the aisle camera as the one that watches it.
PLANOGRAM_CSV = "store_id,shelf_id,slot,sku_id,capacity,min_quantity,camera_id\nstore-a,shelf-7,3,A,20,2,cam-aisle\n"
BLADE_G = 50.0


async def test_a_shelf_swept_after_hours_raises_an_alert_with_a_face_blurred_still_for_ops_only(
    tls: TlsBroker,  # noqa: F811
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    video = Clip(frames=30, faces=[(320, 220, 90)]).write(tmp_path / "aisle.avi")
    # The scene the camera sees does show a face: the detector finds it in the video as written.
    assert FaceBlurrer().detect(read_video(video)[0])

    port = free_port(HOST)
    shelf_port = PtyPort().open()
    slots = [SlotSpec(BLADE_G)] * 2 + [SlotSpec(BLADE_G, 12)] + [SlotSpec(BLADE_G)] * 5
    shelf = ShelfSimulator(port=shelf_port, slots=slots, rng=random.Random(11))
    devices: list[dict[str, Any]] = [
        {
            "device_id": "shelf-7",
            "profile": "storegate-shelf-v1",
            "address": shelf_port.port,
            "settings": {"slots": {"3": {"unit_weight_g": BLADE_G}}, "stock_interval_s": 0.5},
        },
        {
            "device_id": "cam-aisle",
            "profile": "ip-camera-rtsp",
            "address": str(video),
            "settings": {"source": str(video), "loop": True, "watches_shelves": ["shelf-7"]},
        },
    ]
    config = agent_config(tls, tmp_path, STORE_A, port)
    config = config.model_validate({**config.model_dump(), "devices": devices})
    agent = EdgeAgent(config=config, port_lister=None)
    shelf_task = asyncio.create_task(shelf.run())
    try:
        async with running_hub(hub_settings_for(tls, sqlite_url, tmp_path, port)) as hub:
            await enrol(hub, STORE_A)
            for kind, text in (("stores", STORES_CSV), ("skus", SKUS_CSV), ("planogram", PLANOGRAM_CSV)):
                answer = await hub.client.post(
                    f"/api/v1/catalog/{kind}/import", content=text, headers={"Content-Type": "text/csv"}
                )
                assert answer.status_code == 200, answer.text

            async def devices_up() -> bool:
                supervisors = agent.devices.supervisors
                return len(supervisors) == 2 and all(s.up for s in supervisors) and bool(shelf.commands)

            async def shelf_reported() -> bool:  # the driver has settled on the full slot
                async with hub.runtime.sessions() as session:
                    found = await session.scalars(
                        select(StoredEvent.event_id).where(StoredEvent.kind == wire.EventKind.SHELF_STOCK).limit(1)
                    )
                    return found.first() is not None

            async def sweep_alert_with_still() -> dict[str, Any] | None:
                listed = await hub.client.get("/api/v1/alerts", params={"store_id": STORE_A.store_id})
                sweeps = [a for a in listed.json()["items"] if a["rule_id"] == "shelf-sweep"]
                return sweeps[0] if sweeps and sweeps[0]["snapshot_ref"] else None

            async def still_event() -> list[dict[str, Any]]:
                async with hub.runtime.sessions() as session:
                    found = await session.scalars(
                        select(StoredEvent.payload).where(StoredEvent.kind == wire.EventKind.CAMERA_SNAPSHOT)
                    )
                    return list(found)

            async with running(agent):
                await eventually(devices_up, timeout=30, what="the shelf and the camera up")
                await eventually(shelf_reported, timeout=30, what="the shelf's first stock report at the hub")
                shelf.pick(3, 8, touch_s=0.3)  # eight packs of blades in one grab, with the store closed
                found = await eventually(sweep_alert_with_still, timeout=30, what="the sweep alert with its still")
                assert found is not None
                alert = found
                [snapshot] = await eventually(still_event, timeout=30, what="the camera's still event at the hub")

            url = f"/api/v1/stores/{STORE_A.store_id}/snapshots/{alert['snapshot_ref']}"
            async with await hub.client_as("ops") as ops:
                fetched = await ops.get(url)
            async with await hub.client_as("viewer") as viewer:
                refused = await viewer.get(url)
    finally:
        shelf_task.cancel()
        await asyncio.gather(shelf_task, return_exceptions=True)
        shelf_port.unplug()

    assert alert["subject"] == "slot:shelf-7/3"
    assert alert["severity"] == "critical"
    assert snapshot["snapshot_ref"] == alert["snapshot_ref"]
    assert (snapshot["reason"], snapshot["shelf_id"], snapshot["slot"]) == ("shelf_pick", "shelf-7", 3)
    assert snapshot["faces_blurred"] is True
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/jpeg"
    still = cv2.imdecode(np.frombuffer(fetched.content, np.uint8), cv2.IMREAD_COLOR)
    assert still is not None
    assert still.shape[:2] == (480, 640)
    assert FaceBlurrer().detect(still) == [], "the face left the gateway blurred"
    assert refused.status_code == 403
