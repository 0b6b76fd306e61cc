"""``storegate provision enroll``: a gateway enrols itself with a one-time token, and its agent starts as a service.

On the gateway, in one command the technician pastes (or none, from a first-boot file: :mod:`provisioning.bundle`):

1. the token is read (:func:`storegate.enrolment.parse_token`): its id, secret and the pin of the hub's CA;
2. a new private key is made here (``openssl``, :mod:`storegate.csr`); only its CSR leaves the gateway;
3. ``POST /api/v1/enrol`` to the hub over HTTPS, trusting the system's CAs or ``--hub-ca`` (plain HTTP only to a hub
   on this machine's loopback: the token would cross the network in clear);
4. the CA certificate in the answer must match the token's pin, or nothing is written: an answer from anyone but the
   hub the token came from is refused;
5. the key (0600), the certificate and the CA go into the gateway home's ``tls/``, the agent config (validated, with
   its TLS files checked: the certificate is the key's and the CA signed it) into ``agent.toml``;
6. the agent's unit is rendered into ``--unit-dir`` and, when systemd runs, reloaded and enabled with ``--now``;
   otherwise the command to start the agent by hand is printed.

Every refusal is a sentence (the hub's own when it refused), exit 2; a hub that cannot be reached is exit 1.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import ValidationError

from provisioning.agent_config import TlsFiles, write_agent_config
from provisioning.layout import GatewayHome
from provisioning.units import AGENT_UNIT, UnitPaths, render_unit
from storegate.csr import KeyGenerationError, new_key_and_csr
from storegate.enrolment import (
    ENROL_PATH,
    EnrolAnswer,
    EnrolmentToken,
    EnrolRequest,
    TokenFormatError,
    ca_pin,
    parse_link,
    parse_token,
)
from storegate.private_files import private_dir, write_private

log = structlog.get_logger(__name__)

DEFAULT_UNIT_DIR: Final = Path("/etc/systemd/system")
SYSTEMD_RUNTIME_DIR: Final = Path("/run/systemd/system")  # present only while systemd is PID 1 (sd_booted)
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
TIMEOUT_S: Final = 30.0


class EnrolRefusedError(Exception):
    """The enrolment cannot go on: a bad token, the hub's refusal, a CA that is not the pinned one (exit 2)."""


class EnrolFailedError(Exception):
    """Something failed that trying again may fix: the hub unreachable, openssl, systemctl (exit 1)."""


@dataclass(frozen=True, slots=True)
class EnrolmentFile:
    """What a first-boot enrolment file holds (JSON, 0600): the hub's address and the token."""

    hub_url: str
    token: str

    @classmethod
    def read(cls, path: Path) -> EnrolmentFile:
        """The file's hub and token; EnrolRefusedError in words when it is not one."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(hub_url=str(raw["hub"]), token=str(raw["token"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise EnrolRefusedError(
                f"{path} is not an enrolment file ({err.__class__.__name__}): make it with storegate provision bundle"
            ) from None

    def write(self, path: Path) -> None:
        """Write it 0600 (it holds a secret)."""
        write_private(path, json.dumps({"hub": self.hub_url, "token": self.token}) + "\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolOptions:
    """What ``storegate provision enroll`` was given."""

    hub_url: str
    token: str
    home: GatewayHome
    unit_dir: Path = DEFAULT_UNIT_DIR
    executable: Path
    user: str = "storegate"
    hub_ca: Path | None = None  # trust this CA for the hub's HTTPS instead of the system's
    force: bool = False
    systemd_runtime_dir: Path = SYSTEMD_RUNTIME_DIR
    from_file: Path | None = None  # deleted once enrolled: the token is spent
    transport: httpx.BaseTransport | None = field(default=None, repr=False)  # tests only


@dataclass(frozen=True, slots=True)
class Enrolled:
    """What enrolling did, for the report printed to the technician."""

    store_id: str
    gateway_id: str
    not_after: str
    unit_path: Path
    started: bool
    lines: list[str]


def token_and_hub(*, hub: str | None, token: str | None, link: str | None) -> tuple[str, str]:
    """``(hub_url, token)`` from --hub and --token, or from --link; EnrolRefusedError saying what is missing."""
    if link is not None:
        try:
            return parse_link(link)
        except TokenFormatError as err:
            raise EnrolRefusedError(str(err)) from None
    if hub is None or token is None:
        raise EnrolRefusedError("give --hub URL and --token TOKEN (as the hub showed them), or --link LINK")
    return hub, token


def check_hub_url(url: str) -> str:
    """The hub's base URL without a trailing slash; HTTPS, or HTTP to this machine only."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EnrolRefusedError(f"--hub must be the hub's address, e.g. https://hub.example.net, not {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise EnrolRefusedError(
            f"--hub {url} is plain HTTP: the token would cross the network readable by anyone; use the hub's https:// "
            "address"
        )
    return url.strip().rstrip("/")


def _verify(options: EnrolOptions) -> ssl.SSLContext | bool:
    if options.hub_ca is None:
        return True  # the system's CAs
    try:
        return ssl.create_default_context(cafile=str(options.hub_ca))
    except (OSError, ssl.SSLError) as err:
        raise EnrolRefusedError(f"--hub-ca {options.hub_ca} holds no usable CA certificate ({err})") from None


def _ask_hub(options: EnrolOptions, hub_url: str, request: EnrolRequest) -> EnrolAnswer:
    url = hub_url + ENROL_PATH
    try:
        with httpx.Client(verify=_verify(options), timeout=TIMEOUT_S, transport=options.transport) as client:
            response = client.post(url, json=request.model_dump())
    except httpx.HTTPError as err:
        raise EnrolFailedError(
            f"the hub at {hub_url} could not be reached ({err.__class__.__name__}: {err}); check the address, the "
            "network and the gateway's clock, then run the same command again (should the hub then say the token "
            "was used, its answer was lost on the way: an operator revokes the gateway and makes a new token)"
        ) from None
    if response.status_code != 201:
        raise EnrolRefusedError(f"the hub refused the enrolment ({response.status_code}): {_detail(response)}")
    try:
        return EnrolAnswer.model_validate_json(response.content)
    except ValidationError as err:
        raise EnrolFailedError(f"the hub's answer is not an enrolment ({err.error_count()} problems)") from None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase
    if isinstance(detail, list):  # a 422: the problems of the request
        return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    return str(detail)


def enroll(options: EnrolOptions, *, run: Callable[[list[str]], None] | None = None) -> Enrolled:
    """Enrol this gateway and install its agent; EnrolRefusedError or EnrolFailedError in words otherwise."""
    home = options.home
    hub_url = check_hub_url(options.hub_url)
    try:
        token: EnrolmentToken = parse_token(options.token)
    except TokenFormatError as err:
        raise EnrolRefusedError(str(err)) from None
    systemd_runs = options.systemd_runtime_dir.is_dir()
    if systemd_runs and _account(options.user) is None:  # before the token is spent: the unit could not start
        raise EnrolRefusedError(
            f"the account {options.user!r} the agent runs as does not exist: create it with "
            f"`sudo useradd --system --home-dir {home.root} --shell /usr/sbin/nologin {options.user}` "
            "(or give --user), then run the same command again"
        )
    if not options.force and (home.config.exists() or home.key_file.exists()):
        raise EnrolRefusedError(
            f"{home.root} holds a gateway already ({home.config.name} or tls/{home.key_file.name}); "
            "pass --force to enrol it again and replace them"
        )
    try:
        made = new_key_and_csr(f"enrolling-{token.token_id}")  # the hub names the certificate, not us
    except KeyGenerationError as err:
        raise EnrolFailedError(str(err)) from None
    answer = _ask_hub(options, hub_url, EnrolRequest(token=token.text, csr_pem=made.csr_pem))
    try:
        pin = ca_pin(answer.ca_certificate_pem)
    except ValueError:
        pin = "none"
    if pin != token.ca_pin:
        log.error("enrolment_ca_mismatch", hub=hub_url, expected=token.ca_pin, received=pin)
        raise EnrolRefusedError(
            f"the CA certificate {hub_url} sent (SHA-256 {pin}) is not the one the token pins ({token.ca_pin}): "
            "this is not the hub the token came from, or the token was altered; nothing was written"
        )
    private_dir(home.root)
    private_dir(home.tls_dir)
    write_private(home.key_file, made.key_pem)
    write_private(home.cert_file, answer.certificate_pem)
    write_private(home.ca_file, answer.ca_certificate_pem)
    try:
        write_agent_config(
            home.config,
            store_id=answer.store_id,
            gateway_id=answer.gateway_id,
            broker_host=answer.broker_host,
            broker_port=answer.broker_port,
            username=None,
            outbox=home.outbox,
            files=TlsFiles(ca_file=home.ca_file, cert_file=home.cert_file, key_file=home.key_file),
            gateway_listener_url=answer.gateway_listener_url,
        )
    except ValueError as err:  # the certificate is not our key's, or not the CA's: written, but unusable
        raise EnrolFailedError(f"the hub's answer cannot be used: {err}") from None
    owner = _account(options.user)
    if owner is not None and os.geteuid() == 0:  # run as root: the agent's account must read its own files
        for path in (home.root, home.tls_dir, home.key_file, home.cert_file, home.ca_file, home.config):
            os.chown(path, owner[0], owner[1])
    lines = [
        f"enrolled as {answer.store_id}/{answer.gateway_id}; certificate {answer.serial} valid until "
        f"{answer.not_after:%Y-%m-%d %H:%M} UTC (the agent renews it)",
        f"wrote {home.config}, {home.key_file} (0600, made here), {home.cert_file}, {home.ca_file}",
    ]
    unit_path, started, more = install_agent_unit(options, run=run)
    lines += more
    if options.from_file is not None:
        options.from_file.unlink(missing_ok=True)  # the token is spent: nothing secret stays on the boot partition
        lines.append(f"removed {options.from_file} (its token is spent)")
    log.info("gateway_enrolled", store_id=answer.store_id, gateway_id=answer.gateway_id, serial=answer.serial)
    return Enrolled(
        store_id=answer.store_id,
        gateway_id=answer.gateway_id,
        not_after=answer.not_after.isoformat(),
        unit_path=unit_path,
        started=started,
        lines=lines,
    )


def _account(user: str) -> tuple[int, int] | None:
    """The uid and gid of ``user``, or None when there is no such account."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _systemctl(args: list[str]) -> None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise EnrolFailedError("systemctl is not installed, though systemd runs: start the agent by hand (below)")
    done = subprocess.run([systemctl, *args], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise EnrolFailedError(f"systemctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")


def install_agent_unit(
    options: EnrolOptions, *, run: Callable[[list[str]], None] | None = None
) -> tuple[Path, bool, list[str]]:
    """Render the agent's unit into ``options.unit_dir``; enable and start it when systemd runs."""
    home = options.home
    unit = render_unit(AGENT_UNIT, UnitPaths(executable=options.executable, home=home.root, user=options.user))
    options.unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = options.unit_dir / AGENT_UNIT
    temporary = unit_path.with_name(f".{unit_path.name}.partial")
    temporary.write_text(unit, encoding="utf-8")
    os.chmod(temporary, 0o644)  # systemd reads units as root; they hold no secret
    os.replace(temporary, unit_path)
    lines = [f"wrote {unit_path}"]
    by_hand = (
        f"start the agent by hand: STOREGATE_AGENT_HOME={home.root} {options.executable} agent --config {home.config}"
    )
    if not options.systemd_runtime_dir.is_dir():
        lines += [
            f"systemd is not running here (no {options.systemd_runtime_dir}), so the agent was not started;",
            by_hand,
        ]
        return unit_path, False, lines
    call = run or _systemctl
    try:
        call(["daemon-reload"])
        call(["enable", "--now", AGENT_UNIT])
    except EnrolFailedError as err:
        raise EnrolFailedError(f"{err}\n{by_hand}") from None
    lines.append(f"{AGENT_UNIT} enabled and started; see it with: systemctl status {AGENT_UNIT}")
    return unit_path, True, lines
