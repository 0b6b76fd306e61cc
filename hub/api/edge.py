"""The HTTP edge of the hub: which Host it answers to, how large a body may be, and the headers of every answer.

One pure ASGI middleware, outermost in the app (hub.app), so nothing of the API runs for a request it refuses:

* a ``Host`` header not in the allow-list is a 400 (a DNS-rebinding page in a browser on the hub's machine names
  its own host, not ``127.0.0.1``);
* a body past its limit is a 413, decided on ``Content-Length`` when there is one and on the bytes as they stream
  in otherwise (a chunked body has no length), so the API never holds more than the limit;
* every answer carries the security headers (``SECURITY_HEADERS``, a Content-Security-Policy per page, HSTS over
  TLS only) and ``Cache-Control: no-store`` unless it set its own;
* every 4xx answer is counted (``storegate_hub_api_refused_total``) and the edge's own refusals are logged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.errors import HubError

log = structlog.get_logger(__name__)

# The names that always reach a hub on the machine itself, whatever http_host is.
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")

SECURITY_HEADERS: Final = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)
# JSON, CSV and PDF answers load nothing and may be framed by nobody.
DEFAULT_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's /docs and /redoc load their scripts and styles from jsDelivr and start them with an inline script.
API_DOCS_CSP: Final = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "font-src https://fonts.gstatic.com; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The console's pages set their own (hub.console.templating.CONSOLE_CSP).
CSP_OF_PATH: Final = {"/docs": API_DOCS_CSP, "/redoc": API_DOCS_CSP}
# Sent over TLS only: over plain HTTP a browser ignores it, and behind a proxy the proxy's scheme decides.
HSTS: Final = "max-age=31536000"


class BodyTooLargeError(HubError, HTTPException):
    """A request body past its limit: a 413 wherever the body is read (FastAPI passes HTTPException on)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body is larger than the {limit} bytes allowed here")


def host_name(header: str) -> str:
    """The host of a Host header, without its port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed_hosts_of(configured: Iterable[str] | None, http_host: str) -> frozenset[str]:
    """The hosts the hub answers to: ``configured``, or else ``http_host`` and the loopback names."""
    names = list(configured) if configured is not None else [http_host, *LOOPBACK_HOSTS]
    return frozenset(host_name(name) if not name.startswith("*") else name.lower() for name in names)


def _host_allowed(host: str, allowed: Collection[str]) -> bool:
    if "*" in allowed or host in allowed:
        return True
    return any(pattern.startswith("*.") and host.endswith(pattern[1:]) for pattern in allowed)


class HttpEdge:
    """Host allow-list, body limit and response headers, in front of the whole app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Collection[str],
        max_body_bytes: int,
        large_body_bytes: int,
        large_body_paths: Collection[str],
    ) -> None:
        self.app = app
        self.allowed_hosts = frozenset(allowed_hosts)
        self.max_body_bytes = max_body_bytes
        self.large_body_bytes = large_body_bytes
        self.large_body_paths = frozenset(large_body_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse what the edge refuses; hand the rest on with a bounded body and the headers added."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self._add_headers(MutableHeaders(scope=message), path, secure=scope.get("scheme") == "https")
                self._count(scope, int(message["status"]))
            await send(message)

        headers = Headers(scope=scope)
        host = host_name(headers.get("host", ""))
        if not _host_allowed(host, self.allowed_hosts):
            log.warning("api_host_refused", host=headers.get("host", "")[:255], path=path, client=_client(scope))
            detail = f"this hub does not answer to the host {host[:255]!r}; see http_allowed_hosts"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send_with_headers)
            return
        limit = self.large_body_bytes if path in self.large_body_paths else self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and not declared.isdigit():
            detail = "the Content-Length header is not a number"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send_with_headers)
            return
        if declared is not None and int(declared) > limit:
            await self._refuse_body(scope, receive, send_with_headers, limit, declared=declared)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except BodyTooLargeError:
            # Raised where the app did not turn it into its 413 itself (outside a route's body reading).
            if started:
                raise
            await self._refuse_body(scope, receive, send_with_headers, limit, declared=None)

    async def _refuse_body(
        self, scope: Scope, receive: Receive, send: Send, limit: int, *, declared: str | None
    ) -> None:
        log.warning("api_body_refused", path=scope["path"], limit=limit, content_length=declared, client=_client(scope))
        detail = BodyTooLargeError(limit).detail
        # Connection: close, so the server does not read the rest of a body nobody wants.
        response = JSONResponse({"detail": detail}, status_code=413, headers={"connection": "close"})
        await response(scope, receive, send)

    @staticmethod
    def _add_headers(headers: MutableHeaders, path: str, *, secure: bool) -> None:
        for name, value in SECURITY_HEADERS:
            headers.setdefault(name, value)
        headers.setdefault("content-security-policy", CSP_OF_PATH.get(path, DEFAULT_CSP))
        # Answers hold stock, alerts and the hub's state: no shared or browser cache keeps them.
        headers.setdefault("cache-control", "no-store")
        if secure:
            headers.setdefault("strict-transport-security", HSTS)

    @staticmethod
    def _count(scope: Scope, status: int) -> None:
        if not 400 <= status < 500:
            return
        app = scope.get("app")
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        if runtime is not None:
            runtime.metrics.api_refused.labels(status=str(status)).inc()


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None
