"""The console's parts every page shares: its static files, and the language an operator chooses."""

from __future__ import annotations

from sqlalchemy import select

from hub.auth.models import AuditEntry, Operator
from hub.console.assets import asset_url
from tests.hub.conftest import RunningHub
from tests.hub.console.conftest import add_operator, browser


async def test_static_files_are_served_compressed_and_cached_by_version(hub: RunningHub) -> None:
    async with hub.anonymous() as anonymous:  # a script holds nothing of the chain: the login page may load it
        url = asset_url("vendor/htmx.min.js")
        plain = await anonymous.get(url, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/javascript")
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert b"htmx" in plain.content[:200]
        packed = await anonymous.get(url, headers={"accept-encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) < len(plain.content) / 2
        again = await anonymous.get(url, headers={"if-none-match": plain.headers["etag"]})
        assert again.status_code == 304
        for missing in ("/static/no-such.js", "/static/../app.py", "/static/%2e%2e/app.py", "/static/"):
            assert (await anonymous.get(missing)).status_code == 404, missing
    # The URL changes with the content, so a browser never runs a cached old script against a new page.
    assert asset_url("console.js") != asset_url("console.css")
    assert asset_url("console.js").startswith("/static/console.js?v=")


async def test_an_operator_chooses_a_language_it_is_kept_and_audited(hub: RunningHub) -> None:
    await add_operator(hub, "mei", "ops")
    async with browser(hub, "mei") as mei:
        chosen = await mei.post("/console/language", data={"language": "zh_Hant", "next": "/alerts?state=open"})
        assert chosen.status_code == 303
        assert chosen.headers["location"] == "/alerts?state=open"
        async with hub.runtime.sessions() as session:
            assert await session.scalar(select(Operator.language).where(Operator.username == "mei")) == "zh_Hant"
            entry = (await session.scalars(select(AuditEntry).where(AuditEntry.target == "operator:mei"))).one()
        assert entry.actor == "mei"
        assert entry.after == {"language": "zh_Hant"}

        # Not a language of the console, or a way off this site: refused, or sent home.
        assert (await mei.post("/console/language", data={"language": "fr"})).status_code == 422
        offsite = await mei.post("/console/language", data={"language": "en", "next": "//evil.example/x"})
        assert offsite.headers["location"] == "/"
        # Without the CSRF token (a form posted from another site), nothing changes.
        del mei.headers["X-CSRF-Token"]
        assert (await mei.post("/console/language", data={"language": "zh_Hans"})).status_code == 403
    async with hub.runtime.sessions() as session:
        assert await session.scalar(select(Operator.language).where(Operator.username == "mei")) == "en"
    # Choosing one's language is not a change to the chain: a viewer may, and so may an operator of one store,
    # who may sign out too.
    await add_operator(hub, "vic", "viewer")
    await add_operator(hub, "sam", "ops", store_ids=("store-0001",))
    for name in ("vic", "sam"):
        async with browser(hub, name) as reader:
            assert (await reader.post("/console/language", data={"language": "zh_Hans"})).status_code == 303
            assert (await reader.post("/logout")).status_code == 303
    # An API token has no account to keep a language on.
    assert (await hub.client.post("/console/language", data={"language": "en"})).status_code == 409
