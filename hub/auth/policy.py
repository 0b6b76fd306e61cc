"""The one table that decides every HTTP operation of the hub: (method, path template) → policy.

A route without a row here cannot start: ``create_app`` refuses to build an app with one
(:func:`routes_without_policy`), and ``tests/hub/auth/test_policy_routes.py`` walks every route.
Adding a route is adding its line. The roles and what they hold are in ``hub.domain.access``;
``docs/security.md`` has the table for people. The gateway listener (``hub.snapshots.gateway_api``) is another
app on another port: no operator reaches it, and a gateway's client certificate is its only credential.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from hub.domain.access import Capability, Policy, StoreFrom

NONE, CHAIN, PATH, QUERY, OBJECT, FILTERED, OWN = (
    StoreFrom.NONE,
    StoreFrom.CHAIN,
    StoreFrom.PATH,
    StoreFrom.QUERY,
    StoreFrom.OBJECT,
    StoreFrom.FILTERED,
    StoreFrom.OWN,
)

OPEN: Final = Policy(need=Capability.OPEN)


def read(store_from: StoreFrom = NONE, *, page: bool = False) -> Policy:
    """Every role may read."""
    return Policy(need=Capability.READ, store_from=store_from, page=page)


def operate(store_from: StoreFrom, *fields: str) -> Policy:
    """Ops and admins act in a store."""
    return Policy(need=Capability.OPERATE, store_from=store_from, store_fields=fields)


def maintain(store_from: StoreFrom, *fields: str) -> Policy:
    """Technicians and admins look after gateways and devices."""
    return Policy(need=Capability.MAINTAIN, store_from=store_from, store_fields=fields)


def evidence(store_from: StoreFrom) -> Policy:
    """Ops and admins see camera stills of their stores (each fetch audited by the handler)."""
    return Policy(need=Capability.EVIDENCE, store_from=store_from)


def command(store_from: StoreFrom) -> Policy:
    """Technicians and ops send devices commands; the handler checks the one each command needs."""
    return Policy(need=Capability.COMMAND, store_from=store_from)


def administer(store_from: StoreFrom = CHAIN) -> Policy:
    """Admins only; chain-wide unless a store is named."""
    return Policy(need=Capability.ADMINISTER, store_from=store_from)


_POLICIES: Final[dict[tuple[str, str], Policy]] = {
    # operations and pages
    ("GET", "/healthz"): OPEN,  # anonymous callers get the status only (hub.api.health)
    ("GET", "/metrics"): read(),
    ("GET", "/openapi.json"): read(),
    ("GET", "/docs"): read(page=True),
    ("GET", "/redoc"): read(page=True),
    ("GET", "/"): read(FILTERED, page=True),
    # the console's alerts: the list filtered to the reader's stores, one alert by its store, acting needs operate
    ("GET", "/alerts"): read(FILTERED, page=True),
    ("GET", "/alerts/{alert_id}"): read(OBJECT, page=True),
    ("POST", "/alerts/{alert_id}/acknowledge"): operate(OBJECT),
    ("POST", "/alerts/{alert_id}/resolve"): operate(OBJECT),
    ("GET", "/console/live"): read(FILTERED),
    # signing in and out, who am I
    ("GET", "/login"): OPEN,
    ("POST", "/login"): OPEN,
    ("POST", "/logout"): read(OWN),  # a store-scoped operator signs out too
    ("GET", "/api/v1/me"): read(),
    # the console: its scripts and styles hold nothing of the chain; the language menu keeps the reader's choice
    ("GET", "/static/{name:path}"): OPEN,
    ("POST", "/console/language"): read(OWN),
    # the console's store page and what its scripts ask for (scoped by the path's store), the fleet (filtered to
    # the reader's stores; a ?store_id= outside them is refused), the audit log (admins, like /api/v1/audit)
    ("GET", "/stores/{store_id}"): read(PATH, page=True),
    ("GET", "/console/stores/{store_id}/climate.json"): read(PATH),
    ("GET", "/console/stores/{store_id}/reorder"): read(PATH),
    ("GET", "/console/stores/{store_id}/today"): read(PATH),
    ("GET", "/fleet"): read(FILTERED, page=True),
    ("GET", "/audit"): Policy(need=Capability.ADMINISTER, store_from=CHAIN, page=True),
    # operators, tokens, the audit log
    ("GET", "/api/v1/users"): administer(),
    ("POST", "/api/v1/users"): administer(),
    ("POST", "/api/v1/users/{username}/disable"): administer(),
    ("GET", "/api/v1/tokens"): administer(),
    ("POST", "/api/v1/tokens"): administer(),
    ("DELETE", "/api/v1/tokens/{token_id}"): administer(),
    ("GET", "/api/v1/audit"): administer(),
    # stores, gateways, events, losses
    ("GET", "/api/v1/stores"): read(FILTERED),
    ("GET", "/api/v1/gateways"): read(FILTERED),
    ("GET", "/api/v1/stores/{store_id}/gateways"): read(PATH),
    ("GET", "/api/v1/stores/{store_id}/gateways/{gateway_id}"): read(PATH),
    # enrolling issues the gateway's certificate and key; revoking shuts it out at the broker and the hub
    ("POST", "/api/v1/stores/{store_id}/gateways"): administer(PATH),
    ("POST", "/api/v1/stores/{store_id}/gateways/{gateway_id}/revoke"): administer(PATH),
    # self-test reports the gateway uploaded (hub.selftests): read like the gateway itself
    ("GET", "/api/v1/stores/{store_id}/gateways/{gateway_id}/selftests"): read(PATH),
    # enrolment tokens: admins, and technicians for their stores (the body's store; a token by id: its store, checked
    # by the handler); the gateway enrols itself anonymously, its one-time token in the body is its credential
    ("POST", "/api/v1/enrolment-tokens"): maintain(StoreFrom.BODY, "store_id"),
    ("GET", "/api/v1/enrolment-tokens"): maintain(FILTERED),
    ("DELETE", "/api/v1/enrolment-tokens/{token_id}"): maintain(OBJECT),
    ("POST", "/api/v1/enrol"): OPEN,
    ("GET", "/enrol"): OPEN,  # where an enrolment link leads: a page of words (the token stays in the fragment)
    ("GET", "/api/v1/refused-events"): read(QUERY),
    ("GET", "/api/v1/events"): read(QUERY),
    ("GET", "/api/v1/data-losses"): read(QUERY),
    ("GET", "/api/v1/commands"): read(QUERY),
    ("GET", "/api/v1/commands/{command_id}"): read(OBJECT),  # the handler checks the command's store
    # a test page, snapshot, status or ping needs maintain, a receipt operate: checked by the handler on the body
    ("POST", "/api/v1/stores/{store_id}/gateways/{gateway_id}/devices/{device_id}/commands"): command(PATH),
    # the gateway's own commands (ping, resend) and its pushed configs: technicians of the store and admins
    ("POST", "/api/v1/stores/{store_id}/gateways/{gateway_id}/commands"): maintain(PATH),
    ("GET", "/api/v1/stores/{store_id}/gateways/{gateway_id}/config"): read(PATH),
    ("PUT", "/api/v1/stores/{store_id}/gateways/{gateway_id}/config"): maintain(PATH),
    # catalog: reference data read by all, imported by admins
    ("POST", "/api/v1/catalog/skus/import"): administer(),
    ("GET", "/api/v1/catalog/skus/export"): read(),
    ("GET", "/api/v1/catalog/skus"): read(),
    ("GET", "/api/v1/catalog/skus/{sku_id}"): read(),
    ("POST", "/api/v1/catalog/stores/import"): administer(),
    ("GET", "/api/v1/catalog/stores/export"): read(CHAIN),
    ("GET", "/api/v1/catalog/stores"): read(FILTERED),
    ("GET", "/api/v1/catalog/stores/{store_id}"): read(PATH),
    ("GET", "/api/v1/catalog/stores/{store_id}/slots"): read(PATH),
    ("GET", "/api/v1/catalog/stores/{store_id}/stock-policies"): read(PATH),
    ("POST", "/api/v1/catalog/planogram/import"): administer(),
    ("GET", "/api/v1/catalog/planogram/export"): read(QUERY),
    ("GET", "/api/v1/catalog/planogram"): read(QUERY),
    ("POST", "/api/v1/catalog/stock-policies/import"): administer(),
    ("GET", "/api/v1/catalog/stock-policies/export"): read(QUERY),
    ("GET", "/api/v1/catalog/stock-policies"): read(QUERY),
    # inventory
    ("GET", "/api/v1/stores/{store_id}/stock"): read(PATH),
    ("GET", "/api/v1/stores/{store_id}/shelf-levels"): read(PATH),
    ("GET", "/api/v1/stores/{store_id}/restock-tasks"): read(PATH),
    ("GET", "/api/v1/stores/{store_id}/ledger"): read(PATH),
    ("GET", "/api/v1/stores/{store_id}/unplaced-events"): read(PATH),
    ("POST", "/api/v1/stores/{store_id}/stock/adjustments"): operate(PATH),
    ("POST", "/api/v1/transfers"): operate(StoreFrom.BODY, "from_store_id", "to_store_id"),
    # replenishment
    ("GET", "/api/v1/stores/{store_id}/reorder-suggestions"): read(PATH),
    ("GET", "/api/v1/transfer-suggestions"): read(CHAIN),
    # alerts: the handler checks the loaded alert's store
    ("GET", "/api/v1/alerts"): read(QUERY),
    ("GET", "/api/v1/alerts/{alert_id}"): read(OBJECT),
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): operate(OBJECT),
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): operate(OBJECT),
    # rules: the chain's by admins, a store's overrides by ops
    ("GET", "/api/v1/rules"): read(),
    ("GET", "/api/v1/rules/{rule_id}"): read(),
    ("PUT", "/api/v1/rules/{rule_id}"): administer(),
    ("DELETE", "/api/v1/rules/{rule_id}"): administer(),
    ("GET", "/api/v1/stores/{store_id}/rules"): read(PATH),
    ("PUT", "/api/v1/stores/{store_id}/rules/{rule_id}"): operate(PATH),
    ("DELETE", "/api/v1/stores/{store_id}/rules/{rule_id}"): operate(PATH),
    # webhooks (their URLs and deliveries are the chain's integrations)
    ("POST", "/api/v1/webhooks"): administer(),
    ("GET", "/api/v1/webhooks"): administer(),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): administer(),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): administer(),
    # reports
    ("GET", "/api/v1/reports/sales"): read(QUERY),
    ("GET", "/api/v1/reports/inventory-turnover"): read(QUERY),
    ("GET", "/api/v1/reports/sell-through"): read(QUERY),
    ("GET", "/api/v1/reports/shrink"): read(QUERY),
    ("GET", "/api/v1/reports/alerts"): read(QUERY),
    ("GET", "/api/v1/reports/alert-log"): read(QUERY),
    ("GET", "/api/v1/reports/footfall"): read(QUERY),
    ("GET", "/api/v1/reports/cold-chain/{store_id}/{day}.csv"): read(PATH),
    ("GET", "/api/v1/reports/cold-chain/{store_id}/{day}.pdf"): read(PATH),
    ("GET", "/api/v1/reports/cold-chain/{store_id}/{day}"): read(PATH),
    # report schedules (their webhooks and recipients are the chain's integrations)
    ("POST", "/api/v1/report-schedules"): administer(),
    ("GET", "/api/v1/report-schedules"): administer(),
    ("GET", "/api/v1/report-schedules/kinds"): administer(),
    ("GET", "/api/v1/report-schedules/{schedule_id}"): administer(),
    ("POST", "/api/v1/report-schedules/{schedule_id}/pause"): administer(),
    ("POST", "/api/v1/report-schedules/{schedule_id}/resume"): administer(),
    ("DELETE", "/api/v1/report-schedules/{schedule_id}"): administer(),
    # releases of the agent software and their rollouts to gateways (docs/updates.md)
    ("POST", "/api/v1/releases"): administer(),
    ("GET", "/api/v1/releases"): administer(),
    ("POST", "/api/v1/rollouts"): administer(),
    ("GET", "/api/v1/rollouts"): administer(),
    ("GET", "/api/v1/rollouts/{rollout_id}"): administer(),
    ("POST", "/api/v1/rollouts/{rollout_id}/pause"): administer(),
    ("POST", "/api/v1/rollouts/{rollout_id}/resume"): administer(),
    ("POST", "/api/v1/rollouts/{rollout_id}/cancel"): administer(),
    ("GET", "/api/v1/report-schedules/{schedule_id}/deliveries"): administer(),
    ("GET", "/api/v1/reports/cold-chain/{store_id}/{day}.xlsx"): read(PATH),
    ("GET", "/api/v1/reports/daily-summary/{store_id}/{day}"): read(PATH),
    # the roll-up, the bundle and the reports page: the handler keeps to the reader's stores (named ones checked)
    ("GET", "/api/v1/reports/chain-summary/{day}"): read(FILTERED),
    ("GET", "/api/v1/reports/cold-chain-bundle/{day}"): read(FILTERED),
    ("GET", "/reports"): read(FILTERED, page=True),
    ("GET", "/reports/download"): read(FILTERED, page=True),  # a 303 to the report's route, checked there again
    # camera stills: evidence, for ops and admins of the store only; gateways upload on their own listener
    # (hub.snapshots.gateway_api), known by their client certificate, which this table does not decide
    ("GET", "/api/v1/stores/{store_id}/snapshots/{ref}"): evidence(PATH),
}

ROUTE_POLICIES: Final[Mapping[tuple[str, str], Policy]] = MappingProxyType(_POLICIES)


def policy_of(method: str, path: str) -> Policy | None:
    """The policy of a route (HEAD is decided as GET), or None when the table has no row for it."""
    return ROUTE_POLICIES.get(("GET" if method == "HEAD" else method, path))


def routes_without_policy(routes: Iterable[tuple[str, str]]) -> list[str]:
    """The routes (method, path) the table does not cover, as "METHOD /path", sorted."""
    return sorted(f"{method} {path}" for method, path in routes if policy_of(method, path) is None)
