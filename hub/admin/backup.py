"""Online backup and restore of the hub's database: ``storegate hub backup`` and ``storegate hub restore``.

SQLite: the backup is one consistent snapshot taken through SQLite's backup API in a single step, that is
inside one read transaction of the live file, so the hub keeps writing meanwhile (WAL mode). The copy is
checked with ``PRAGMA integrity_check`` before it is renamed into place.

PostgreSQL: a REPEATABLE READ transaction exports its snapshot; the row counts are read in it and
``pg_dump --format=custom --snapshot=...`` dumps exactly that snapshot, so the report matches the file.
Restore runs ``pg_restore --no-owner --single-transaction``: it lands whole or not at all.

Both restores refuse a target that holds rows (unless ``force``), a target something else is connected to
(the hub must be stopped), and a backup whose migration revision this code does not know; afterwards the
database is migrated to head, so an older backup comes back at the current schema.

Every backup gets a manifest beside it (:mod:`hub.admin.manifest`: SHA-256, and an HMAC with the backup
key), and a restore checks the backup against it first, on the copy it goes on to restore: a backup
changed after it was written is refused and the database is not touched.

Passwords travel to pg_dump/pg_restore in ``PGPASSWORD``, never on a command line, and are scrubbed
from every message.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, func, inspect, select, table, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.admin.manifest import (
    BACKUP_KEY_FILE,
    Manifest,
    ManifestError,
    Verification,
    check_backup,
    copy_digesting,
    digest_file,
    load_key,
    read_manifest,
    write_manifest,
)
from hub.db.engine import create_engine, redacted, sqlite_path
from hub.db.migrate import alembic_config, upgrade_to_head
from hub.errors import HubError
from storegate.configfile import ConfigError
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

R = TypeVar("R")  # what a backup or a restore reports

# The first bytes of each kind of backup file, to say which one a wrong file is.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC: Final = b"PGDMP"
# How long a restore waits for a lock on a SQLite target before saying it is in use.
SQLITE_LOCK_TIMEOUT_S: Final = 1.0
# The live database is busy with the hub's writes; the backup's read waits this long for a lock.
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
PG_CONNECT_TIMEOUT_S: Final = "10"
STDERR_EXCERPT_CHARS: Final = 600
VERSION_TABLE: Final = "alembic_version"
# libpq reads the TLS mode from PGSSLMODE; asyncpg URLs spell it ?ssl= (or ?sslmode=).
_SSL_QUERY_KEYS: Final = ("sslmode", "ssl")
# "3346; 1259 16386 TABLE public events postgres" in pg_restore --list.
_TOC_TABLE: Final = re.compile(r"^\d+; \d+ \d+ TABLE (?P<schema>\S+) (?P<name>\S+) ")

DatabaseKind = Literal["sqlite", "postgresql"]
# Checks a copied backup (its SHA-256 and size) against the manifest; raises BackupError when it is refused.
_Verify = Callable[[str, int], Verification]


class BackupError(HubError):
    """A backup or restore was refused or failed; the message says why in one line, without secrets."""


@dataclass(frozen=True, kw_only=True)
class DatabaseContents:
    """A database's migration revision and the rows of each table (``alembic_version`` aside)."""

    revision: str | None
    row_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        """Rows over all tables."""
        return sum(self.row_counts.values())


@dataclass(frozen=True, kw_only=True)
class BackupReport:
    """What ``backup_database`` wrote: the file and what is in it."""

    database: str  # the URL, password masked
    path: Path
    size_bytes: int
    contents: DatabaseContents
    manifest: Path
    sha256: str
    signed: bool  # the manifest carries an HMAC with the backup key


@dataclass(frozen=True, kw_only=True)
class RestoreReport:
    """What ``restore_database`` did: the backup's revision, and the database as it is now (migrated)."""

    database: str  # the URL, password masked
    path: Path
    size_bytes: int
    backup_revision: str
    contents: DatabaseContents
    verification: Verification


@dataclass(frozen=True, kw_only=True)
class PgConnection:
    """How pg_dump/pg_restore reach a database: arguments without a password, and the environment with it."""

    arguments: tuple[str, ...]
    environment: Mapping[str, str]
    password: str | None


# --------------------------------------------------------------------------- pure helpers


def database_kind(database_url: str) -> DatabaseKind:
    """``sqlite`` or ``postgresql``; BackupError for anything else."""
    try:
        backend = make_url(database_url).get_backend_name()
    except ArgumentError:
        raise BackupError("not a database URL (expected sqlite+aiosqlite:///... or postgresql+asyncpg://...)") from None
    if backend == "sqlite":
        return "sqlite"
    if backend == "postgresql":
        return "postgresql"
    raise BackupError(f"backups of {backend} databases are not supported (only SQLite and PostgreSQL)")


def pg_connection(database_url: str, *, base_environment: Mapping[str, str] | None = None) -> PgConnection:
    """Command-line options and environment for libpq tools from a SQLAlchemy URL (host, port, user, database)."""
    url: URL = make_url(database_url)
    environment = dict(os.environ if base_environment is None else base_environment)
    arguments: list[str] = ["--no-password"]  # never prompt: a backup runs unattended
    host = url.host or _query_value(url, "host")
    if host:
        arguments.append(f"--host={host}")
    port = url.port or _query_value(url, "port")
    if port:
        arguments.append(f"--port={port}")
    if url.username:
        arguments.append(f"--username={url.username}")
    if not url.database:
        raise BackupError(f"the database URL {redacted(database_url)} names no database")
    arguments.append(f"--dbname={url.database}")
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    for key in _SSL_QUERY_KEYS:
        mode = _query_value(url, key)
        if mode:
            environment["PGSSLMODE"] = mode
    environment.setdefault("PGCONNECT_TIMEOUT", PG_CONNECT_TIMEOUT_S)
    return PgConnection(
        arguments=tuple(arguments),
        environment=environment,
        password=None if url.password is None else str(url.password),
    )


def _query_value(url: URL, key: str) -> str | None:
    value = url.query.get(key)
    if isinstance(value, tuple):
        value = value[0] if value else None
    return value


def scrub(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` masked, in case a tool or driver echoes it."""
    return message.replace(secret, "***") if secret else message


def stderr_excerpt(stderr: bytes, secret: str | None = None) -> str:
    """The last lines of a tool's stderr as one line, password masked."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    excerpt = " / ".join(lines)
    if len(excerpt) > STDERR_EXCERPT_CHARS:
        excerpt = "..." + excerpt[-STDERR_EXCERPT_CHARS:]
    return scrub(excerpt, secret) or "(no message)"


def tables_in_toc(listing: str) -> set[str]:
    """The tables of the public schema in the output of ``pg_restore --list``."""
    tables = set()
    for line in listing.splitlines():
        match = _TOC_TABLE.match(line)
        if match and match["schema"] == "public":
            tables.add(match["name"])
    return tables


def revision_in_sql(script: str) -> str | None:
    """The version in the ``COPY ... alembic_version`` block of a data-only SQL script, or None."""
    lines = script.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("COPY ") and VERSION_TABLE in line:
            values = [value for value in lines[index + 1 :] if value != ""]
            if values and values[0] != "\\.":
                return values[0].strip()
            return None
    return None


def require_known_revision(revision: str | None, *, backup: Path) -> str:
    """The revision, if this code's migrations know it; BackupError for a backup from a newer storegate."""
    if revision is None:
        raise BackupError(f"{backup} has no migration revision (its alembic_version is empty): not a hub backup")
    scripts = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused"))
    try:
        known = scripts.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupError(
            f"{backup} is at database revision {revision!r}, which this storegate does not know (its newest is "
            f"{scripts.get_current_head()!r}): it was made by a newer version; restore it with that version or later"
        )
    return revision


def _holds_data(where: str, contents: DatabaseContents) -> BackupError:
    rows = "1 row" if contents.total_rows == 1 else f"{contents.total_rows:,} rows"
    return BackupError(f"{where} holds data ({rows}); restoring would replace it: pass --force to do so")


def _size(size_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit} ({size_bytes:,} bytes)"
    return f"{size_bytes:,} bytes"


def _table_lines(contents: DatabaseContents) -> list[str]:
    width = max((len(name) for name in contents.row_counts), default=0)
    lines = [f"rows per table ({contents.total_rows:,} in all):"]
    lines += [f"  {name:<{width}}  {count:>12,}" for name, count in sorted(contents.row_counts.items())]
    return lines


_VERIFIED: Final[dict[Verification, str]] = {
    "signed": "verified: the SHA-256 matches the manifest, and the manifest's HMAC the backup key",
    "checksum": "verified: the SHA-256 matches the manifest (not signed with a backup key)",
    "unverified": "NOT verified: no manifest (--unverified)",
}


def describe_backup(report: BackupReport) -> str:
    """What a backup did, for people."""
    return "\n".join(
        [
            f"backed up {report.database}",
            f"to {report.path}: {_size(report.size_bytes)}",
            f"manifest {report.manifest}: SHA-256 {report.sha256}"
            + (", signed with the backup key" if report.signed else ", not signed (no backup key)"),
            f"database revision {report.contents.revision}",
            *_table_lines(report.contents),
        ]
    )


def describe_restore(report: RestoreReport) -> str:
    """What a restore did, for people."""
    revision = report.contents.revision
    migrated = "" if revision == report.backup_revision else f", migrated to {revision}"
    return "\n".join(
        [
            f"restored {report.path}: {_size(report.size_bytes)}",
            _VERIFIED[report.verification],
            f"into {report.database}",
            f"database revision {report.backup_revision} in the backup{migrated}",
            *_table_lines(report.contents),
        ]
    )


# --------------------------------------------------------------------------- files


def _partial_beside(path: Path) -> Path:
    """A temporary name in ``path``'s directory, so the final rename is atomic (same file system)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _create_private(path: Path) -> None:
    """Create ``path`` empty, readable by its owner only: a backup holds webhook secrets and all the data."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _take_over_ownership(partial: Path, target: Path) -> None:
    """Give the restored file the owner of the file it replaces, so the hub's user can still write it.

    Not its mode: the restored database stays 0600 even where the old file was readable by others.
    """
    if not target.exists():
        return
    status = target.stat()
    with suppress(PermissionError):  # only root may give a file away; others already own what they create
        os.chown(partial, status.st_uid, status.st_gid)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable; some platforms cannot open a directory, which is fine there."""
    with suppress(OSError):
        _fsync(path)


def _publish(partial: Path, destination: Path) -> int:
    """Make the finished ``partial`` file durable under its final name; returns its size."""
    _fsync(partial)
    os.replace(partial, destination)
    _fsync_directory(destination.parent)
    return destination.stat().st_size


def _require_directory(path: Path) -> None:
    if not path.parent.is_dir():
        raise BackupError(f"directory {path.parent} does not exist")


def _require_backup_file(path: Path, kind: DatabaseKind) -> int:
    """The size of the backup file; BackupError when it is missing or of the other database's kind."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
        size = path.stat().st_size
    except FileNotFoundError:
        raise BackupError(f"backup file {path} does not exist") from None
    except OSError as err:
        raise BackupError(f"cannot read backup file {path}: {err.strerror or err}") from None
    is_sqlite, is_pg = head.startswith(SQLITE_MAGIC), head.startswith(PG_CUSTOM_MAGIC)
    if kind == "sqlite" and is_pg:
        raise BackupError(f"{path} is a PostgreSQL dump; restore it into a PostgreSQL database")
    if kind == "postgresql" and is_sqlite:
        raise BackupError(f"{path} is a SQLite database; restore it into a SQLite database")
    if not (is_sqlite if kind == "sqlite" else is_pg):
        expected = "SQLite database" if kind == "sqlite" else "pg_dump custom-format archive"
        raise BackupError(f"{path} is not a {expected} (damaged, or not a hub backup)")
    return size


def _require_new_destination(destination: Path, *, overwrite: bool) -> None:
    _require_directory(destination)
    if destination.is_dir():
        raise BackupError(f"{destination} is a directory; give the backup file's path")
    if destination.exists() and not overwrite:
        raise BackupError(f"{destination} exists; pass --force to overwrite it")


# --------------------------------------------------------------------------- SQLite


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_contents(connection: sqlite3.Connection) -> DatabaseContents:
    names = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    revision = None
    if VERSION_TABLE in names:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = None if row is None else str(row[0])
    counts = {
        # The names come from the file's own catalogue and are quoted: nothing from outside reaches the SQL.
        name: int(connection.execute(f"SELECT count(*) FROM {_quoted(name)}").fetchone()[0])  # noqa: S608
        for name in names
        if name != VERSION_TABLE
    }
    return DatabaseContents(revision=revision, row_counts=counts)


def _checked_sqlite(connection: sqlite3.Connection, *, name: Path) -> DatabaseContents:
    """Integrity-check a copy and read what is in it; BackupError naming ``name`` when it is damaged."""
    try:
        problems = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"{name} fails SQLite's integrity check: {'; '.join(problems[:3])}")
        contents = _sqlite_contents(connection)
    except sqlite3.DatabaseError as err:
        raise BackupError(f"{name} is not a usable SQLite database: {err}") from None
    if contents.revision is None:
        raise BackupError(f"{name} has no migration revision: not a hub database")
    return contents


def _connect_existing(path: Path, *, timeout: float) -> sqlite3.Connection:
    # mode=rw: connecting must never create an empty database where one was expected.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None)


def _sqlite_backup(source: Path, destination: Path) -> tuple[DatabaseContents, int]:
    if not source.is_file():
        raise BackupError(f"database file {source} does not exist")
    if destination.resolve() == source.resolve():
        raise BackupError(f"{destination} is the database itself; back up to another file")
    partial = _partial_beside(destination)
    try:
        _create_private(partial)
        with (
            closing(_connect_existing(source, timeout=SQLITE_BUSY_TIMEOUT_S)) as live,
            closing(sqlite3.connect(partial, isolation_level=None)) as copy,
        ):
            # pages=-1: every page in one step, inside one read transaction of the live database, so the
            # copy is one consistent snapshot. In WAL mode the hub's writer is not held up meanwhile.
            live.backup(copy, pages=-1)
            # A standalone file: no -wal beside it, readable by any tool without write access.
            copy.execute("PRAGMA journal_mode=DELETE")
            contents = _checked_sqlite(copy, name=source)
        size = _publish(partial, destination)
    except sqlite3.Error as err:
        raise BackupError(f"cannot back up {source}: {err}") from None
    except OSError as err:
        raise BackupError(f"cannot write {destination}: {err.strerror or err}") from None
    finally:
        partial.unlink(missing_ok=True)
    return contents, size


@contextmanager
def _sqlite_exclusive(target: Path) -> Iterator[sqlite3.Connection | None]:
    """Hold an exclusive lock on an existing database file; BackupError if another connection has it open.

    In WAL mode every open connection keeps a shared lock on the file, even when idle, so the exclusive
    lock is refused while the hub (or anything else) has the database open, in this process or another.
    """
    if not target.exists():
        yield None
        return
    try:
        connection = _connect_existing(target, timeout=SQLITE_LOCK_TIMEOUT_S)
    except sqlite3.Error as err:
        raise BackupError(f"cannot open {target}: {err}") from None
    try:
        try:
            connection.execute("PRAGMA locking_mode=EXCLUSIVE")
            connection.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as err:
            if "locked" in str(err) or "busy" in str(err):
                raise BackupError(
                    f"{target} is in use by another connection: stop the hub (and anything else using it) first"
                ) from None
            raise BackupError(f"cannot lock {target}: {err}") from None
        except sqlite3.DatabaseError:
            # Not a database at all: nothing can be using it as one; _target_rows says so.
            pass
        yield connection
    finally:
        connection.close()


def _target_rows(connection: sqlite3.Connection, target: Path, *, force: bool) -> None:
    try:
        contents = _sqlite_contents(connection)
    except sqlite3.DatabaseError as err:
        if force:
            return
        raise BackupError(
            f"{target} exists and is not a usable SQLite database ({err}); pass --force to replace it"
        ) from None
    if contents.total_rows and not force:
        raise _holds_data(str(target), contents)


def _sqlite_restore(backup: Path, target: Path, *, force: bool, verify: _Verify) -> tuple[str, Verification]:
    """Copy the checked backup over ``target`` atomically; returns the backup's revision and how it was verified."""
    _require_directory(target)
    if target.exists() and target.resolve() == backup.resolve():
        raise BackupError(f"{backup} is the database itself; restore from another file")
    partial = _partial_beside(target)
    try:
        # Checks run on a copy beside the target: the backup file is never written to, not even by a pragma;
        # the manifest is checked on that copy, the one restored. copy_digesting writes into the 0600 file made
        # first, which keeps its mode (a new file would follow the umask).
        _create_private(partial)
        verification = verify(*copy_digesting(backup, partial))
        with closing(sqlite3.connect(partial, isolation_level=None)) as copy:
            contents = _checked_sqlite(copy, name=backup)
            copy.execute("PRAGMA journal_mode=DELETE")
        revision = require_known_revision(contents.revision, backup=backup)
        _fsync(partial)
        with _sqlite_exclusive(target) as lock:
            if lock is not None:
                _target_rows(lock, target, force=force)
                _take_over_ownership(partial, target)
            # The old database's journals must go before the new file takes its name: SQLite would
            # otherwise replay the old -wal (or a hot -journal) into the restored pages.
            for suffix in ("-wal", "-shm", "-journal"):
                target.with_name(target.name + suffix).unlink(missing_ok=True)
            os.replace(partial, target)
        _fsync_directory(target.parent)
    except sqlite3.Error as err:
        raise BackupError(f"cannot restore {backup}: {err}") from None
    except OSError as err:
        raise BackupError(f"cannot restore into {target}: {err.strerror or err}") from None
    finally:
        partial.unlink(missing_ok=True)
    return revision, verification


# --------------------------------------------------------------------------- PostgreSQL


def _contents_of(connection: Connection) -> DatabaseContents:
    """Revision and row counts, through SQLAlchemy (PostgreSQL, or SQLite after a restore)."""
    names = sorted(inspect(connection).get_table_names())
    revision = None
    if VERSION_TABLE in names:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    counts = {
        name: int(connection.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in names
        if name != VERSION_TABLE
    }
    return DatabaseContents(revision=revision, row_counts=counts)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return path


async def _run_tool(
    name: str, *arguments: str, doing: str, connection: PgConnection | None = None, secret: str | None = None
) -> bytes:
    """Run a libpq tool; its stdout, or BackupError saying what it was ``doing``, with the end of its stderr."""
    environment = dict(connection.environment) if connection is not None else None
    try:
        process = await asyncio.create_subprocess_exec(
            _tool(name),
            *arguments,
            *(connection.arguments if connection is not None else ()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
        )
    except OSError as err:
        raise BackupError(f"cannot run {name}: {err.strerror or err}") from None
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise BackupError(f"{name} failed {doing} (exit {process.returncode}): {stderr_excerpt(stderr, secret)}")
    return stdout


def _connection_error(database_url: str, err: BaseException, secret: str | None) -> BackupError:
    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
    return BackupError(f"cannot use {redacted(database_url)}: {scrub(first_line, secret)}")


async def _postgres_backup(database_url: str, destination: Path) -> tuple[DatabaseContents, int]:
    connection = pg_connection(database_url)
    engine = create_engine(database_url)
    partial = _partial_beside(destination)
    try:
        try:
            _create_private(partial)  # pg_dump writes into it and keeps its mode
        except OSError as err:
            raise BackupError(f"cannot write {destination}: {err.strerror or err}") from None
        try:
            async with engine.connect() as sa_connection:
                snapshot_connection = await sa_connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                async with snapshot_connection.begin():
                    # The dump and the counts read one snapshot, exported by this transaction while it is open.
                    exported = await snapshot_connection.exec_driver_sql("SELECT pg_export_snapshot()")
                    snapshot = exported.scalar_one()
                    contents = await snapshot_connection.run_sync(_contents_of)
                    if contents.revision is None:
                        raise BackupError(f"{redacted(database_url)} has no migration revision: not a hub database")
                    await _run_tool(
                        "pg_dump",
                        "--format=custom",
                        f"--snapshot={snapshot}",
                        f"--file={partial}",
                        doing=f"dumping {redacted(database_url)}",
                        connection=connection,
                        secret=connection.password,
                    )
        except (SQLAlchemyError, OSError) as err:
            raise _connection_error(database_url, err, connection.password) from None
        try:
            size = _publish(partial, destination)
        except OSError as err:
            raise BackupError(f"cannot write {destination}: {err.strerror or err}") from None
    finally:
        await engine.dispose()
        partial.unlink(missing_ok=True)
    return contents, size


async def _other_sessions(connection: AsyncConnection) -> int:
    result = await connection.exec_driver_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return int(result.scalar_one())


async def _prepare_postgres_target(
    database_url: str, backup_tables: set[str], *, revision: str, force: bool, secret: str | None
) -> bool:
    """Check the target and drop its tables the backup does not have (all of them if it is at another revision
    than the backup); True when it had tables at all."""
    engine = create_engine(database_url)
    where = redacted(database_url)
    try:
        async with engine.begin() as connection:
            others = await _other_sessions(connection)
            if others:
                raise BackupError(
                    f"{where} is in use by {others} other connection(s): stop the hub (and anything else using it) "
                    "first"
                )
            contents = await connection.run_sync(_contents_of)
            if contents.total_rows and not force:
                raise _holds_data(where, contents)
            # pg_restore --clean drops only what the backup has: tables of later migrations would stay,
            # and the migration to head would then find them in its way.
            extra = sorted(set(contents.row_counts) - backup_tables)
            if contents.revision is not None and contents.revision != revision:
                # Nor would it drop what a later migration changed in the backup's tables: 0005's foreign keys
                # to gateways block dropping its primary key. A backup of another revision lands on an empty schema.
                extra = sorted(contents.row_counts)
            if extra:
                await connection.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(map(_quoted, extra))} CASCADE")
            has_tables = bool(contents.row_counts) or contents.revision is not None
    except (SQLAlchemyError, OSError) as err:
        raise _connection_error(database_url, err, secret) from None
    finally:
        await engine.dispose()
    return has_tables


async def _postgres_restore(
    database_url: str, backup: Path, *, force: bool, verify: _Verify
) -> tuple[str, Verification]:
    # pg_restore reads the archive several times: it reads a private copy, checked against the manifest,
    # so what is restored is what was checked.
    with tempfile.TemporaryDirectory(prefix="storegate-restore-") as staging:
        staged = Path(staging) / backup.name
        try:
            _create_private(staged)
            verification = verify(*copy_digesting(backup, staged))
        except OSError as err:
            raise BackupError(f"cannot copy {backup} to check it: {err.strerror or err}") from None
        revision = await _postgres_restore_checked(database_url, staged, force=force, named=backup)
    return revision, verification


async def _postgres_restore_checked(database_url: str, backup: Path, *, force: bool, named: Path) -> str:
    """Restore the checked copy ``backup`` of the file ``named`` (which every message names)."""
    connection = pg_connection(database_url)
    secret = connection.password
    listing = await _run_tool("pg_restore", "--list", str(backup), doing=f"reading {named}", secret=secret)
    backup_tables = tables_in_toc(listing.decode(errors="replace"))
    script = await _run_tool(
        "pg_restore",
        "--data-only",
        f"--table={VERSION_TABLE}",
        "--file=-",
        str(backup),
        doing=f"reading {named}",
        secret=secret,
    )
    if VERSION_TABLE not in backup_tables:
        raise BackupError(f"{named} has no {VERSION_TABLE} table: not a hub backup")
    revision = require_known_revision(revision_in_sql(script.decode(errors="replace")), backup=named)
    clean = await _prepare_postgres_target(database_url, backup_tables, revision=revision, force=force, secret=secret)
    await _run_tool(
        "pg_restore",
        "--no-owner",
        "--no-privileges",  # GRANTs name roles the target server may not have
        "--single-transaction",
        *(("--clean", "--if-exists") if clean else ()),
        str(backup),
        doing=f"restoring {named}",
        connection=connection,
        secret=secret,
    )
    return revision


# --------------------------------------------------------------------------- the operations


async def _contents_after_restore(database_url: str) -> DatabaseContents:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_contents_of)
    finally:
        await engine.dispose()


async def backup_database(
    database_url: str, destination: Path, *, overwrite: bool = False, key: bytes | None = None
) -> BackupReport:
    """Write a consistent backup of the live database to ``destination``; BackupError says why not.

    SQLite: a SQLite file; PostgreSQL: a ``pg_dump --format=custom`` archive. Safe while the hub runs.
    Beside it, ``<destination>.manifest.json`` with its SHA-256, signed (HMAC-SHA256) with ``key`` if given.
    """
    kind = database_kind(database_url)
    _require_new_destination(destination, overwrite=overwrite)
    if kind == "sqlite":
        source = sqlite_path(database_url)
        if source is None:
            raise BackupError("the SQLite URL names no database file")
        contents, size = await asyncio.to_thread(_sqlite_backup, source, destination)
    else:
        contents, size = await _postgres_backup(database_url, destination)
    try:
        sha256, size = await asyncio.to_thread(digest_file, destination)
        manifest = Manifest(kind=kind, size=size, sha256=sha256, revision=str(contents.revision))
        manifest_file = write_manifest(destination, manifest if key is None else manifest.signed(key))
    except OSError as err:
        raise BackupError(f"cannot write the manifest of {destination}: {err.strerror or err}") from None
    return BackupReport(
        database=redacted(database_url),
        path=destination,
        size_bytes=size,
        contents=contents,
        manifest=manifest_file,
        sha256=sha256,
        signed=key is not None,
    )


async def restore_database(
    database_url: str,
    source: Path,
    *,
    force: bool = False,
    key: bytes | None = None,
    unverified: bool = False,
) -> RestoreReport:
    """Replace the (stopped) hub's database with the backup at ``source``, then migrate it to head.

    First checks the backup against its manifest (SHA-256; the HMAC with ``key``): a backup that does not
    match is always refused; one without a manifest, or whose HMAC cannot be checked, only with
    ``unverified``. Refuses a target with rows unless ``force``, a target in use, and a backup newer than
    this code.
    """
    kind = database_kind(database_url)
    try:
        manifest = read_manifest(source)
    except ManifestError as err:
        raise BackupError(str(err)) from None
    size = _require_backup_file(source, kind)

    def verify(sha256: str, copied: int) -> Verification:
        try:
            return check_backup(
                manifest, backup=source, kind=kind, sha256=sha256, size=copied, key=key, unverified=unverified
            )
        except ManifestError as err:
            raise BackupError(str(err)) from None

    if kind == "sqlite":
        target = sqlite_path(database_url)
        if target is None:
            raise BackupError("the SQLite URL names no database file")
        backup_revision, verification = await asyncio.to_thread(
            _sqlite_restore, source, target, force=force, verify=verify
        )
    else:
        backup_revision, verification = await _postgres_restore(database_url, source, force=force, verify=verify)
    try:
        await upgrade_to_head(database_url)
        contents = await _contents_after_restore(database_url)
    except Exception as err:  # the migration's own errors: any type Alembic or a driver raises
        secret = make_url(database_url).password
        raise BackupError(
            f"restored {source}, but migrating it to the current schema failed: "
            f"{scrub(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, secret)}"
        ) from None
    return RestoreReport(
        database=redacted(database_url),
        path=source,
        size_bytes=size,
        backup_revision=backup_revision,
        contents=contents,
        verification=verification,
    )


# --------------------------------------------------------------------------- the CLI's side


def _settings(config_path: Path | None, overrides: Mapping[str, Any]) -> tuple[str, Path]:
    """The database URL and the secrets directory (home of the default backup key) of the hub's settings."""
    from hub.settings import load_hub_settings  # the CLI's edge: settings are read only when asked

    settings = load_hub_settings(config_path, **dict(overrides))
    return settings.database_url, settings.secrets_dir


def _backup_key(key_file: Path | None, secrets_dir: Path, *, create: bool) -> bytes | None:
    """The key of ``--key-file`` (which must exist), else ``<secrets_dir>/backup.key`` (made if ``create``)."""
    try:
        if key_file is not None:
            key = load_key(key_file, create=False)
            if key is None:
                raise BackupError(f"key file {key_file} does not exist")
            return key
        return load_key(secrets_dir / BACKUP_KEY_FILE, create=create)
    except ManifestError as err:
        raise BackupError(str(err)) from None


def _run(
    verb: str,
    config_path: Path | None,
    overrides: Mapping[str, Any],
    operation: Callable[[str, Path], Coroutine[Any, Any, R]],
    describe: Callable[[R], str],
) -> int:
    """A backup or restore from the CLI: 0 and a report on stdout, 1 with a one-line reason, 2 for bad settings."""
    try:
        database_url, secrets_dir = _settings(config_path, overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = asyncio.run(operation(database_url, secrets_dir))
    except BackupError as err:
        print(f"{verb} failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(describe(report))
    return EXIT_OK


def run_backup(
    config_path: Path | None,
    overrides: Mapping[str, Any],
    destination: Path,
    *,
    overwrite: bool,
    key_file: Path | None = None,
) -> int:
    """``storegate hub backup``: 0 and a report on stdout, 1 with a one-line reason, 2 for bad settings.

    The manifest is signed with ``key_file``, else with ``<secrets_dir>/backup.key``, made on first use.
    """

    async def backup(url: str, secrets_dir: Path) -> BackupReport:
        key = _backup_key(key_file, secrets_dir, create=True)
        return await backup_database(url, destination, overwrite=overwrite, key=key)

    return _run("backup", config_path, overrides, backup, describe_backup)


def run_restore(
    config_path: Path | None,
    overrides: Mapping[str, Any],
    source: Path,
    *,
    force: bool,
    key_file: Path | None = None,
    unverified: bool = False,
) -> int:
    """``storegate hub restore``: 0 and a report on stdout, 1 with a one-line reason, 2 for bad settings."""

    async def restore(url: str, secrets_dir: Path) -> RestoreReport:
        key = _backup_key(key_file, secrets_dir, create=False)
        return await restore_database(url, source, force=force, key=key, unverified=unverified)

    return _run("restore", config_path, overrides, restore, describe_restore)
