"""Pre-encoded AddPathStream requests (gobgp_paths.PathCache), 3.x and 4.x, without a daemon.

The bytes the client sends must parse, with the generated request class, to exactly
the message the codec builds the ordinary way (add_path_stream_request of
announce_path / withdraw_path), and the cache must neither go stale nor grow
without bound.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from announcer.gobgp_paths import PathCache
from announcer.gobgp_versions import CODECS
from announcer.model import Community, HostPrefix, LargeCommunity, Origin, Route

ASN = 65001
net = ipaddress.ip_network
ip = ipaddress.ip_address

ROUTES = [
    Route(net("192.0.2.1/32")),  # next hop self, nothing else
    Route(net("192.0.2.2/32"), next_hop=ip("192.0.2.254"), origin=Origin.EGP),
    Route(net("198.51.100.3/32"), origin=Origin.INCOMPLETE, med=0, local_pref=0),
    Route(net("198.51.100.4/32"), med=2**32 - 1, local_pref=2**32 - 1),
    Route(net("203.0.113.5/32"), communities=(Community(65535, 0), Community(65001, 100))),
    Route(
        net("203.0.113.6/32"),
        next_hop=ip("192.0.2.253"),
        large_communities=(LargeCommunity(4200000000, 0, 7), LargeCommunity(65001, 1, 2)),
        as_path_prepend=1,
    ),
    Route(
        net("192.0.2.7/32"),
        next_hop=ip("192.0.2.254"),
        origin=Origin.EGP,
        med=10,
        local_pref=200,
        communities=(Community(65001, 100),),
        large_communities=(LargeCommunity(65001, 1, 2),),
        as_path_prepend=10,
    ),
    Route(net("2001:db8::1/128"), next_hop=ip("2001:db8:ffff::1")),
    Route(net("2001:db8:be::2/128"), next_hop=ip("2001:db8::2"), med=5, as_path_prepend=3),
    Route(
        net("2001:db8:be::ffff:3/128"),
        next_hop=ip("2001:db8:ffff::2"),
        origin=Origin.INCOMPLETE,
        med=4294967295,
        local_pref=7,
        communities=(Community(0, 1), Community(65535, 65535)),
        large_communities=(LargeCommunity(1, 2, 3),),
        as_path_prepend=10,
    ),
]
PREFIXES: list[HostPrefix] = [
    net("192.0.2.1/32"),
    net("198.51.100.255/32"),
    net("2001:db8::1/128"),
    net("2001:db8:be::ffff:ffff/128"),
]


@pytest.fixture(params=sorted(CODECS), ids=lambda v: f"v{v}")
def codec(request: pytest.FixtureRequest) -> Any:
    return CODECS[request.param]


def parse(codec: Any, data: bytes) -> Any:
    """`data` parsed as the AddPathStreamRequest the client binds for this codec."""
    request_class, _ = codec.rpcs["AddPathStream"]
    return request_class.FromString(data)


def ordinary_announce(codec: Any, routes: list[Route]) -> Any:
    return codec.add_path_stream_request([codec.announce_path(r, ASN) for r in routes])


# ------------------------------------------------------------ exact encoding


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: str(r.prefix))
def test_announce_bytes_parse_to_the_ordinary_request(codec: Any, route: Route) -> None:
    data = PathCache(codec).announce_request([route], ASN)
    parsed = parse(codec, data)
    expected = ordinary_announce(codec, [route])
    assert parsed == expected
    assert parsed.table_type == codec.table_global and len(parsed.paths) == 1
    assert codec.decode_route(parsed.paths[0], ASN) == route


def test_a_batch_of_every_variant_parses_to_the_ordinary_request(codec: Any) -> None:
    cache = PathCache(codec)
    routes = ROUTES + ROUTES[::-1]  # the same route twice in one batch too
    parsed = parse(codec, cache.announce_request(routes, ASN))
    assert parsed == ordinary_announce(codec, routes)
    assert [p.nlri for p in parsed.paths] == [codec._nlri(r.prefix) for r in routes]
    # Once more, every path from the cache: still the same request.
    assert parse(codec, cache.announce_request(routes, ASN)) == ordinary_announce(codec, routes)


def test_withdraw_bytes_parse_to_the_ordinary_request(codec: Any) -> None:
    cache = PathCache(codec)
    expected = codec.add_path_stream_request([codec.withdraw_path(p) for p in PREFIXES])
    for _ in range(2):  # encoded, then from the cache
        parsed = parse(codec, cache.withdraw_request(PREFIXES))
        assert parsed == expected
        assert all(p.is_withdraw for p in parsed.paths) and len(parsed.paths) == len(PREFIXES)
        assert {f.name for f, _ in parsed.paths[0].ListFields()} == {
            "nlri",
            "family",
            "is_withdraw",
        }


def test_empty_request_names_the_global_table(codec: Any) -> None:
    cache = PathCache(codec)
    for data in (cache.announce_request([], ASN), cache.withdraw_request([])):
        assert parse(codec, data) == codec.add_path_stream_request([])
    assert len(cache) == 0


def test_requests_are_valid_in_their_own_api_only() -> None:
    # The same route in 3.x bytes does not parse to the 4.x request (or vice versa):
    # the cache is per codec.
    route = ROUTES[-1]
    v3, v4 = CODECS[3], CODECS[4]
    data3 = PathCache(v3).announce_request([route], ASN)
    data4 = PathCache(v4).announce_request([route], ASN)
    assert data3 != data4
    assert parse(v4, data4) == ordinary_announce(v4, [route])
    assert parse(v3, data3) == ordinary_announce(v3, [route])


# ------------------------------------------------------------------ caching


def counting(codec: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the codec's message builds (announce_path and withdraw_path calls)."""
    calls = {"announce": 0, "withdraw": 0}
    real_announce, real_withdraw = codec.announce_path, codec.withdraw_path

    def announce(route: Route, local_asn: int | None) -> Any:
        calls["announce"] += 1
        return real_announce(route, local_asn)

    def withdraw(prefix: HostPrefix) -> Any:
        calls["withdraw"] += 1
        return real_withdraw(prefix)

    monkeypatch.setattr(codec, "announce_path", announce)
    monkeypatch.setattr(codec, "withdraw_path", withdraw)
    return calls


def test_a_hit_returns_identical_bytes_without_building(
    codec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(codec, monkeypatch)
    cache = PathCache(codec)
    first = cache.announce_request(ROUTES, ASN)
    assert calls["announce"] == len(ROUTES) and cache.misses == len(ROUTES)
    # Equal routes that are other objects hit as well.
    copies = [dataclasses.replace(r) for r in ROUTES]
    assert [c is r for c, r in zip(copies, ROUTES, strict=True)] == [False] * len(ROUTES)
    for routes in (ROUTES, copies, ROUTES):
        assert cache.announce_request(routes, ASN) == first
    assert calls["announce"] == len(ROUTES) and cache.hits == 3 * len(ROUTES)
    # A request is the head plus the cached elements, byte for byte.
    route = ROUTES[0]
    element = cache._announce[route.prefix][2]
    assert cache.announce_request([route], ASN) == codec.encoded_add_path_stream_request([element])
    assert element == codec.encoded_path(codec.announce_path(route, ASN))

    before = cache.withdraw_request(PREFIXES)
    assert cache.withdraw_request(PREFIXES) == before
    assert calls["withdraw"] == len(PREFIXES)


def test_a_changed_route_replaces_its_prefix_entry(
    codec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(codec, monkeypatch)
    cache = PathCache(codec)
    states = [
        Route(net("2001:db8:be::9/128"), next_hop=ip("2001:db8::1"), med=med) for med in range(50)
    ]
    for route in states * 2:
        parsed = parse(codec, cache.announce_request([route], ASN))
        assert codec.decode_route(parsed.paths[0], ASN) == route
        assert len(cache) == 1  # one entry per prefix, whatever its states
    assert calls["announce"] == 100  # each state change is a new build


def test_prepend_is_rebuilt_when_the_local_as_changes(codec: Any) -> None:
    cache = PathCache(codec)
    prepend, plain = ROUTES[5], ROUTES[0]
    cache.announce_request([prepend, plain], ASN)
    parsed = parse(codec, cache.announce_request([prepend, plain], 65099))
    assert parsed == codec.add_path_stream_request(
        [codec.announce_path(prepend, 65099), codec.announce_path(plain, 65099)]
    )
    assert codec.decode_route(parsed.paths[0], 65099) == prepend
    assert cache.hits == 1  # the route without a prepend does not depend on the AS


def test_the_cache_stays_bounded(codec: Any) -> None:
    cache = PathCache(codec, max_prefixes=64)
    base = ipaddress.IPv6Address("2001:db8:be::")
    routes = [Route(net(f"{base + i}/128"), next_hop=ip("2001:db8::1")) for i in range(1000)]
    for start in range(0, len(routes), 100):
        batch = routes[start : start + 100]
        assert parse(codec, cache.announce_request(batch, ASN)) == ordinary_announce(codec, batch)
        assert parse(codec, cache.withdraw_request([r.prefix for r in batch])) == (
            codec.add_path_stream_request([codec.withdraw_path(r.prefix) for r in batch])
        )
        assert len(cache._announce) <= 64 and len(cache._withdraw) <= 64
    # The most recently encoded prefixes are the ones kept.
    assert routes[-1].prefix in cache._announce and routes[0].prefix not in cache._announce
    hits = cache.hits
    cache.announce_request(routes[-10:], ASN)
    assert cache.hits == hits + 10


def test_size_zero_keeps_nothing(codec: Any) -> None:
    cache = PathCache(codec, max_prefixes=0)
    for _ in range(2):
        assert parse(codec, cache.announce_request(ROUTES, ASN)) == ordinary_announce(codec, ROUTES)
        assert parse(codec, cache.withdraw_request(PREFIXES)) == codec.add_path_stream_request(
            [codec.withdraw_path(p) for p in PREFIXES]
        )
    assert len(cache) == 0 and cache.hits == 0
    with pytest.raises(ValueError):
        PathCache(codec, max_prefixes=-1)


def test_clear_empties_the_cache(codec: Any) -> None:
    cache = PathCache(codec)
    cache.announce_request(ROUTES, ASN)
    cache.withdraw_request(PREFIXES)
    assert len(cache) == len(ROUTES) + len(PREFIXES)
    cache.clear()
    assert len(cache) == 0
    assert parse(codec, cache.announce_request(ROUTES, ASN)) == ordinary_announce(codec, ROUTES)


def test_a_route_read_back_is_the_object_announced_when_equal(codec: Any) -> None:
    cache = PathCache(codec)
    cache.announce_request(ROUTES, ASN)
    for sent in ROUTES:
        copy = dataclasses.replace(sent)
        assert copy is not sent and cache.known(copy) is sent
        other = dataclasses.replace(sent, med=(sent.med or 0) + 1)
        assert cache.known(other) is other  # not what was sent: itself
    unknown = Route(net("203.0.113.99/32"))
    assert cache.known(unknown) is unknown
