"""The fleet page: every gateway the reader may see, problems first, with certificates from the hub's CA, filtered;
on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from hub.console import fleet
from hub.db.models import Gateway
from hub.pki.authority import CertificateAuthority, CertificateRecord
from hub.pki.commands import pki_directory
from hub.pki.identity import GatewayIdentity
from tests.hub.conftest import RunningHub
from tests.hub.console.conftest import add_operator, browser
from tests.hub.console.test_store_page import NOW, gateway_row, hub, hub_settings, insert_rows, seed_stores

__all__ = ["hub", "hub_settings"]  # this module's hubs are the store page's: both databases, a fixed clock

ROW = re.compile(r'<tr data-gateway="([^"]+)" data-state="([a-z]+)"')


def gateway_order(html: str) -> list[tuple[str, str]]:
    """The rows of table#gateways as (store/gateway, state), in the page's order."""
    table = html[html.index('<table class="cards" id="gateways">') :]
    return ROW.findall(table[: table.index("</table>")])


async def seed_fleet(hub: RunningHub) -> None:
    """The store page's stores, plus a healthy Taipei gateway, one never heard from, and a revoked one."""
    await seed_stores(hub)
    await insert_rows(
        hub,
        Gateway,
        [
            gateway_row("taipei-1", "gw-3"),
            gateway_row("taipei-1", "gw-new", online=None, last_seen_at=None, first_seen=None, last_health=None,
                        last_health_at=None, agent_version=None, config_hash=None),
            gateway_row("berlin-1", "gw-old", revoked_at=NOW - timedelta(days=1), revoked_by="alice"),
        ],
    )  # fmt: skip


async def test_the_fleet_lists_problems_first_with_versions_and_backlog(hub: RunningHub) -> None:
    await seed_fleet(hub)
    response = await hub.client.get("/fleet")
    assert response.status_code == 200, response.text
    html = response.text
    assert gateway_order(html) == [
        # problems first, by store and gateway: a backlog and losses, offline, never connected
        ("taipei-1/gw-1", "online"),
        ("taipei-1/gw-2", "offline"),
        ("taipei-1/gw-new", "unknown"),
        # then the healthy ones
        ("berlin-1/gw-1", "online"),
        ("taipei-1/gw-3", "online"),
        # revoked last
        ("berlin-1/gw-old", "revoked"),
    ]
    assert "1.4.2" in html
    assert "9f2c4e1ab3d7" in html
    assert "9f2c4e1ab3d7c0ffee<" not in html  # the config hash is shortened (whole in its title)
    assert "Backlog: 250 events wait to reach the hub" in html
    assert "Live alerts about its devices: 1" in html  # fridge-1 of taipei-1/gw-1
    assert "Never connected since it was enrolled" in html
    assert "Revoked by alice" in html
    # Last seen on the store's wall clock (11:59 in Taipei, 05:59 in Berlin) and how long ago.
    assert "11:59" in html
    assert "5:59" in html
    assert "60 seconds ago" in html
    assert "台北信義店" in html
    assert "The hub runs no certificate authority" in html
    counts = html[html.index('id="fleet-counts"') : html.index("</div>\n\n")]
    assert '<span class="value">6</span><span class="label">Gateways</span>' in counts
    assert '<span class="value">3</span><span class="label">With problems</span>' in counts


async def test_filters_narrow_the_fleet(hub: RunningHub) -> None:
    await seed_fleet(hub)
    by_store = gateway_order((await hub.client.get("/fleet?store_id=berlin-1")).text)
    assert [key for key, _ in by_store] == ["berlin-1/gw-1", "berlin-1/gw-old"]
    offline = gateway_order((await hub.client.get("/fleet?state=offline")).text)
    assert offline == [("taipei-1/gw-2", "offline")]
    named = gateway_order((await hub.client.get("/fleet", params={"q": "信義"})).text)  # a store's name
    assert {key for key, _ in named} == {"taipei-1/gw-1", "taipei-1/gw-2", "taipei-1/gw-3", "taipei-1/gw-new"}
    by_gateway = gateway_order((await hub.client.get("/fleet?q=GW-NEW")).text)
    assert by_gateway == [("taipei-1/gw-new", "unknown")]
    # An empty form field is no filter.
    assert len(gateway_order((await hub.client.get("/fleet?store_id=&state=&q=")).text)) == 6
    assert "No gateway matches." in (await hub.client.get("/fleet?q=nothing-like-it")).text
    for query, name in (
        ({"q": "x" * 101}, "q"),
        ({"state": "on-fire"}, "state"),
        ({"store_id": "Berlin 1"}, "store_id"),
        ({"store_id": "b" * 64}, "store_id"),
    ):
        refused = await hub.client.get("/fleet", params=query)
        assert refused.status_code == 422, query
        assert name in refused.json()["message"]


async def test_a_scoped_reader_sees_only_their_stores_gateways(hub: RunningHub) -> None:
    await seed_fleet(hub)
    await add_operator(hub, "ber", "viewer", store_ids=("berlin-1",))
    async with browser(hub, "ber") as ber:
        page = await ber.get("/fleet")
        assert page.status_code == 200
        assert {key for key, _ in gateway_order(page.text)} == {"berlin-1/gw-1", "berlin-1/gw-old"}
        assert "taipei-1" not in page.text
        assert "台北信義店" not in page.text  # not even in the store menu
        refused = await ber.get("/fleet?store_id=taipei-1")
        assert refused.status_code == 403
        assert "outside your access" in refused.text
    async with hub.anonymous() as anonymous:
        sent = await anonymous.get("/fleet")
        assert sent.headers["location"].startswith("/login")


async def test_certificates_expiring_or_expired_are_flagged(hub: RunningHub) -> None:
    await seed_fleet(hub)
    authority = CertificateAuthority.create(pki_directory(hub.runtime.settings), now=NOW - timedelta(days=60))
    authority.issue_gateway(GatewayIdentity("berlin-1", "gw-1"), days=365, now=NOW - timedelta(days=1))
    authority.issue_gateway(GatewayIdentity("taipei-1", "gw-3"), days=400, now=NOW - timedelta(days=380))
    authority.issue_gateway(GatewayIdentity("taipei-1", "gw-2"), days=10, now=NOW - timedelta(days=20))
    authority.issue_gateway(GatewayIdentity("taipei-1", "gw-2"), days=30, now=NOW - timedelta(days=5))  # renewed
    html = (await hub.client.get("/fleet")).text
    cells = dict(re.findall(r'<tr data-gateway="([^"]+)".*?data-certificate="([a-z]+)"', html, flags=re.S))
    assert cells == {
        "berlin-1/gw-1": "ok",
        "taipei-1/gw-3": "expiring",  # 20 days left
        "taipei-1/gw-2": "expiring",  # the newest of its two: 25 days left
        "taipei-1/gw-1": "none",
        "taipei-1/gw-new": "none",
        "berlin-1/gw-old": "none",
    }
    assert "Its certificate expires within 30 days" in html
    assert "No valid certificate issued by the hub's CA" in html
    # taipei-1/gw-3 was healthy; its certificate makes it a problem, listed before berlin-1/gw-1.
    order = [key for key, _ in gateway_order(html)]
    assert order.index("taipei-1/gw-3") < order.index("berlin-1/gw-1")


@pytest.mark.parametrize(
    ("days_left", "revoked", "state"),
    [(31, False, "ok"), (30, False, "expiring"), (1, False, "expiring"), (0, False, "expired"), (-3, False, "expired"),
     (100, True, "revoked")],
)  # fmt: skip
def test_certificate_states(days_left: int, revoked: bool, state: str) -> None:
    record = CertificateRecord(
        serial=1,
        kind="gateway",
        name="s/g",
        not_after=NOW + timedelta(days=days_left),
        revoked_at=NOW if revoked else None,
    )
    assert fleet.certificate_state(record, now=NOW) == state
    assert fleet.certificate_state(None, now=NOW) == "none"
