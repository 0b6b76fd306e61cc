"""What the access tests share: concrete paths for every route template, and a catalog of two stores."""

from __future__ import annotations

import re
import uuid
from typing import Final

import httpx

from hub.app import create_app
from hub.auth.guard import app_routes
from hub.settings import HubSettings

# A value for each path parameter any route has; an unknown parameter fails the walk (add it here).
SAMPLE_PARAMS: Final = {
    "store_id": "store-0001",
    "day": "2025-03-01",
    "rule_id": "sweep",
    "alert_id": "no-such-alert",
    "webhook_id": str(uuid.UUID(int=7)),
    "token_id": "no-such-token",
    "username": "nobody",
    "sku_id": "A",
    "gateway_id": "gw-1",
    "ref": "0" * 64,
    "device_id": "printer-1",
    "command_id": str(uuid.UUID(int=9)),
    "schedule_id": str(uuid.UUID(int=11)),
    "rollout_id": str(uuid.UUID(int=12)),
}

STORES_CSV: Final = (
    "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun,region\n"
    "store-0001,High Street,Europe/London,GBP,08:00-20:00,,,,,,,north\n"
    "store-0002,Station,Europe/London,GBP,08:00-20:00,,,,,,,south\n"
)
SKUS_CSV: Final = "sku_id,gtin,name,unit_weight_g,pack_size,price,currency\nA,,Biscuits,,1,1.00,GBP\n"


def concrete(path: str, **overrides: str) -> str:
    """The template with every parameter filled in."""
    values = {**SAMPLE_PARAMS, **overrides}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"no sample value for the path parameter {name!r}: add it to SAMPLE_PARAMS"
        return values[name]

    return re.sub(r"\{([a-z_]+)\}", value, path)


def every_route(settings: HubSettings) -> list[tuple[str, str]]:
    """Every (method, path template) of the hub's app, schema or not."""
    return app_routes(create_app(settings))


async def load_catalog(admin: httpx.AsyncClient) -> None:
    """Two stores (store-0001 in region north, store-0002 in south) and one SKU, through the API as an admin."""
    for kind, text in (("stores", STORES_CSV), ("skus", SKUS_CSV)):
        response = await admin.post(
            f"/api/v1/catalog/{kind}/import", content=text.encode(), headers={"content-type": "text/csv"}
        )
        assert response.status_code == 200, response.text
