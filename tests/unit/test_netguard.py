"""The egress guard: address classification, URL checks, allowlists, and enforcement inside aiohttp."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest

from mcp_servers.netguard import (
    BlockedURLError,
    EgressPolicy,
    GuardedResolver,
    forbidden_reason,
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private (it embeds 10.0.0.1)"),
        ("::ffff:169.254.169.254", "link-local (it embeds 169.254.169.254)"),
        ("2002:7f00:1::", "loopback (it embeds 127.0.0.1)"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_classifies_addresses(address, reason):
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


def test_allowlist_is_parsed_from_the_environment():
    policy = EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOWLIST": " 127.0.0.2, Intranet.Example. ,10.1.0.0/16,[::1]"})
    assert not policy.allow_private
    assert policy.allow_hosts == frozenset({"intranet.example"})
    assert ipaddress.ip_network("127.0.0.2/32") in policy.allow_networks
    assert ipaddress.ip_network("10.1.0.0/16") in policy.allow_networks
    assert ipaddress.ip_network("::1/128") in policy.allow_networks
    assert EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOW_PRIVATE": "true"}).allow_private
    assert not EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOW_PRIVATE": "0"}).allow_private
    with pytest.raises(ValueError, match="MEMENTO_CRAWL_ALLOWLIST"):
        EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOWLIST": "not a/host"})


class _FixedResolver(aiohttp.abc.AbstractResolver):
    def __init__(self, addresses):
        self.addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self):
        pass


@pytest.mark.anyio
async def test_resolver_refuses_a_host_if_any_address_is_private():
    mixed = GuardedResolver(EgressPolicy(), _FixedResolver(["93.184.216.34", "10.0.0.5"]))
    with pytest.raises(BlockedURLError, match=r"10\.0\.0\.5, which is private"):
        await mixed.resolve("rebind.example", 80)
    public = GuardedResolver(EgressPolicy(), _FixedResolver(["93.184.216.34"]))
    assert [r["host"] for r in await public.resolve("example.com", 80)] == ["93.184.216.34"]
