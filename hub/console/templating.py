"""Rendering the console's pages: one Jinja2 environment, the reader's context, and the page's headers.

Every page extends ``base.html`` (the navigation, the language menu, signing out). Values are escaped by
autoescaping; the only scripts are the console's own and the vendored ones under ``/static`` (hub.console.assets),
so the Content-Security-Policy allows scripts and styles from the hub itself and nothing inline.

The CSRF token is not written into any page: ``console.js`` reads it from its cookie and sends it with each change
(a header for htmx, a hidden field for a form). Pages are compressed, and a secret inside a compressed page beside
text a visitor chose could be guessed from the sizes (BREACH).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from hub.api.deps import SessionDep
from hub.auth.guard import PrincipalDep
from hub.auth.models import Operator
from hub.console import i18n
from hub.console.assets import CONSOLE_CSP, asset_url
from hub.domain.access import Capability, Principal
from storegate import __version__

ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("hub.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
    # Templates ship in the package and change only with a release: no stat() of each file at every render.
    auto_reload=False,
)
ENVIRONMENT.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
ENVIRONMENT.globals["asset"] = asset_url
ENVIRONMENT.filters["unit"] = i18n.unit_text

# The console's pages, in the order the navigation shows them: (path, message id of its name).
NAVIGATION: Final = (
    ("/", "Overview"),
    ("/alerts", "Alerts"),
    ("/fleet", "Fleet"),
    ("/reports", "Reports"),
)


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads a page, in which language, and what they may do."""

    who: Principal
    locale: str
    formats: i18n.Formats = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", i18n.Formats(self.locale))

    @property
    def may_operate(self) -> bool:
        """Whether the page offers acknowledging and resolving alerts."""
        return self.who.can(Capability.OPERATE)


async def reader(request: Request, session: SessionDep, who: PrincipalDep) -> Reader:
    """The reader of this request: an operator's chosen language, else the browser's, else English."""
    locale: str | None = None
    if who.operator_id is not None:
        locale = await session.scalar(select(Operator.language).where(Operator.operator_id == who.operator_id))
    if locale not in i18n.LOCALES:
        locale = i18n.negotiate(request.headers.get("accept-language"))
    return Reader(who=who, locale=locale)


ReaderDep = Annotated[Reader, Depends(reader)]


def render_in(template: str, locale: str, context: Mapping[str, Any]) -> str:
    """``template`` rendered in ``locale`` (a page for someone not signed in: the sign-in form)."""
    token = i18n.use_locale(locale)
    try:
        return ENVIRONMENT.get_template(template).render(
            locale=locale, html_lang=i18n.HTML_LANG.get(locale, "en"), **context
        )
    finally:
        i18n.reset_locale(token)


def render(template: str, reader: Reader, context: Mapping[str, Any]) -> str:
    """``template`` rendered in the reader's language."""
    return render_in(template, reader.locale, {"reader": reader, "fmt": reader.formats, **context})


def page(template: str, reader: Reader, request: Request, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A whole console page: ``template`` (which extends base.html) with the navigation and language menu."""
    body = render(
        template,
        reader,
        {
            "path": request.url.path,
            "navigation": NAVIGATION,
            "languages": [(code, i18n.LANGUAGE_NAMES[code]) for code in i18n.LOCALES],
            "version": __version__,
            **context,
        },
    )
    return HTMLResponse(body, status_code=status_code, headers={"content-security-policy": CONSOLE_CSP})


def fragment(template: str, reader: Reader, **context: Any) -> HTMLResponse:
    """A piece of a page for htmx to swap in (no navigation around it)."""
    return HTMLResponse(render(template, reader, context), headers={"content-security-policy": CONSOLE_CSP})
