"""``GET /enrol``: where an enrolment link leads (a phone that scanned the QR code of ``storegate provision bundle``).

The token rides in the link's fragment (``/enrol#sge1...``), which a browser never sends: this page knows nothing
of it, reads nothing and needs no sign-in. It tells the holder what the link is and the command that spends it on
the gateway, in the browser's language.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from hub.console.assets import CONSOLE_CSP
from hub.console.i18n import negotiate
from hub.console.templating import render_in
from storegate.enrolment import LINK_PATH

router = APIRouter(tags=["dashboard"])


@router.get(LINK_PATH, response_class=HTMLResponse, summary="An enrolment link's page", include_in_schema=False)
async def enrolment_link_page(request: Request) -> HTMLResponse:
    """What an enrolment link is and how the gateway uses it; the same page for everyone."""
    body = render_in("enrol.html", negotiate(request.headers.get("accept-language")), {})
    return HTMLResponse(body, headers={"content-security-policy": CONSOLE_CSP})
