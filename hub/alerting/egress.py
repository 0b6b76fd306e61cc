"""Where the hub may send webhooks: public addresses only, unless an admin allow-lists a network or a host.

A webhook URL is the one place where someone with API access makes the hub open a connection of their
choosing. Without a check it reaches what only the hub can reach: Redis or PostgreSQL on loopback, the
cloud's metadata service on 169.254.169.254, the store network behind the data centre's firewall.

The check runs twice:

* when a webhook is created (:func:`url_problem`): a host written as an address, in any spelling the
  C library accepts (``0x7f000001``, ``2130706433``, ``017700000001``, ``127.1``, ``[::ffff:127.0.0.1]``),
  the ``localhost`` names, and the addresses a name resolves to at that moment;
* every time the sender connects (:class:`GuardedBackend`), after DNS: every address the name resolves
  to is checked and the connection goes to a checked address, so a name that answers a public address
  at creation and ``127.0.0.1`` later (DNS rebinding) still cannot reach loopback. The URL's host is
  kept for the Host header, TLS SNI and certificate verification.

:class:`~hub.alerting.egress_policy.EgressPolicy` is the pure part; :func:`resolve` and :class:`GuardedBackend` do
the I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import httpcore
import httpx

from hub.alerting.egress_policy import EgressPolicy, IPAddress, WebhookTargetRefused, normal_host

# Resolves a host name to its addresses (text form); tests substitute it to play a DNS server.
Resolver = Callable[[str, int], Awaitable[list[str]]]
# How long creating a webhook waits for DNS; a name that does not resolve yet is checked when connecting.
CREATE_RESOLVE_TIMEOUT_S: Final = 3.0


# --------------------------------------------------------------------------- I/O: DNS and the checks


async def resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host``, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def addresses_of(host: str, port: int, policy: EgressPolicy, resolver: Resolver | None = None) -> list[IPAddress]:
    """Every address of ``host``: without DNS for an address or a localhost name, else through the resolver."""
    fixed = policy.fixed_addresses(host)
    if fixed is not None:
        return list(fixed)
    answers = await (resolver or resolve)(host, port)
    return [ipaddress.ip_address(answer.split("%", 1)[0]) for answer in answers]


def userinfo_problem(url: str) -> str | None:
    """Why a URL with a user name or password is refused (they would be sent and logged in the clear)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not contain a user name or password; the receiver authenticates the hub by the signature"
    return None


async def url_problem(url: str, policy: EgressPolicy, resolver: Resolver | None = None) -> str | None:
    """Why the hub may not send to ``url`` (checked when a webhook is created); None when it may.

    A name that does not resolve now is accepted: DNS may not know it yet, and the sender checks it
    again, after DNS, every time it connects.
    """
    problem = userinfo_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    if policy.host_allowed(host):
        return None
    try:
        async with asyncio.timeout(CREATE_RESOLVE_TIMEOUT_S):
            addresses = await addresses_of(host, port, policy, resolver)
    except (OSError, TimeoutError, ValueError):
        return None
    return policy.addresses_problem(host, addresses)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, checking every address before it connects and connecting to that address.

    httpcore hands this the URL's host; TLS is started afterwards by httpcore with the same host as SNI
    and for certificate verification, so pinning the address changes nothing but where the socket goes.
    """

    def __init__(
        self,
        *,
        policy: EgressPolicy,
        resolver: Resolver | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._on_refused = on_refused
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, refuse it if any address is not allowed, else connect to the first that answers."""
        try:
            addresses = await addresses_of(host, port, self._policy, self._resolver)
        except (OSError, ValueError) as err:
            raise httpcore.ConnectError(f"cannot resolve {normal_host(host)}: {err}") from err
        if not addresses:
            raise httpcore.ConnectError(f"{normal_host(host)} has no address")
        # Every address, not only the one used: a resolver that mixes a public and a private answer is refused.
        problem = self._policy.addresses_problem(host, addresses)
        if problem is not None:
            if self._on_refused is not None:
                self._on_refused(normal_host(host), problem)
            raise WebhookTargetRefused(problem)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                last_error = err
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a webhook is a URL, not a socket path."""
        raise WebhookTargetRefused("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """httpcore's retry wait, as the default backend does it."""
        await self._inner.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose connections go through :class:`GuardedBackend`.

    httpx's own transport does not take a network backend, so this one builds the pool itself; it never
    uses a proxy (a proxy would make the connection, unchecked, to wherever the URL says). httpcore's
    exceptions are not turned into httpx's (that mapping is private to httpx): the sender reports any
    exception by its type and message, which are the same names (``ConnectError``, ``ReadTimeout``).
    """

    def __init__(self, *, backend: GuardedBackend, ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            # httpx's default: certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR when set (a private CA).
            ssl_context=ssl_context if ssl_context is not None else httpx.create_ssl_context(),
            network_backend=backend,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the guarded pool."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        core_response = await self._pool.handle_async_request(core_request)
        assert isinstance(core_response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response.stream),
            extensions=core_response.extensions,
        )

    async def aclose(self) -> None:
        """Close the pool's connections."""
        await self._pool.aclose()
