"""Which webhook targets the hub refuses: the pure half of :mod:`hub.alerting.egress`, standard library only.

Its own module so the settings (:mod:`hub.alerting.notification_settings`) can check an allow-list without
importing the HTTP stack.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from hub.errors import HubError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6761: these names are loopback whatever a resolver says, so they are checked as loopback.
LOCALHOST_NAMES: Final = ("localhost",)
LOCALHOST_ADDRESSES: Final[tuple[IPAddress, ...]] = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
ALLOW_SETTING: Final = "notifications.webhook_allowed_networks"

# The first class an address falls in names the refusal; anything not globally routable is refused.
_ADDRESS_CLASSES: Final[tuple[tuple[str, Callable[[IPAddress], bool]], ...]] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("private", lambda a: a.is_private),
    ("reserved", lambda a: a.is_reserved),
    ("not globally routable", lambda a: not a.is_global),
)


class WebhookTargetRefused(HubError, OSError):
    """A webhook's host is, or resolves to, an address the hub may not send to.

    An OSError, so httpcore treats it as a failed connection: the delivery is retried and gives up
    like any unreachable receiver, with this message as its last error.
    """


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a resolver would take as an address; None for a name.

    ``inet_aton`` is the C library's reading, the one ``getaddrinfo`` applies to a host such as
    ``0x7f000001``, ``2130706433``, ``017700000001`` or ``127.1``: all of them are 127.0.0.1.
    """
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped (``::ffff:127.0.0.1``) or IPv4-compatible IPv6 address.

    Python 3.11 does not look inside them (``IPv6Address("::ffff:127.0.0.1").is_loopback`` is False),
    yet a dual-stack socket connects to the IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.packed[:12] == bytes(12) and int(address) > 1:  # ::a.b.c.d, deprecated but still routed
            return ipaddress.IPv4Address(address.packed[12:])
    return address


def normal_host(host: str) -> str:
    """A host as compared: without IPv6 brackets or a trailing dot, lower case."""
    return host.strip("[]").rstrip(".").lower()


def parse_allowed(entry: str) -> IPNetwork | str:
    """One allow-list entry: a network (``10.20.0.0/16``, an address alone is a /32 or /128) or a host name."""
    text = entry.strip()
    if not text:
        raise ValueError("an empty entry")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = normal_host(text)
    labels = name.split(".")
    if any(not label or len(label) > 63 or not all(c.isalnum() or c == "-" for c in label) for label in labels):
        raise ValueError(f"{entry!r} is neither a network (CIDR) nor a host name")
    return name


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which webhook targets are refused: every address that is not public, except what an admin allows."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        """The policy of ``notifications.webhook_allowed_networks``: networks and host names mixed."""
        parsed = [parse_allowed(entry) for entry in entries]
        return cls(
            allowed_networks=tuple(p for p in parsed if not isinstance(p, str)),
            allowed_hosts=frozenset(p for p in parsed if isinstance(p, str)),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether an admin allow-listed this host name (its addresses are then not checked)."""
        return normal_host(host) in self.allowed_hosts

    def address_class(self, address: IPAddress) -> str | None:
        """Why the hub may not connect to ``address`` (``loopback``, ``private``, ...); None when it may."""
        inner = _unwrapped(address)
        if any(inner in network or address in network for network in self.allowed_networks):
            return None
        return next((name for name, applies in _ADDRESS_CLASSES if applies(inner)), None)

    def addresses_problem(self, host: str, addresses: Sequence[IPAddress]) -> str | None:
        """Why ``host``, resolved to ``addresses``, may not be reached; None when every address may."""
        if self.host_allowed(host):
            return None
        name = normal_host(host)
        for address in addresses:
            kind = self.address_class(address)
            if kind is None:
                continue
            inner = _unwrapped(address)
            a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
            if literal_address(host) is None:
                where = f"{name} resolves to {inner}, {a_kind}"
            elif name == str(inner):
                where = f"{inner} is {a_kind}"
            else:
                where = f"{name} is {inner}, {a_kind}"
            return f"{where}; webhooks go to public addresses only, unless {ALLOW_SETTING} lists it"
        return None

    def fixed_addresses(self, host: str) -> tuple[IPAddress, ...] | None:
        """The addresses of a host that needs no DNS (an address, a localhost name); None for other names."""
        literal = literal_address(host)
        if literal is not None:
            return (literal,)
        name = normal_host(host)
        if name in LOCALHOST_NAMES or name.endswith(".localhost"):
            return LOCALHOST_ADDRESSES
        return None
