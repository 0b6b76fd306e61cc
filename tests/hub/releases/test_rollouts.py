"""Releases and rollouts on a running hub: admins upload checked wheels, a rollout goes stage by stage, halts past
its threshold and says why, pauses, resumes and cancels; every change audited (issue 15)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.commands.status import set_command_status
from hub.db.models import OutgoingCommand
from hub.fleet import registry
from hub.settings import HubSettings
from storegate import wire
from tests.hub.conftest import RunningHub, running_hub
from tests.hub.releases.wheels import fake_wheel

GATEWAYS = [("store-a", "gw-1"), ("store-a", "gw-2"), ("store-b", "gw-1")]
WHEEL = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def api_hub(hub_settings: HubSettings, tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A running hub (no runner passes of its own: the test runs them) with three enrolled gateways."""
    settings = type(hub_settings).model_validate(
        {
            **hub_settings.model_dump(),
            "releases": {"directory": tmp_path / "releases", "max_bytes": 64 * 1024, "poll_s": 300},
        }
    )
    async with running_hub(settings) as running:
        async with running.runtime.sessions() as session:
            for store_id, gateway_id in GATEWAYS:
                await registry.enrol(session, store_id, gateway_id, by="tests", now=wire.utc_now())
            await session.commit()
        yield running


async def audit_actions(hub: RunningHub) -> list[dict[str, Any]]:
    response = await hub.client.get("/api/v1/audit", params={"limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_an_admin_uploads_a_release_once_and_what_is_not_one_is_refused(
    api_hub: RunningHub, tmp_path: Path
) -> None:
    client = api_hub.client
    data = fake_wheel("0.2.0")
    created = await client.post("/api/v1/releases", content=data, headers=WHEEL)
    assert created.status_code == 201, created.text
    assert created.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "releases" / "storegate-0.2.0-py3-none-any.whl").read_bytes() == data
    listed = (await client.get("/api/v1/releases")).json()["releases"]
    assert [r["version"] for r in listed] == ["0.2.0"]

    again = await client.post("/api/v1/releases", content=fake_wheel("0.2.0", members={"storegate/x.py": b"1"}))
    assert again.status_code == 409
    assert "exists already, uploaded as another file" in again.json()["detail"]
    forged = await client.post("/api/v1/releases", content=fake_wheel("0.3.0", members={"../x": b""}))
    assert forged.status_code == 422
    assert "outside its directory" in forged.json()["message"]
    other = await client.post("/api/v1/releases", content=fake_wheel("0.3.0", name="requests"))
    assert other.status_code == 422
    huge = await client.post("/api/v1/releases", content=b"PK" + b"\0" * (64 * 1024))
    assert huge.status_code == 413
    assert [r["version"] for r in (await client.get("/api/v1/releases")).json()["releases"]] == ["0.2.0"]
    entries = [e for e in await audit_actions(api_hub) if e["target"] == "release:0.2.0"]
    assert entries
    assert entries[-1]["after"]["sha256"] == hashlib.sha256(data).hexdigest()

    async with await api_hub.client_as("technician") as technician:
        refused = await technician.post("/api/v1/releases", content=fake_wheel("0.4.0"), headers=WHEEL)
    assert refused.status_code == 403


async def _answer(hub: RunningHub, command_ids: list[str], status: str, detail: str) -> None:
    """What the consumer does with the gateways' results (or the gateway listener with their outcomes)."""
    async with hub.runtime.sessions() as session:
        await set_command_status(session, command_ids, status, detail=detail, at=wire.utc_now())
        await session.commit()


async def _commands(hub: RunningHub) -> dict[tuple[str, str], OutgoingCommand]:
    async with hub.runtime.sessions() as session:
        rows = (await session.scalars(select(OutgoingCommand).where(OutgoingCommand.name == "update"))).all()
    return {(row.store_id, row.gateway_id): row for row in rows}


async def test_a_rollout_goes_stage_by_stage_and_halts_past_its_threshold_saying_why(api_hub: RunningHub) -> None:
    client, runner = api_hub.client, api_hub.runtime.rollouts
    assert runner is not None
    data = fake_wheel("0.2.0")
    assert (await client.post("/api/v1/releases", content=data, headers=WHEEL)).status_code == 201
    body = {"version": "0.2.0", "stores": "all", "stages": {"sizes": [1, 100]}, "probation_s": 60}
    created = await client.post("/api/v1/rollouts", json=body)
    assert created.status_code == 201, created.text
    rollout = created.json()
    rollout_id = rollout["rollout_id"]
    assert rollout["stage_counts"] == [1, 2]
    assert [(t["store_id"], t["gateway_id"], t["stage"]) for t in rollout["targets"]] == [
        ("store-a", "gw-1", 0),
        ("store-a", "gw-2", 1),
        ("store-b", "gw-1", 1),
    ]

    await runner.run_once()
    commands = await _commands(api_hub)
    assert list(commands) == [("store-a", "gw-1")]  # the first stage only
    first = commands[("store-a", "gw-1")]
    assert first.device_id is None
    assert first.args == {
        "version": "0.2.0",
        "sha256": hashlib.sha256(data).hexdigest(),
        "download_path": "/api/v1/gateway/releases/0.2.0/wheel",
        "probation_s": 60,
    }
    await runner.run_once()
    assert len(await _commands(api_hub)) == 1  # waits for the stage's outcome

    await _answer(api_hub, [first.command_id], "done", "running 0.2.0; reached the hub and its devices")
    await runner.run_once()
    commands = await _commands(api_hub)
    assert set(commands) == set(GATEWAYS)
    state = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert (state["status"], state["stage"], state["counts"]) == ("running", 1, {"done": 1, "sent": 2})

    failed = commands[("store-b", "gw-1")].command_id
    await _answer(api_hub, [failed], "failed", "rolled back from 0.2.0 to 0.1.0: the new release crashed")
    await runner.run_once()
    state = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert state["status"] == "halted"
    assert "1 gateway(s) failed to update, more than the 0 allowed" in state["reason"]
    target = next(t for t in state["targets"] if t["store_id"] == "store-b")
    assert (target["outcome"], target["detail"]) == (
        "failed",
        "rolled back from 0.2.0 to 0.1.0: the new release crashed",
    )
    metrics = api_hub.runtime.metrics.registry
    assert metrics.get_sample_value("storegate_hub_update_outcomes_total", {"outcome": "done"}) == 1
    assert metrics.get_sample_value("storegate_hub_update_outcomes_total", {"outcome": "failed"}) == 1
    assert metrics.get_sample_value("storegate_hub_rollouts_halted_total") == 1
    halted = [e for e in await audit_actions(api_hub) if e["action"] == "rollout.halted"]
    assert [(e["actor"], e["target"]) for e in halted] == [("system:rollouts", f"rollout:{rollout_id}")]

    assert (await client.post(f"/api/v1/rollouts/{rollout_id}/resume")).status_code == 409
    cancelled = await client.post(f"/api/v1/rollouts/{rollout_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"


async def test_pause_holds_the_next_stage_and_cancel_skips_the_gateways_not_yet_sent(api_hub: RunningHub) -> None:
    client, runner = api_hub.client, api_hub.runtime.rollouts
    assert runner is not None
    assert (await client.post("/api/v1/releases", content=fake_wheel("0.2.0"), headers=WHEEL)).status_code == 201
    body = {
        "version": "0.2.0",
        "stores": "stores",
        "store_ids": ["store-a"],
        "stages": {"unit": "percent", "sizes": [50, 100]},
    }
    rollout_id = (await client.post("/api/v1/rollouts", json=body)).json()["rollout_id"]
    await runner.run_once()
    first = (await _commands(api_hub))[("store-a", "gw-1")]
    second = await client.post("/api/v1/rollouts", json=body)
    assert second.status_code == 409
    assert f"rollout {rollout_id} of 0.2.0 is running" in second.json()["detail"]
    paused = await client.post(f"/api/v1/rollouts/{rollout_id}/pause")
    assert paused.json()["status"] == "paused"
    await _answer(api_hub, [first.command_id], "done", "ok")
    await runner.run_once()
    assert len(await _commands(api_hub)) == 1  # paused: nothing more is sent
    cancelled = (await client.post(f"/api/v1/rollouts/{rollout_id}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"] == {"sent": 1, "skipped": 1}  # its outcome is read only while running
    assert (await client.post(f"/api/v1/rollouts/{rollout_id}/resume")).status_code == 409
    actions = {e["action"] for e in await audit_actions(api_hub) if e["target"] == f"rollout:{rollout_id}"}
    assert len(actions) >= 2

    # Cancelled: another may start (these are refused for their own reasons).
    unknown = await client.post("/api/v1/rollouts", json={**body, "version": "9.9.9"})
    assert unknown.status_code == 404
    nobody = await client.post("/api/v1/rollouts", json={**body, "store_ids": ["store-z"]})
    assert nobody.status_code == 409
    bad = await client.post("/api/v1/rollouts", json={**body, "stages": {"sizes": [10, 5]}})
    assert bad.status_code == 422
