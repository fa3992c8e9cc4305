"""Egress guard: refuse URLs that point at this machine, its private network or non-web schemes.

An agent decides which URL a fetching tool opens, and a web page can steer it, so a crawler that
fetches whatever it is told is a server-side request forgery waiting to happen (cloud metadata at
169.254.169.254, admin ports on 127.0.0.1, the office network). The guard checks the scheme, then
resolves the host and checks *every* address it resolves to; `GuardedResolver` does the same
inside aiohttp, so the address that was checked is the address that is dialled (no DNS-rebinding
window) and every redirect hop is checked too.

Private targets are allowed only when configured: ``MEMENTO_CRAWL_ALLOW_PRIVATE=1`` allows all of
them, ``MEMENTO_CRAWL_ALLOWLIST`` (comma-separated host names, IP addresses or CIDR networks, e.g.
``127.0.0.1,intranet.example,10.1.0.0/16``) allows just those.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

ALLOWED_SCHEMES = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedURLError(ValueError):
    """The URL (or a redirect it led to) targets something the policy refuses."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address must not be reached from a public-web fetcher, or ``None`` if it may be.

    Args:
        ip: The address to classify.

    Returns:
        A short label such as ``"loopback"`` or ``"link-local"``, or ``None``.

    """
    # An IPv6 address can carry an IPv4 one (mapped, 6to4, Teredo); judge the one actually reached.
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            if reason:
                return f"{reason} (it embeds {embedded})"
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    )
    for attribute, label in checks:
        if getattr(ip, attribute):
            return label
    # Shared address space (100.64.0.0/10, carrier NAT) and other special ranges are neither
    # private nor global.
    if not ip.is_global:
        return "not globally routable"
    return None


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which targets a fetcher may reach.

    Attributes:
        allow_private: Allow every address (trusted deployments, local tests).
        allow_hosts: Host names allowed whatever they resolve to (lower-case).
        allow_networks: Networks whose addresses are allowed even if private.

    """

    allow_private: bool = False
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> EgressPolicy:
        """Read ``MEMENTO_CRAWL_ALLOW_PRIVATE`` and ``MEMENTO_CRAWL_ALLOWLIST``.

        Raises:
            ValueError: An allowlist entry is neither a host name, an address nor a network.

        """
        env = os.environ if environ is None else environ
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in (env.get("MEMENTO_CRAWL_ALLOWLIST") or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry or " " in entry:
                    raise ValueError(f"MEMENTO_CRAWL_ALLOWLIST: not a host, address or network: {raw!r}") from None
                hosts.add(entry.rstrip("."))
        return cls(
            allow_private=_truthy(env.get("MEMENTO_CRAWL_ALLOW_PRIVATE")),
            allow_hosts=frozenset(hosts),
            allow_networks=tuple(networks),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a host name is allowlisted by name."""
        return self.allow_private or host.lower().rstrip(".") in self.allow_hosts

    def check_ip(self, ip: IPAddress, host: str) -> None:
        """Raise `BlockedURLError` unless the policy lets ``host`` be reached at ``ip``."""
        if self.host_allowed(host) or any(ip in net for net in self.allow_networks):
            return
        reason = forbidden_reason(ip)
        if reason:
            literal = _parse_ip(host) is not None
            what = f"address {ip} is" if literal else f"host {host} resolves to {ip}, which is"
            raise BlockedURLError(
                f"refused: {what} {reason}; private, loopback and link-local targets are blocked "
                "(set MEMENTO_CRAWL_ALLOW_PRIVATE=1 or MEMENTO_CRAWL_ALLOWLIST to allow them)"
            )

    def check_url_syntax(self, url: str) -> tuple[str, int]:
        """Check scheme and host of a URL without resolving it; an IP literal is checked here.

        Returns:
            The host and port to resolve.

        Raises:
            BlockedURLError: Wrong scheme, no host, or a forbidden IP literal.

        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise BlockedURLError(f"refused: malformed URL {url!r} ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            shown = f"{scheme}://" if scheme else "a URL without a scheme"
            raise BlockedURLError(f"refused: only http and https URLs can be fetched, not {shown} ({url!r})")
        host = parts.hostname
        if not host:
            raise BlockedURLError(f"refused: URL has no host: {url!r}")
        ip = _parse_ip(host)
        if ip is not None:
            self.check_ip(ip, host)
        return host, port or (443 if scheme == "https" else 80)

    async def check_url(self, url: str) -> list[str]:
        """Check a URL completely: scheme, host, and every address the host resolves to.

        Returns:
            The addresses the host resolves to.

        Raises:
            BlockedURLError: The URL must not be fetched.

        """
        host, port = self.check_url_syntax(url)
        if _parse_ip(host) is not None:
            return [host.strip("[]")]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise BlockedURLError(f"refused: cannot resolve host {host!r} ({exc.strerror or exc})") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        for address in addresses:
            parsed = _parse_ip(address)
            if parsed is None:  # pragma: no cover - getaddrinfo returns numeric addresses
                raise BlockedURLError(f"refused: {host} resolved to a non-IP address {address!r}")
            self.check_ip(parsed, host)
        return addresses


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses host names resolving to addresses the policy forbids.

    aiohttp skips the resolver for IP-literal hosts; redirects to those are checked by
    `redirect_guard`.
    """

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None):
        """Wrap ``inner`` (aiohttp's default resolver when omitted)."""
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve and check every address; all must pass."""
        results = await self.inner.resolve(host, port, family)
        for result in results:
            ip = _parse_ip(result["host"])
            if ip is None:
                raise BlockedURLError(f"refused: {host} resolved to a non-IP address {result['host']!r}")
            self.policy.check_ip(ip, host)
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self.inner.close()


def redirect_guard(policy: EgressPolicy):
    """Build an aiohttp ``TraceConfig`` that checks every redirect target before it is followed."""
    import aiohttp
    from yarl import URL

    async def on_request_redirect(session, context, params) -> None:
        location = params.response.headers.get("Location", "")
        target = params.response.url.join(URL(location)) if location else None
        if target is None:
            return
        try:
            policy.check_url_syntax(str(target))
        except BlockedURLError as exc:
            raise BlockedURLError(f"{exc} [redirected from {params.url}]") from None

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(on_request_redirect)
    return trace
