"""Who may do what: roles, capabilities, store scopes and the decision for one request (pure).

A request is decided from three things: the principal (who, with which role and which stores), the
route's policy (which capability it needs and where its store comes from) and the stores the request
names. Nothing here reads a database or an HTTP request; ``hub.auth`` gathers those and asks here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from hub.errors import HubError


class Role(StrEnum):
    """An operator's role; a token carries one too."""

    ADMIN = "admin"
    OPS = "ops"
    TECHNICIAN = "technician"
    VIEWER = "viewer"


class Capability(StrEnum):
    """What a route needs; each role holds a set of these."""

    OPEN = "open"  # anyone, signed in or not: health, the login page and form
    READ = "read"  # see stores, stock, alerts, reports, gateways, the dashboard, metrics, the API docs
    OPERATE = "operate"  # act in a store: alerts, stock movements, store rule overrides, restock
    MAINTAIN = "maintain"  # the fleet: gateways, devices, commands to them
    ADMINISTER = "administer"  # the chain: operators, tokens, audit, chain rules, webhooks, catalog imports
    EVIDENCE = "evidence"  # see camera stills (people in a store): ops and admins, never viewers or technicians
    # Send a device a command: technicians (test pages, snapshots) and ops (receipts) both do, so a route gets
    # this at its gate and the handler asks MAINTAIN or OPERATE by the command (hub.commands.requests.NEEDS).
    COMMAND = "command"


ROLE_CAPABILITIES: Final[dict[Role, frozenset[Capability]]] = {
    Role.VIEWER: frozenset({Capability.READ}),
    Role.TECHNICIAN: frozenset({Capability.READ, Capability.MAINTAIN, Capability.COMMAND}),
    Role.OPS: frozenset({Capability.READ, Capability.OPERATE, Capability.EVIDENCE, Capability.COMMAND}),
    Role.ADMIN: frozenset(
        {
            Capability.READ,
            Capability.OPERATE,
            Capability.MAINTAIN,
            Capability.ADMINISTER,
            Capability.EVIDENCE,
            Capability.COMMAND,
        }
    ),
}


class StoreFrom(StrEnum):
    """Where a route's store comes from, for the scope check."""

    NONE = "none"  # chain reference data (SKUs, chain rules): scoped principals read it, only chain-wide ones change it
    CHAIN = "chain"  # every store at once (audit, operators, transfer suggestions): chain-wide principals only
    PATH = "path"  # the path's {store_id}
    QUERY = "query"  # an optional ?store_id= filter; a scoped principal must name one unless the list is filtered
    BODY = "body"  # fields of the JSON body (``store_fields``)
    OBJECT = "object"  # the handler checks the store of the object it loads (an alert by id)
    FILTERED = "filtered"  # a list the handler filters to the principal's stores
    OWN = "own"  # the caller's own session or account (signing out, the console's language): no store at all


class AccessDenied(HubError, PermissionError):
    """A principal may not do this; ``status`` is 401 (nobody signed in) or 403 (not allowed), ``cause`` says
    which check refused it (anonymous, role, scope; the gate adds token, csrf, policy)."""

    def __init__(self, status: int, reason: str, *, cause: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.cause = cause


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """One route's rule: the capability it needs and where its store comes from."""

    need: Capability
    store_from: StoreFrom = StoreFrom.NONE
    store_fields: tuple[str, ...] = ()
    page: bool = False  # an HTML page: anonymous people are sent to the login page instead of a 401


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is asking: an operator signed in by session, or an API token, with the stores it may reach.

    ``store_ids`` None means every store; otherwise the operator's stores plus those of its regions,
    resolved when the principal was made.
    """

    kind: str  # "user" or "token"
    name: str  # the username, or "token:<name>" for a token
    role: Role
    store_ids: frozenset[str] | None
    operator_id: int | None = None
    token_id: str | None = None
    session_id: str | None = None

    @property
    def actor(self) -> str:
        """The name recorded as the actor of what this principal does."""
        return self.name

    @property
    def chain_wide(self) -> bool:
        """True when the principal reaches every store."""
        return self.store_ids is None

    def can(self, capability: Capability) -> bool:
        """Whether the role holds ``capability``."""
        return capability is Capability.OPEN or capability in ROLE_CAPABILITIES[self.role]

    def reaches(self, store_id: str) -> bool:
        """Whether ``store_id`` is in the principal's scope."""
        return self.store_ids is None or store_id in self.store_ids

    def require_store(self, store_id: str) -> None:
        """Raise AccessDenied (403) unless ``store_id`` is in scope; for objects loaded by id."""
        if not self.reaches(store_id):
            raise AccessDenied(403, f"store {store_id!r} is outside your access", cause="scope")

    def visible(self, store_ids: Iterable[str]) -> list[str]:
        """The ones of ``store_ids`` in scope, in order."""
        return [s for s in store_ids if self.reaches(s)]


def decide(principal: Principal | None, policy: Policy, *, is_write: bool, stores: Iterable[str]) -> None:
    """Allow (return) or refuse (raise AccessDenied) a request.

    ``stores`` are the store ids the request names (path, query or body, as the policy says).
    """
    if policy.need is Capability.OPEN:
        return
    if principal is None:
        raise AccessDenied(401, "sign in, or send an API token as 'Authorization: Bearer <token>'", cause="anonymous")
    if not principal.can(policy.need):
        raise AccessDenied(
            403, f"the role {principal.role.value!r} may not do this (it needs {policy.need.value!r})", cause="role"
        )
    named = [s for s in stores if s]
    outside = [s for s in named if not principal.reaches(s)]
    if outside:
        raise AccessDenied(403, f"store {outside[0]!r} is outside your access", cause="scope")
    if principal.chain_wide or policy.store_from is StoreFrom.OWN:
        return
    if policy.store_from is StoreFrom.CHAIN or (policy.store_from is StoreFrom.NONE and is_write):
        raise AccessDenied(403, "this concerns the whole chain: it needs access to every store", cause="scope")
    if policy.store_from in (StoreFrom.QUERY, StoreFrom.BODY) and not named:
        raise AccessDenied(403, "your access is limited to some stores: name a store_id", cause="scope")
