"""The pure DataPlaneAPI JSON -> VIP layer: shapes, bind address forms, grouping."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.discovery import (
    DefaultsSection,
    FrontendEntry,
    build_frontends,
    needs_defaults,
    parse_bind,
    parse_bind_address,
    parse_bind_map,
    parse_binds,
    parse_defaults_list,
    parse_frontends,
    parse_v2_single_defaults,
    parse_version,
    parse_version_header,
    unwrap_v2,
)
from announcer.errors import DataPlaneError
from announcer.model import Frontend, Listener, RawBind
from announcer.vips import Skipped, frontend_selected, vips_from_frontends

ip = ipaddress.ip_address

# ------------------------------------------------------------- bind addresses

# (DPAPI `address`, expected IP or None, expected kind) - the forms of notes §5.
ADDRESS_TABLE: list[tuple[str, str | None, str]] = [
    ("192.0.2.10", "192.0.2.10", "ip"),
    ("2001:db8::1", "2001:db8::1", "ip"),
    ("[2001:db8::1]", "2001:db8::1", "ip"),
    ("2001:DB8::A", "2001:db8::a", "ip"),
    ("ipv4@192.0.2.1", "192.0.2.1", "ip"),
    ("ipv6@2001:db8::2", "2001:db8::2", "ip"),
    ("tcp@198.51.100.7", "198.51.100.7", "ip"),
    ("tcp4@198.51.100.7", "198.51.100.7", "ip"),
    ("tcp6@2001:db8::7", "2001:db8::7", "ip"),
    ("mptcp@192.0.2.3", "192.0.2.3", "ip"),
    ("*", None, "wildcard"),
    ("", None, "wildcard"),
    ("0.0.0.0", None, "wildcard"),
    ("::", None, "wildcard"),
    ("[::]", None, "wildcard"),
    ("ipv6@::", None, "wildcard"),
    ("ipv4@", None, "wildcard"),
    ("ipv4@0.0.0.0", None, "wildcard"),
    ("::0", None, "wildcard"),
    ("unix@/run/haproxy/fe.sock", None, "local"),
    ("/run/haproxy/fe.sock", None, "local"),
    ("abns@internal", None, "local"),
    ("fd@3", None, "local"),
    ("sockpair@4", None, "local"),
    ("uxst@/tmp/x", None, "local"),
    ("quic4@", None, "not-tcp"),
    ("quic4@192.0.2.1", None, "not-tcp"),
    ("quic6@::", None, "not-tcp"),
    ("quicv4@192.0.2.1", None, "not-tcp"),
    ("udp@", None, "not-tcp"),
    ("udp4@192.0.2.1", None, "not-tcp"),
    ("localhost", None, "unresolved"),
    ("vip.example.net", None, "unresolved"),
    ("$VIP", None, "unresolved"),
    ('"${VIP}', None, "unresolved"),
    ("192.0.2.1:80,192.0.2.2", None, "invalid"),
    (":80,", None, "invalid"),
    ("ipv4@2001:db8::1", None, "invalid"),
    ("ipv6@192.0.2.1", None, "invalid"),
    ("bogus@192.0.2.1", None, "invalid"),
    ("999.1.1.1", None, "invalid"),
    ("2001:db8::1::2", None, "invalid"),
    ("192.0.2.1 ", "192.0.2.1", "ip"),
    ("fe80::1%eth0", None, "unannounceable"),
    ("fe80::1", None, "unannounceable"),
    ("127.0.0.1", None, "unannounceable"),
    ("::1", None, "unannounceable"),
    ("169.254.1.1", None, "unannounceable"),
    ("224.0.0.5", None, "unannounceable"),
    ("ff02::1", None, "unannounceable"),
    ("::ffff:192.0.2.1", None, "unannounceable"),
]


@pytest.mark.parametrize(("address", "expected", "kind"), ADDRESS_TABLE)
def test_parse_bind_address_forms(address: str, expected: str | None, kind: str) -> None:
    parsed = parse_bind_address(address)
    assert parsed.kind == kind
    if expected is None:
        assert parsed.ip is None
        assert parsed.reason
    else:
        assert parsed.ip == ip(expected)
        assert parsed.reason is None


def test_zone_id_reason_says_why() -> None:
    assert "zone id" in (parse_bind_address("fe80::1%eth0").reason or "")


@given(st.text(max_size=60))
def test_parse_bind_address_never_raises(text: str) -> None:
    parsed = parse_bind_address(text)
    assert (parsed.ip is None) == (parsed.kind != "ip")
    assert (parsed.reason is None) == (parsed.ip is not None)


@given(st.ip_addresses())
def test_every_announceable_literal_round_trips(addr: Any) -> None:
    parsed = parse_bind_address(str(addr))
    if parsed.ip is not None:
        assert parsed.ip == addr
        assert not (addr.is_loopback or addr.is_link_local or addr.is_multicast)


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45),
    )
)
def test_literal_parse_agrees_with_ipaddress(text: str) -> None:
    # parse_bind_address picks IPv6 or IPv4 by the colon instead of ip_address's
    # try-IPv4-then-IPv6: the same answers, without an exception per IPv6 VIP.
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        expected = None
    parsed = parse_bind_address(text)
    if expected is None:
        assert parsed.ip is None and parsed.kind in ("invalid", "wildcard", "unresolved")
    elif parsed.ip is None:
        assert parsed.kind in ("wildcard", "unannounceable")
    else:
        assert parsed.ip == expected


# ---------------------------------------------------------------------- shapes


def test_parse_bind_full() -> None:
    bind = parse_bind(
        {
            "name": "r",
            "address": "192.0.2.1",
            "port": 8000,
            "port-range-end": 8010,
            "ssl": True,
            "accept_proxy": True,
            "v4v6": False,
            "some_future_key": {"x": [1, 2]},
        },
        "b",
    )
    assert bind == RawBind("r", "192.0.2.1", 8000, 8010, ssl=True, accept_proxy=True)


def test_parse_bind_defaults_and_nulls() -> None:
    assert parse_bind({"address": "/run/x.sock", "port": None, "ssl": None}, "b") == RawBind(
        "/run/x.sock", "/run/x.sock"
    )
    assert parse_bind({"address": "*", "port": 80}, "b").name == "*:80"
    assert parse_bind({"address": "*", "port": 80}, "b", default_name="k").name == "k"
    # DPAPI sets port-range-end only when port < end; equal means no range.
    assert (
        parse_bind({"address": "*", "port": 80, "port-range-end": 80}, "b").port_range_end is None
    )


def test_v2_envelope_and_v3_bare_list() -> None:
    binds = [{"name": "*:80", "address": "*", "port": 80}]
    version, data = unwrap_v2({"_version": 12, "data": binds}, "binds")
    assert version == 12
    assert parse_binds(data, "binds.data") == parse_binds(binds, "binds")
    assert unwrap_v2({"data": []}, "x") == (None, [])


def test_null_bind_list_is_empty() -> None:
    assert parse_binds(None, "binds") == ()
    assert parse_bind_map(None, "binds") == ()


def test_full_section_bind_map() -> None:
    fronts = parse_frontends(
        [
            {
                "name": "fe",
                "mode": "http",
                "monitor_uri": "/healthz",
                "binds": {
                    "b2": {"name": "b2", "address": "192.0.2.2", "port": 443, "ssl": True},
                    "*:80": {"address": "*", "port": 80},
                },
                "acl_list": [{"acl_name": "x"}],
                "guid": "new-in-v3",
            }
        ]
    )
    (fe,) = fronts
    assert fe.monitor_uri == "/healthz"
    assert fe.binds is not None
    assert {b.name for b in fe.binds} == {"b2", "*:80"}


def test_frontend_without_binds_key_has_unknown_binds() -> None:
    (fe,) = parse_frontends([{"name": "fe"}])
    assert fe.binds is None and fe.mode is None and not fe.disabled


def test_defaults_shapes() -> None:
    assert parse_defaults_list(
        [{"name": "d1", "mode": "tcp"}, {"name": "d2", "mode": "log"}, {"name": "d3"}]
    ) == (DefaultsSection("d1", "tcp"), DefaultsSection("d2", None), DefaultsSection("d3", None))
    assert parse_v2_single_defaults({}) == ()
    assert parse_v2_single_defaults({"mode": "http"}) == (DefaultsSection(None, "http"),)


def test_versions() -> None:
    assert parse_version(7) == 7
    assert parse_version_header("12") == 12
    assert parse_version_header(None) is None
    for bad in (True, "7", 7.0, None, [7], {"version": 7}):
        with pytest.raises(DataPlaneError, match="version: expected integer"):
            parse_version(bad)
    with pytest.raises(DataPlaneError, match="Configuration-Version"):
        parse_version_header("v7")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            [
                {"name": "a"},
                {"name": "b"},
                {"name": "c"},
                {"name": "d", "binds": {"x": {"address": "*", "port": "80"}}},
            ],
            'frontends[3].binds["x"].port: expected integer 1-65535 or null, got "80"',
        ),
        ({"data": []}, "frontends: expected array or null, got object"),
        ([{"name": "a", "binds": []}], "frontends[0].binds: expected object, got array"),
        ([{"mode": "http"}], "frontends[0].name: missing"),
        ([{"name": ""}], 'frontends[0].name: expected non-empty string, got ""'),
        ([{"name": 5}], "frontends[0].name: expected non-empty string, got 5"),
        ([{"name": "a", "mode": "health"}], 'frontends[0].mode: expected "http", "tcp" or null'),
        (
            [{"name": "a", "disabled": "yes"}],
            'frontends[0].disabled: expected boolean or null, got "yes"',
        ),
        ([{"name": "a", "monitor_uri": 1}], "frontends[0].monitor_uri: expected string or null"),
        ([{"name": "a"}, {"name": "a"}], "frontends[1].name: duplicate frontend 'a'"),
        (["fe"], 'frontends[0]: expected object, got "fe"'),
        (
            [{"name": "a", "binds": {"b": {"address": "*", "port": 0}}}],
            'frontends[0].binds["b"].port: expected integer 1-65535 or null, got 0',
        ),
        (
            [{"name": "a", "binds": {"b": {"address": "*", "port": True}}}],
            'frontends[0].binds["b"].port: expected integer 1-65535 or null, got true',
        ),
        (
            [{"name": "a", "binds": {"b": {"address": "*", "port": 90, "port-range-end": 80}}}],
            'frontends[0].binds["b"]["port-range-end"]: 80 without a lower port',
        ),
        (
            [{"name": "a", "binds": {"b": {"address": "*", "port": 80, "port-range-end": "x"}}}],
            'frontends[0].binds["b"]["port-range-end"]: expected integer 1-65535 or null, got "x"',
        ),
        ([{"name": "a", "binds": {"b": {"port": 80}}}], 'frontends[0].binds["b"].address: missing'),
        (
            [{"name": "a", "binds": {"b": {"address": 1}}}],
            'frontends[0].binds["b"].address: expected string or null, got 1',
        ),
        (
            [{"name": "a", "binds": {"b": {"address": "*", "ssl": 1}}}],
            'frontends[0].binds["b"].ssl: expected boolean or null, got 1',
        ),
    ],
)
def test_wrong_shapes_name_the_path(doc: Any, message: str) -> None:
    with pytest.raises(DataPlaneError) as info:
        parse_frontends(doc)
    assert message in str(info.value)


def test_v2_envelope_errors() -> None:
    with pytest.raises(DataPlaneError, match=r"binds\.data: missing"):
        unwrap_v2({"_version": 1}, "binds")
    with pytest.raises(DataPlaneError, match=r"binds: expected object, got array"):
        unwrap_v2([], "binds")
    with pytest.raises(DataPlaneError, match=r'binds\._version: expected integer or null, got "1"'):
        unwrap_v2({"_version": "1", "data": []}, "binds")
    with pytest.raises(DataPlaneError, match=r"binds\.data\[0\]\.port"):
        parse_binds([{"address": "*", "port": -1}], "binds.data")


# ------------------------------------------------------------ mode resolution

DEFAULTS = (DefaultsSection("tcp_defaults", "tcp"), DefaultsSection("unnamed_defaults_1", "http"))


def _entry(name: str, mode: Any = None, frm: str | None = None) -> FrontendEntry:
    return FrontendEntry(name, mode, False, None, frm, ())


def test_mode_resolution() -> None:
    entries = [
        _entry("own", "tcp"),
        _entry("from_named", None, "tcp_defaults"),
        _entry("last", None),
        _entry("unknown_from", None, "nope"),
    ]
    modes = {fe.name: fe.mode for fe in build_frontends(entries, {}, DEFAULTS)}
    assert modes == {"own": "tcp", "from_named": "tcp", "last": "http", "unknown_from": None}
    assert build_frontends([_entry("x")], {}, ())[0].mode is None
    assert needs_defaults(entries)
    assert not needs_defaults([_entry("own", "http")])


def test_separately_fetched_binds_fill_in() -> None:
    entry = FrontendEntry("fe", "http", False, None, None, None)
    b = RawBind("b", "192.0.2.1", 80)
    assert build_frontends([entry], {"fe": [b]}, ())[0].binds == (b,)
    assert build_frontends([entry], {}, ())[0].binds == ()


# ------------------------------------------------------------------------ VIPs


def _fe(name: str, *binds: RawBind, mode: Any = "http", disabled: bool = False) -> Frontend:
    return Frontend(name, mode=mode, disabled=disabled, monitor_uri="/healthz", binds=binds)


def test_shared_vip_across_two_frontends_and_ports() -> None:
    fronts = [
        _fe(
            "fe_web",
            RawBind("http", "192.0.2.10", 80),
            RawBind("https", "192.0.2.10", 443, ssl=True),
        ),
        _fe("fe_api", RawBind("api", "ipv4@192.0.2.10", 8443, accept_proxy=True), mode="tcp"),
        _fe("fe_v6", RawBind("v6", "2001:db8::10", 80)),
    ]
    result = vips_from_frontends(fronts)
    assert list(result.vips) == [ip("192.0.2.10"), ip("2001:db8::10")]
    vip = result.vips[ip("192.0.2.10")]
    assert vip.frontends == ("fe_api", "fe_web")
    assert vip.listeners == (
        Listener("fe_api", "api", 8443, accept_proxy=True, mode="tcp", monitor_uri="/healthz"),
        Listener("fe_web", "http", 80, mode="http", monitor_uri="/healthz"),
        Listener("fe_web", "https", 443, ssl=True, mode="http", monitor_uri="/healthz"),
    )
    assert result.skipped == []


def test_duplicate_bind_lines_give_one_listener() -> None:
    b = RawBind("x", "192.0.2.1", 80)
    result = vips_from_frontends([_fe("fe", b, b)])
    assert len(result.vips[ip("192.0.2.1")].listeners) == 1


def test_disabled_frontends_and_bad_binds_are_skipped() -> None:
    result = vips_from_frontends(
        [
            _fe("old", RawBind("o", "192.0.2.99", 80), disabled=True),
            _fe("fe", RawBind("*:80", "*", 80), RawBind("sock", "unix@/run/x.sock")),
        ]
    )
    assert result.vips == {}
    assert result.skipped[0] == Skipped("old", None, "frontend is disabled")
    assert [(s.frontend, s.bind) for s in result.skipped[1:]] == [("fe", "*:80"), ("fe", "sock")]


def test_port_range_first_port() -> None:
    # The range itself was kept (VipSet.port_ranges) for nobody but this test: gone.
    result = vips_from_frontends([_fe("fe", RawBind("r", "198.51.100.22", 8000, 8010))])
    (listener,) = result.vips[ip("198.51.100.22")].listeners
    assert listener.port == 8000


def test_include_exclude() -> None:
    fronts = [
        _fe("fe_web", RawBind("a", "192.0.2.1", 80)),
        _fe("fe_api", RawBind("b", "192.0.2.2", 80)),
        _fe("stats", RawBind("c", "192.0.2.3", 80)),
    ]
    got = vips_from_frontends(fronts, include=["fe_*"], exclude=["*api"])
    assert list(got.vips) == [ip("192.0.2.1")]
    assert {s.frontend for s in got.skipped} == {"fe_api", "stats"}
    assert vips_from_frontends(fronts, include=[]).vips == {}
    assert frontend_selected("FE", ["fe"], []) is False  # case-sensitive
    assert frontend_selected("fe_web", ["*"], ["fe_*"]) is False  # exclude wins over "*"
    assert frontend_selected("", ["*"], []) is True  # "*" matches any name, as fnmatch does
    assert frontend_selected("fe_web", ["x", "*"], []) is True


def test_ipv6_vip_and_sort_order() -> None:
    result = vips_from_frontends(
        [
            _fe(
                "fe",
                RawBind("b", "2001:db8::1", 80),
                RawBind("a", "198.51.100.1", 80),
                RawBind("c", "192.0.2.1", 80),
            )
        ]
    )
    assert list(result.vips) == [ip("192.0.2.1"), ip("198.51.100.1"), ip("2001:db8::1")]


# ---------------------------------------------------------- property: only DataPlaneError

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
bind_keys = st.sampled_from(
    ["name", "address", "port", "port-range-end", "ssl", "accept_proxy", "v4v6"]
)
plausible_bind = st.dictionaries(bind_keys, json_scalars, max_size=7)
frontend_keys = st.sampled_from(["name", "mode", "disabled", "monitor_uri", "from", "binds"])
plausible_frontend = st.dictionaries(
    frontend_keys,
    json_scalars | st.dictionaries(st.text(max_size=6), plausible_bind, max_size=3),
    max_size=6,
)
anything = (
    json_values | st.lists(plausible_frontend, max_size=4) | st.lists(plausible_bind, max_size=4)
)


PARSERS: list[Callable[[Any], object]] = [
    parse_frontends,
    lambda v: parse_binds(v, "binds"),
    lambda v: parse_bind_map(v, "binds"),
    lambda v: parse_bind(v, "bind"),
    lambda v: unwrap_v2(v, "x"),
    parse_defaults_list,
    parse_v2_single_defaults,
    parse_version,
]


@settings(max_examples=300)
@given(anything)
def test_parsers_raise_only_dataplane_error(value: Any) -> None:
    for parser in PARSERS:
        with contextlib.suppress(DataPlaneError):
            parser(value)


@settings(max_examples=200)
@given(
    st.lists(plausible_frontend, max_size=4),
    st.lists(st.dictionaries(st.just("mode"), json_scalars), max_size=3),
)
def test_end_to_end_pure_pipeline_never_crashes(frontends: Any, defaults: Any) -> None:
    try:
        entries = parse_frontends(frontends)
        sections = parse_defaults_list(defaults)
    except DataPlaneError:
        return
    result = vips_from_frontends(build_frontends(entries, {}, sections))
    for address, vip in result.vips.items():
        assert vip.address == address and vip.listeners
