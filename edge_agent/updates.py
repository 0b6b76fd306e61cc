"""Software updates on the gateway: the ``update`` command, the new release's probation, and the outcome's report.

The hub's rollout (hub.releases) sends ``update`` with a version, its SHA-256, where to download it on the gateway
listener and a probation time. The running agent:

1. downloads the wheel over mTLS (the gateway's certificate), checks its SHA-256 and that it is a wheel of
   ``storegate`` of that version (:func:`storegate.wheels.inspect_wheel`);
2. unpacks it **beside** the running release, into ``<home>/releases/<version>/lib`` (no pip, no network: the
   dependencies are the installation's own; a release whose dependencies changed needs them installed first);
3. writes the update record (``<home>/update.json``, 0600: the command, from which release to which, the
   probation), points ``<home>/current`` at the new release, answers ``accepted`` ("the outcome follows") and stops
   cleanly: the outbox is closed by the old code before the new one opens it, so nothing is lost or sent twice.

The stable launcher (:mod:`launcher.releases`, the installation's own code, which never runs a release's) then
starts the new release and watches its probation. The new agent confirms it here (:class:`UpdateWatch`) once it
has an ack from the hub (or, with nothing to send, a connection) and every configured device is up; if it does not
within the probation — a crash at import included — the launcher switches back and records why. Whichever agent
runs afterwards reports the outcome to the hub on the gateway listener: ``done``, or ``failed`` "rolled back from X
to Y: why".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import ssl
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import storegate
from edge_agent.commands import FinalStatus, GatewayCommandHandler, Progress
from edge_agent.errors import AgentError
from edge_agent.snapshots import client_ssl_context
from storegate import wire
from storegate.private_files import write_private
from storegate.wheels import VERSION_PATTERN, WheelError, inspect_wheel, safe_member

if TYPE_CHECKING:
    from edge_agent.agent import EdgeAgent
    from edge_agent.config import AgentConfig

log = structlog.get_logger(__name__)

UPDATE_COMMAND: Final = "update"
# The agent ends with this code once it has switched to a new release: the launcher starts that release.
EXIT_SWITCH: Final = 75
# The gateway home (provisioning.layout, which the agent may not import): the environment's, else the config's.
HOME_ENV: Final = "STOREGATE_AGENT_HOME"
# Set by the launcher in the environment of a release it starts: which release this process is.
RELEASE_ENV: Final = "STOREGATE_RELEASE"
MAX_WHEEL_BYTES: Final = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT_S: Final = 120.0
OUTCOME_PATH: Final = "/api/v1/gateway/updates/{command_id}/outcome"
WATCH_INTERVAL_S: Final = 0.5
REPORT_RETRY_MAX_S: Final = 60.0

RecordState = Literal["switching", "probation", "confirmed", "rolled_back", "abandoned"]


class UpdateArgs(BaseModel):
    """The ``update`` command's arguments, as hub.releases.runner.update_args writes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(pattern=VERSION_PATTERN, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    download_path: str = Field(pattern=r"^/api/v1/gateway/releases/[^/?#]+/wheel$", max_length=200)
    probation_s: int = Field(ge=10, le=86_400)


class Outcome(BaseModel):
    """What became of an update, as reported to the hub."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["done", "failed"]
    detail: str = Field(max_length=2000)


class UpdateRecord(BaseModel):
    """The update in progress or just finished (``<home>/update.json``), shared by the agent and the launcher.

    ``from_release`` is what ``current`` named before (None: the installation itself), ``to_version`` the release
    switched to. The launcher sets ``probation_started`` (time.time()) when it starts the new release; the new agent
    sets ``confirmed``; the launcher sets ``rolled_back`` with the outcome. ``reported`` once the hub has it.
    """

    model_config = ConfigDict(extra="forbid")

    command_id: str
    from_version: str
    from_release: str | None
    to_version: str
    probation_s: int
    state: RecordState
    probation_started: float | None = None
    outcome: Outcome | None = None
    reported: bool = False


# --------------------------------------------------------------------------------------- the gateway home's files


def update_home(config_path: Path) -> Path:
    """The gateway home of the agent of ``config_path``: ``STOREGATE_AGENT_HOME``, else the config's directory."""
    named = os.environ.get(HOME_ENV)
    return Path(named) if named else config_path.resolve().parent


def record_path(home: Path) -> Path:
    """The update record."""
    return home / "update.json"


def releases_dir(home: Path) -> Path:
    """Where releases are installed beside each other."""
    return home / "releases"


def release_lib(home: Path, version: str) -> Path:
    """The importable tree of one installed release (first on ``sys.path`` when it runs)."""
    return releases_dir(home) / version / "lib"


def current_link(home: Path) -> Path:
    """The symlink that names the release to run (absent: the installation's own code)."""
    return home / "current"


def read_record(home: Path) -> UpdateRecord | None:
    """The update record, or None when there is none (a broken one is logged and treated as none)."""
    path = record_path(home)
    try:
        return UpdateRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as err:
        log.error("update_record_unreadable", path=str(path), error=str(err)[:300])
        return None


def write_record(home: Path, record: UpdateRecord) -> None:
    """Write the update record (0600, atomically)."""
    write_private(record_path(home), record.model_dump_json(indent=1))


def current_release(home: Path) -> str | None:
    """The release ``current`` names, or None (no link: the installation's own code)."""
    link = current_link(home)
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    return Path(target).name


def switch_current(home: Path, version: str | None) -> None:
    """Point ``current`` at release ``version`` (None: remove it, back to the installation), atomically."""
    link = current_link(home)
    if version is None:
        link.unlink(missing_ok=True)
        return
    temporary = home / f".current-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(f"releases/{version}", temporary)
    os.replace(temporary, link)


def install_wheel(home: Path, version: str, data: bytes) -> Path:
    """Unpack the checked wheel ``data`` into ``releases/<version>/lib`` (replacing an older copy); the lib path.

    Unpacking is what installing a pure-Python wheel is; every member was checked to stay inside the directory
    (:func:`storegate.wheels.safe_member`). The ``*.data`` directories (scripts) are not needed: the launcher runs
    the release with ``python -m launcher``.
    """
    target = releases_dir(home) / version
    partial = releases_dir(home) / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    lib = partial / "lib"
    lib.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.infolist():
            name = member.filename
            if not safe_member(name):  # checked before; never unpack one that is not
                raise WheelError(f"unsafe member {name[:200]!r}")
            if name.split("/", 1)[0].endswith(".data") or name.endswith("/"):
                continue
            destination = lib / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.read(member))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target / "lib"


# ------------------------------------------------------------------------------------------------ the updater


class Updater:
    """The ``update`` command of a running agent, and the probation and report of the release that runs now.

    ``request_stop`` stops the agent (cleanly: the outbox is closed) once it has switched; :attr:`exit_code` then
    says so to the launcher. ``transport`` is a seam for tests (httpx).
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        home: Path,
        request_stop: Callable[[], None],
        running_version: str = storegate.__version__,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._home = home
        self._request_stop = request_stop
        self._running = running_version
        self._transport = transport
        self._lock = asyncio.Lock()
        self.switched_to: str | None = None

    @property
    def commands(self) -> dict[str, GatewayCommandHandler]:
        """The gateway commands this adds to the agent."""
        return {UPDATE_COMMAND: self.handle}

    def exit_code(self, otherwise: int) -> int:
        """EXIT_SWITCH once the agent switched to a new release (the launcher runs it next), else ``otherwise``."""
        return EXIT_SWITCH if self.switched_to is not None else otherwise

    def _ssl_context(self) -> ssl.SSLContext | None:
        mqtt = self._config.mqtt
        if mqtt.cert_file is None:
            return None
        return client_ssl_context(ca_file=mqtt.ca_file, cert_file=mqtt.cert_file, key_file=mqtt.key_file)

    def _client(self, context: ssl.SSLContext, timeout_s: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=context, timeout=timeout_s, transport=self._transport)

    async def handle(self, command: wire.Command, progress: Progress) -> tuple[FinalStatus, str]:
        """Download, check and install the release beside this one, switch to it, and stop for the launcher."""
        try:
            args = UpdateArgs.model_validate(command.args)
        except ValidationError as err:
            return "rejected", f"bad update arguments: {err.errors()[0]['loc']} {err.errors()[0]['msg']}"[:500]
        hub_url = self._config.snapshots.hub_url
        if hub_url is None:
            return "rejected", "this gateway has no [snapshots] hub_url: it cannot download releases from the hub"
        if args.version == self._running:
            return "done", f"already running {args.version}"
        if not self._home.is_dir():
            return "rejected", f"the gateway home {self._home} does not exist: releases are installed there"
        if self._lock.locked() or self.switched_to is not None:
            return "rejected", "an update is in progress on this gateway"
        async with self._lock:
            log.info("update_starting", version=args.version, running=self._running, command_id=str(command.command_id))
            try:
                context = await asyncio.to_thread(self._ssl_context)
                if context is None:
                    return "rejected", "this gateway has no certificate (mqtt.cert_file) to download releases with"
                data = await self._download(context, hub_url.rstrip("/") + args.download_path)
                digest = hashlib.sha256(data).hexdigest()
                if digest != args.sha256:
                    return "failed", f"the download's SHA-256 is {digest}, not {args.sha256}: nothing was installed"
                info = await asyncio.to_thread(inspect_wheel, data, max_bytes=MAX_WHEEL_BYTES)
                if info.version != args.version:
                    return "failed", f"the wheel is version {info.version}, not {args.version}: nothing was installed"
                await asyncio.to_thread(install_wheel, self._home, args.version, data)
            except (httpx.HTTPError, OSError, ssl.SSLError, WheelError, DownloadError) as err:
                log.warning("update_failed", version=args.version, error=str(err)[:300])
                return "failed", f"the release {args.version} could not be installed: {err}; {self._running} runs on"
            record = UpdateRecord(
                command_id=str(command.command_id),
                from_version=self._running,
                from_release=current_release(self._home),
                to_version=args.version,
                probation_s=args.probation_s,
                state="switching",
            )
            await asyncio.to_thread(write_record, self._home, record)
            await asyncio.to_thread(switch_current, self._home, args.version)
            self.switched_to = args.version
            progress(
                f"installed {args.version} beside {self._running}; switching to it, with {args.probation_s} s to reach "
                "the hub and its devices (the outcome follows)"
            )
            log.info("update_switching", version=args.version, running=self._running)
            self._request_stop()
        # The agent stops; this command's outcome is reported by the agent that runs next.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _download(self, context: ssl.SSLContext, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async with self._client(context, DOWNLOAD_TIMEOUT_S) as client, client.stream("GET", url) as response:
            if response.status_code != 200:
                body = (await response.aread())[:300].decode("utf-8", "replace")
                raise DownloadError(f"the hub answered {response.status_code} for {url}: {body}")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_WHEEL_BYTES:
                    raise DownloadError(f"the release is larger than {MAX_WHEEL_BYTES:,} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ after a switch: probation and report

    @contextlib.asynccontextmanager
    async def watching(self, agent: EdgeAgent) -> AsyncIterator[None]:
        """While the agent runs: confirm this release's probation, and report an update's outcome to the hub."""
        task = asyncio.create_task(self._watch(agent), name="update watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, agent: EdgeAgent) -> None:
        record = await asyncio.to_thread(read_record, self._home)
        if record is None:
            return
        if record.state == "probation" and record.to_version == self._running:
            record = await self._confirm(agent, record)
        if record.outcome is not None and not record.reported:
            await self._report(record)

    async def _confirm(self, agent: EdgeAgent, record: UpdateRecord) -> UpdateRecord:
        """Wait until this release reaches the hub and its devices; then record it (the launcher stops watching)."""
        started = time.monotonic()
        while True:
            stats = agent.stats
            reached_hub = stats.acked > 0 or (stats.connected and stats.depth == 0)
            if reached_hub and all(up for _, up in stats.devices_up):
                break
            await asyncio.sleep(WATCH_INTERVAL_S)  # polling the agent's counters, not waiting for a test
        took = time.monotonic() - started
        detail = (
            f"updated from {record.from_version} to {record.to_version}: it reached the hub and its "
            f"{len(agent.stats.devices_up)} device(s) in {took:.0f} s"
        )
        confirmed = record.model_copy(update={"state": "confirmed", "outcome": Outcome(status="done", detail=detail)})
        current = await asyncio.to_thread(read_record, self._home)
        if current is not None and current.state != "probation":  # the launcher decided first (rolled back)
            return current
        await asyncio.to_thread(write_record, self._home, confirmed)
        log.info("update_confirmed", version=record.to_version, after_s=round(took, 1))
        return confirmed

    async def _report(self, record: UpdateRecord) -> None:
        """Send the outcome to the hub until it has it (or refuses it for good)."""
        assert record.outcome is not None
        hub_url = self._config.snapshots.hub_url
        context = await asyncio.to_thread(self._ssl_context)
        if hub_url is None or context is None:
            log.error("update_outcome_not_reported", reason="no hub_url or certificate", outcome=record.outcome.detail)
            return
        url = hub_url.rstrip("/") + OUTCOME_PATH.format(command_id=record.command_id)
        delay = 1.0
        async with self._client(context, 30.0) as client:
            while True:
                try:
                    response = await client.post(url, json=record.outcome.model_dump())
                    if response.status_code == 200 or 400 <= response.status_code < 500:
                        break
                    error = f"HTTP {response.status_code}"
                except httpx.HTTPError as err:
                    error = str(err) or type(err).__name__
                log.warning("update_outcome_not_reported", error=error, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPORT_RETRY_MAX_S)
        if response.status_code != 200:
            log.error("update_outcome_refused", status=response.status_code, body=response.text[:300])
        else:
            log.info("update_outcome_reported", status=record.outcome.status, detail=record.outcome.detail)
        await asyncio.to_thread(write_record, self._home, record.model_copy(update={"reported": True}))


class DownloadError(AgentError):
    """The hub did not give the release (an error status, too large)."""
