"""``POST /console/language``: the reader's choice of language, kept on their operator account.

A form of every console page posts here; the choice follows the operator to every browser they sign in from. An API
token has no account to keep it on: its pages follow the browser's languages.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_args

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from hub.api.deps import WRITE_TURN_WAIT_S, RuntimeDep
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.auth.models import Operator
from hub.auth.pages import safe_next
from hub.console.i18n import LOCALES
from hub.db import writegate

router = APIRouter(tags=["dashboard"])

MAX_NEXT_CHARS: Final = 512
Language = Literal["en", "zh_Hant", "zh_Hans"]
assert get_args(Language) == LOCALES, "the form's choices are the console's locales"


@router.post(
    "/console/language",
    summary="Choose the console's language",
    description="Keeps the signed-in operator's language (en, zh_Hant or zh_Hans) and goes back to the page.",
    responses={
        303: {"description": "chosen; back to the page"},
        409: {"description": "an API token has no account to keep a language on"},
    },
)
async def post_language(
    request: Request,
    runtime: RuntimeDep,
    who: PrincipalDep,
    language: Annotated[Language, Form()],
    next_path: Annotated[str, Form(alias="next", max_length=MAX_NEXT_CHARS)] = "/",
) -> RedirectResponse:
    """Save the choice (a language the console does not speak is a 422); 409 for an API token."""
    if who.operator_id is None:
        raise HTTPException(status_code=409, detail="an API token has no account to keep a language on")
    async with runtime.write_gate.turn(writegate.API, timeout_s=WRITE_TURN_WAIT_S), runtime.sessions() as session:
        operator = await session.scalar(select(Operator).where(Operator.operator_id == who.operator_id))
        if operator is None:
            raise HTTPException(status_code=404, detail="the operator is gone")
        before = operator.language
        operator.language = language
        await session.commit()
    note_change(request, target=f"operator:{who.name}", before={"language": before}, after={"language": language})
    return RedirectResponse(safe_next(next_path), status_code=303)
