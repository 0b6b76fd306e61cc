"""The planogram's optional camera_id column: which camera watches a slot, imported, exported and read by the rules'
catalog; a planogram written before the column imports as before."""

from __future__ import annotations

from hub.inventory.catalog_view import load_catalog
from tests.hub.catalog.test_catalog_api import PLANOGRAM_CSV, SKUS_CSV, STORES_CSV, imported, post_csv, row_errors
from tests.hub.conftest import RunningHub


async def test_a_slot_names_its_camera_and_older_files_still_import(hub: RunningHub) -> None:
    client = hub.client
    for kind, text in (("skus", SKUS_CSV), ("stores", STORES_CSV)):
        await imported(client, kind, text)
    assert (await imported(client, "planogram", PLANOGRAM_CSV))["created"] == 4, "a file without the column"
    lines = PLANOGRAM_CSV.splitlines()
    with_cameras = "\n".join([lines[0] + ",camera_id", lines[1] + ",cam-aisle-a", *(line + "," for line in lines[2:])])
    assert await imported(client, "planogram", with_cameras + "\n") == {"created": 0, "updated": 1, "unchanged": 3}
    slots = (await client.get("/api/v1/catalog/stores/store-0001/slots")).json()["items"]
    assert [(s["shelf_id"], s["slot"], s["camera_id"]) for s in slots][:2] == [
        ("shelf-a1", 1, "cam-aisle-a"),
        ("shelf-a1", 2, None),
    ]
    exported = (await client.get("/api/v1/catalog/planogram/export", params={"store_id": "store-0001"})).text
    assert exported.splitlines()[0].endswith(",camera_id")
    assert "shelf-a1,1,85123A,24,6,cam-aisle-a" in exported
    async with hub.runtime.sessions() as session:
        catalog = await load_catalog(session)
    assert catalog.camera_of_slot("store-0001", "shelf-a1", 1) == "cam-aisle-a"
    assert catalog.camera_of_slot("store-0001", "shelf-a1", 2) is None
    bad = with_cameras.replace("cam-aisle-a", "Cam With Spaces")
    assert [(row, column) for row, column, _ in row_errors(await post_csv(client, "planogram", bad))] == [
        (2, "camera_id")
    ]
