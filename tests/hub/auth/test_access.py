"""The pure decision: roles, capabilities and store scopes, without HTTP or a database."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from hub.auth import credentials
from hub.auth.policy import policy_of
from hub.auth.throttle import LoginThrottle, throttle_keys
from hub.domain.access import AccessDenied, Capability, Policy, Principal, Role, StoreFrom, decide
from tests.hub.conftest import TEST_PASSWORD_HASHER

ADJUST = policy_of("POST", "/api/v1/stores/{store_id}/stock/adjustments")
PUT_CHAIN_RULE = policy_of("PUT", "/api/v1/rules/{rule_id}")
LIST_EVENTS = policy_of("GET", "/api/v1/events")
AUDIT = policy_of("GET", "/api/v1/audit")


def who(role: Role, stores: set[str] | None = None) -> Principal:
    return Principal(kind="user", name=f"{role}-user", role=role, store_ids=frozenset(stores) if stores else None)


def refusal(principal: Principal | None, policy: Policy | None, *, write: bool, stores: list[str]) -> int | None:
    assert policy is not None
    try:
        decide(principal, policy, is_write=write, stores=stores)
    except AccessDenied as denied:
        return denied.status
    return None


def test_nobody_is_401_except_on_open_routes() -> None:
    assert refusal(None, ADJUST, write=True, stores=["s1"]) == 401
    assert refusal(None, policy_of("GET", "/healthz"), write=False, stores=[]) is None
    assert refusal(None, policy_of("POST", "/login"), write=True, stores=[]) is None


@pytest.mark.parametrize(
    ("role", "adjust", "chain_rule", "audit"),
    [
        (Role.VIEWER, 403, 403, 403),
        (Role.TECHNICIAN, 403, 403, 403),
        (Role.OPS, None, 403, 403),
        (Role.ADMIN, None, None, None),
    ],
)
def test_each_role_against_a_store_write_a_chain_write_and_the_audit_log(
    role: Role, adjust: int | None, chain_rule: int | None, audit: int | None
) -> None:
    principal = who(role)
    assert refusal(principal, ADJUST, write=True, stores=["s1"]) == adjust
    assert refusal(principal, PUT_CHAIN_RULE, write=True, stores=[]) == chain_rule
    assert refusal(principal, AUDIT, write=False, stores=[]) == audit


def test_a_scoped_principal_stays_in_its_stores() -> None:
    ops = who(Role.OPS, {"s1"})
    assert refusal(ops, ADJUST, write=True, stores=["s1"]) is None
    assert refusal(ops, ADJUST, write=True, stores=["s2"]) == 403
    transfer = policy_of("POST", "/api/v1/transfers")
    assert refusal(ops, transfer, write=True, stores=["s1", "s2"]) == 403
    assert refusal(ops, transfer, write=True, stores=[]) == 403  # a scoped principal must name its store
    assert refusal(ops, LIST_EVENTS, write=False, stores=[]) == 403
    assert refusal(ops, LIST_EVENTS, write=False, stores=["s1"]) is None
    assert refusal(ops, policy_of("GET", "/api/v1/stores"), write=False, stores=[]) is None  # filtered list
    admin = who(Role.ADMIN, {"s1"})
    assert refusal(admin, PUT_CHAIN_RULE, write=True, stores=[]) == 403
    assert refusal(admin, policy_of("GET", "/api/v1/rules"), write=False, stores=[]) is None


def test_objects_loaded_by_id_are_checked_by_their_store() -> None:
    ops = who(Role.OPS, {"s1"})
    ops.require_store("s1")
    with pytest.raises(AccessDenied) as denied:
        ops.require_store("s2")
    assert denied.value.status == 403
    assert ops.visible(["s2", "s1", "s3"]) == ["s1"]


def test_roles_hold_nested_capabilities() -> None:
    assert who(Role.TECHNICIAN).can(Capability.MAINTAIN)
    assert not who(Role.TECHNICIAN).can(Capability.OPERATE)
    assert who(Role.OPS).can(Capability.OPERATE)
    assert not who(Role.OPS).can(Capability.MAINTAIN)
    assert all(who(Role.ADMIN).can(c) for c in Capability)
    assert Policy(need=Capability.READ, store_from=StoreFrom.PATH).page is False


def test_the_throttle_locks_a_key_after_the_failures_and_lets_it_go_after_the_lockout() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=300, clock=lambda: now[0])
    keys = throttle_keys("Alice", "10.0.0.1")
    assert keys == ("user:alice", "client:10.0.0.1")
    assert throttle.failed(keys) is False
    now[0] = 100.0  # the first failure left the window
    assert throttle.failed(keys) is False
    assert throttle.failed(keys) is False
    assert throttle.retry_after(keys) == 0
    assert throttle.failed(keys) is True
    assert throttle.retry_after(["user:alice"]) == 300
    assert throttle.retry_after(throttle_keys("bob", "10.0.0.1")) == 300  # the address is locked too
    assert throttle.retry_after(throttle_keys("bob", "10.0.0.2")) == 0
    throttle.succeeded(keys)  # a success does not lift a lockout
    assert throttle.retry_after(keys) == 300
    now[0] = 400.0
    assert throttle.retry_after(keys) == 0


class CountingHasher:
    """argon2-cffi's hasher, noting the kind of hash each verification ran against."""

    def __init__(self, real: PasswordHasher) -> None:
        self.real = real
        self.verified: list[str] = []

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash.split("$")[1])
        return self.real.verify(password_hash, password)

    def hash(self, password: str) -> str:
        return self.real.hash(password)


def test_an_unknown_user_costs_the_same_argon2_verification_as_a_wrong_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = CountingHasher(TEST_PASSWORD_HASHER)  # the kind of hash matters here, not its cost
    monkeypatch.setattr(credentials, "_hasher", counting)
    stored = credentials.hash_password("the right password")
    assert credentials.verify_password(stored, "a wrong password") is False
    assert credentials.verify_password(None, "a wrong password") is False  # no such user: a decoy is verified
    assert credentials.verify_password(None, "the right password") is False
    assert credentials.verify_password(stored, "the right password") is True
    assert counting.verified == ["argon2id"] * 4
