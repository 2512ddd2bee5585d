"""model.by_version: the sort key of addresses and prefixes everywhere in announcer."""

from __future__ import annotations

import ipaddress
import random

import pytest

from announcer.model import by_version


def _old_key(
    x: ipaddress.IPv4Address
    | ipaddress.IPv6Address
    | ipaddress.IPv4Network
    | ipaddress.IPv6Network,
) -> tuple[int, object]:
    return (x.version, x)


@pytest.mark.parametrize("seed", range(20))
def test_addresses_sort_as_ipaddress_orders_them_v4_first(seed: int) -> None:
    rng = random.Random(seed)
    v4 = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(200)]
    v6 = [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(200)]
    # Edge values: the smallest and largest of each family, and the same integer.
    v4 += [ipaddress.IPv4Address(0), ipaddress.IPv4Address(2**32 - 1), ipaddress.IPv4Address(5)]
    v6 += [ipaddress.IPv6Address(0), ipaddress.IPv6Address(2**128 - 1), ipaddress.IPv6Address(5)]
    mixed = v4 + v6
    rng.shuffle(mixed)
    ordered = sorted(mixed, key=by_version)
    assert ordered == sorted(mixed, key=_old_key)
    assert ordered[: len(v4)] == sorted(v4)  # every IPv4 address before any IPv6 one


@pytest.mark.parametrize("seed", range(20))
def test_networks_sort_by_address_then_length(seed: int) -> None:
    rng = random.Random(seed)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for _ in range(200):
        length = rng.randint(0, 32)
        nets.append(
            ipaddress.ip_network(
                (rng.getrandbits(32) >> (32 - length) << (32 - length) if length else 0, length)
            )
        )
        length = rng.randint(0, 128)
        nets.append(
            ipaddress.ip_network(
                (rng.getrandbits(128) >> (128 - length) << (128 - length) if length else 0, length)
            )
        )
    # Same address, different lengths: the shorter one first, as ipaddress has it.
    nets += [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("192.0.2.0/32")]
    nets += [ipaddress.ip_network("2001:db8::/32"), ipaddress.ip_network("2001:db8::/128")]
    rng.shuffle(nets)
    assert sorted(nets, key=by_version) == sorted(nets, key=_old_key)


def test_an_address_and_its_host_prefix_keep_their_own_order() -> None:
    a = ipaddress.ip_address("192.0.2.10")
    assert by_version(a) == (4, int(a), 0)
    assert by_version(ipaddress.ip_network("192.0.2.10/32")) == (4, int(a), 32)
    assert by_version(ipaddress.ip_address("::1")) > by_version(
        ipaddress.ip_address("255.255.255.255")
    )
