"""Who a certificate names. Pure: no I/O, no cryptography.

A gateway's certificate carries ``<store_id>/<gateway_id>`` as its common name, which Mosquitto takes as
the MQTT username (``use_identity_as_username``) and the client id (``use_username_as_clientid``). Store
and gateway ids are topic segments (``[a-z0-9][a-z0-9_-]*``), so they hold no ``/`` and the name splits
back into exactly one (store, gateway): the mapping is 1:1. A hub's name has no ``/``, so no gateway can
be given a hub's name or the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from hub.errors import HubError

# X.509 bounds a common name at 64 characters (RFC 5280, ub-common-name).
MAX_COMMON_NAME: Final = 64
DEFAULT_HUB_NAME: Final = "storegate-hub"

_SEGMENT: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HUB_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class IdentityError(HubError, ValueError):
    """A name that cannot be a gateway's or a hub's certificate identity."""


@dataclass(frozen=True, slots=True, order=True)
class GatewayIdentity:
    """One gateway: (store_id, gateway_id), as its certificate and the broker's ACL name it."""

    store_id: str
    gateway_id: str

    def __post_init__(self) -> None:
        for name, value in (("store_id", self.store_id), ("gateway_id", self.gateway_id)):
            if not _SEGMENT.match(value):
                raise IdentityError(f"{name} {value!r} is not a valid topic segment ([a-z0-9][a-z0-9_-]*)")
        if len(self.common_name) > MAX_COMMON_NAME:
            raise IdentityError(
                f"{self.common_name!r} is longer than the {MAX_COMMON_NAME} characters a certificate's "
                "common name may hold; use shorter store or gateway ids"
            )

    @property
    def common_name(self) -> str:
        """The certificate's CN, and the MQTT username and client id at the broker."""
        return f"{self.store_id}/{self.gateway_id}"

    @classmethod
    def parse(cls, value: str) -> GatewayIdentity:
        """``store/gateway`` into its identity, or raise :class:`IdentityError`."""
        store_id, slash, gateway_id = value.partition("/")
        if not slash:
            raise IdentityError(f"{value!r} is not STORE/GATEWAY")
        return cls(store_id, gateway_id)

    def __str__(self) -> str:
        return self.common_name


def check_hub_name(name: str) -> str:
    """A hub's certificate name (its MQTT client id): letters, digits, ``_.-``, no ``/``; returned unchanged."""
    if not _HUB_NAME.match(name):
        raise IdentityError(f"hub name {name!r} must be 1-64 of letters, digits, '_', '.', '-' (no '/')")
    return name
