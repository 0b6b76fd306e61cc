"""E-mail addresses a schedule may send to: one plain ``local@domain`` each, nothing a header could be built from.

Deliberately narrow (no display names, no comments, no quoted local parts): the address goes into a To header, and
a comma, a newline or angle brackets there would add recipients or headers.
"""

from __future__ import annotations

import re
from typing import Final

MAX_ADDRESS_CHARS: Final = 254
_ADDRESS: Final = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def address_problem(address: str) -> str | None:
    """Why ``address`` is not one plain e-mail address; None when it is."""
    if len(address) > MAX_ADDRESS_CHARS:
        return f"an e-mail address has at most {MAX_ADDRESS_CHARS} characters"
    if _ADDRESS.fullmatch(address) is None or ".." in address.split("@", 1)[0]:
        return f"{address[:80]!r} is not one plain e-mail address (name@example.com)"
    return None
