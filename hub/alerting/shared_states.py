"""One store's rule states as a row of ``rule_states``, for N hub workers (shared mode; docs/scaling.md).

A store's row holds what :class:`~hub.alerting.monitoring.MonitoringEngine` keeps of it in memory: each rule's
state, the shrink picks waiting for a sale, the recent camera snapshots and the newest event time. It is read
and written under the store's advisory lock (:mod:`hub.ingest.shared`), with a version one higher per write.

The states are the rules' own frozen dataclasses (:mod:`hub.domain`), so they are pickled rather than given a
JSON codec per rule kind. A row is only ever written by the hub, but it is read back with an unpickler that
builds nothing but those dataclasses, the standard library's value types and the wire's enums: a row someone
else wrote cannot make the hub run code, it can only fail to load (the store then starts from fresh states).
"""

from __future__ import annotations

import enum
import io
import pickle
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import RuleStateRow
from hub.errors import HubError

# The modules and names a row may build; hub.domain's modules are all allowed (the rules' states live there).
_ALLOWED: Final = {
    "builtins": frozenset({"set", "frozenset", "dict", "list", "tuple", "bytes", "int", "float", "str", "bool"}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "uuid": frozenset({"UUID"}),
    "collections": frozenset({"deque", "OrderedDict", "defaultdict"}),
}
# Modules whose enums a state may hold (the wire's kinds and quantities), and nothing else of them.
_ENUM_MODULES: Final = frozenset({"storegate.wire"})
_ALLOWED_PREFIX: Final = "hub.domain."


class RuleStateDecodeError(HubError, ValueError):
    """A ``rule_states`` row that is not a store state this hub wrote."""


@dataclass(slots=True)
class StoreState:
    """What the engine keeps of one store, as stored in its row."""

    rules: dict[str, Any] = field(default_factory=dict)
    waiting: dict[tuple[str, str], Any] = field(default_factory=dict)  # (store, SKU) -> picks
    snapshots: list[tuple[datetime, str, str | None]] = field(default_factory=list)  # (at, ref, camera)
    latest: tuple[datetime, datetime] | None = None  # (newest event time, when it was received)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        # Only a class hub.domain defines itself, named directly: not a dotted path through a module it imports
        # (``fnmatch.os.system``), not a function, not a class it merely imports.
        if module.startswith(_ALLOWED_PREFIX) and "." not in name and not name.startswith("__"):
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                return found
        if module in _ENUM_MODULES and not name.startswith("_"):
            found = super().find_class(module, name)
            if isinstance(found, type) and issubclass(found, enum.Enum):
                return found
        raise RuleStateDecodeError(f"a rule state may not hold {module}.{name}")


def encode(state: StoreState) -> bytes:
    """The row's bytes."""
    return pickle.dumps((state.rules, state.waiting, state.snapshots, state.latest), protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> StoreState:
    """A row's state; RuleStateDecodeError if it is not one this hub wrote."""
    try:
        rules, waiting, snapshots, latest = _Unpickler(io.BytesIO(data)).load()
    except RuleStateDecodeError:
        raise
    except Exception as err:  # truncated, another format: any failure to read it is the row's
        raise RuleStateDecodeError(f"unreadable rule state: {type(err).__name__}") from err
    # Rows written before snapshots named their camera hold (at, ref) pairs.
    snapshots = [(s[0], s[1], s[2] if len(s) > 2 else None) for s in snapshots]
    return StoreState(rules=rules, waiting=waiting, snapshots=snapshots, latest=latest)


async def read_versions(session: AsyncSession, store_ids: Collection[str]) -> dict[str, int]:
    """The stored version of each of these stores that has a row."""
    rows = await session.execute(
        select(RuleStateRow.store_id, RuleStateRow.version).where(RuleStateRow.store_id.in_(sorted(store_ids)))
    )
    return {store_id: version for store_id, version in rows}


async def read_states(session: AsyncSession, store_ids: Collection[str]) -> list[tuple[str, int, bytes]]:
    """The rows of these stores: (store, version, state bytes)."""
    rows = await session.execute(
        select(RuleStateRow.store_id, RuleStateRow.version, RuleStateRow.state).where(
            RuleStateRow.store_id.in_(sorted(store_ids))
        )
    )
    return [(store_id, version, state) for store_id, version, state in rows]


async def all_stores(session: AsyncSession) -> list[str]:
    """Every store with a row, sorted (the leader's ticks go through them in chunks)."""
    return list((await session.scalars(select(RuleStateRow.store_id).order_by(RuleStateRow.store_id))).all())


async def write_states(session: AsyncSession, rows: Sequence[tuple[str, int, bytes]], *, now: datetime) -> None:
    """Write (store, version, state) rows; the caller holds the stores' locks, so the versions are its own."""
    if not rows:
        return
    statement = pg_insert(RuleStateRow)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[RuleStateRow.store_id],
            set_={"version": statement.excluded.version, "state": statement.excluded.state, "updated_at": now},
        ),
        [{"store_id": s, "version": v, "state": data, "updated_at": now} for s, v, data in rows],
    )
