"""The local-VIP check's pure parts: the netlink messages (locality.py) and the core's
rule that a VIP the kernel does not deliver here is never announced (core.py)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from announcer import locality as lo
from announcer.model import Route
from tests.support.corekit import ALLOW, FAIL, OK, core, feed, none, specs

A = ipaddress.ip_address
N = ipaddress.ip_network


def _msg(kind: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def _rtmsg(family: int, dst_len: int, rtype: int, attrs: bytes = b"") -> bytes:
    return struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, 254, 0, 0, rtype, 0) + attrs


def _attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


# ------------------------------------------------------------------ messages


def test_a_request_is_ip_route_get_of_the_address() -> None:
    for text, family, bits in (("192.0.2.10", socket.AF_INET, 32), ("2001:db8::1", 10, 128)):
        a = A(text)
        raw = lo.route_get(7, a)
        length, kind, flags, seq, port = struct.unpack_from("=IHHII", raw)
        assert (length, kind, flags, seq, port) == (len(raw), lo.RTM_GETROUTE, 1, 7, 0)
        fam, dst_len = raw[16], raw[17]
        assert (fam, dst_len) == (family, bits)
        alen, atype = struct.unpack_from("=HH", raw, 28)
        assert atype == lo.RTA_DST and raw[32 : 32 + alen - 4] == a.packed


def test_answers_give_the_route_type_or_none_for_an_error() -> None:
    data = (
        _msg(lo.RTM_NEWROUTE, 1, _rtmsg(2, 32, lo.RTN_LOCAL))
        + _msg(lo.RTM_NEWROUTE, 2, _rtmsg(2, 32, 1))  # unicast: via a router
        + _msg(lo.NLMSG_ERROR, 3, struct.pack("=i", -101) + b"\0" * 16)  # ENETUNREACH
        + _msg(lo.NLMSG_ERROR, 4, struct.pack("=i", 0) + b"\0" * 16)  # an ACK: nothing
    )
    assert list(lo.answers(data)) == [(1, lo.RTN_LOCAL), (2, 1), (3, None)]


def test_answers_stop_at_a_truncated_or_lying_message() -> None:
    good = _msg(lo.RTM_NEWROUTE, 1, _rtmsg(2, 32, lo.RTN_LOCAL))
    assert list(lo.answers(good + good[:10])) == [(1, lo.RTN_LOCAL)]
    liar = struct.pack("=IHHII", 4096, lo.RTM_NEWROUTE, 0, 2, 0) + b"\0" * 12
    assert list(lo.answers(good + liar)) == [(1, lo.RTN_LOCAL)]
    assert list(lo.answers(struct.pack("=IHHII", 3, 0, 0, 0, 0))) == []  # length < header


def test_events_name_the_address_or_the_route_that_changed() -> None:
    addr = struct.pack("=BBBBI", 2, 24, 0, 0, 1) + _attr(lo.IFA_LOCAL, A("192.0.2.10").packed)
    addr6 = struct.pack("=BBBBI", 10, 64, 0, 0, 1) + _attr(lo.IFA_ADDRESS, A("2001:db8::5").packed)
    route = _rtmsg(2, 24, lo.RTN_LOCAL, _attr(lo.RTA_DST, A("203.0.113.0").packed))
    data = (
        _msg(lo.RTM_NEWADDR, 0, addr)
        + _msg(lo.RTM_DELADDR, 0, addr6)
        + _msg(lo.RTM_NEWROUTE, 0, route)
        + _msg(99, 0, b"\0" * 8)  # anything else: ignored
    )
    nets, everything = lo.changed(data)
    # The address itself, not its subnet: only that VIP is looked up again.
    assert nets == {N("192.0.2.10/32"), N("2001:db8::5/128"), N("203.0.113.0/24")}
    assert not everything


def test_a_default_route_or_garbage_checks_every_vip() -> None:
    default = _msg(lo.RTM_DELROUTE, 0, _rtmsg(2, 0, 1))
    assert lo.changed(default) == (set(), True)
    assert lo.changed(_msg(lo.RTM_NEWADDR, 0, b"\0\0"))[1]  # too short to read
    assert lo.changed(struct.pack("=IHHII", 999, lo.RTM_NEWADDR, 0, 0, 0))[1]


def test_inside_finds_vips_by_host_route_and_by_network() -> None:
    vips = {A("192.0.2.10"), A("192.0.2.11"), A("203.0.113.5"), A("2001:db8::5")}
    got = lo._inside(vips, {N("192.0.2.10/32"), N("203.0.113.0/24"), N("2001:db8::/64")})
    assert sorted(map(str, got)) == ["192.0.2.10", "2001:db8::5", "203.0.113.5"]
    assert lo._inside(vips, {N("198.51.100.0/24")}) == []


# ------------------------------------------------------------------ the core's rule


def _up(c: Any, *addresses: str) -> None:
    c.apply(specs(*addresses), 0.0, none, vip_loss=None)
    for a in addresses:
        feed(c, a, OK, 2, 1.0)


def test_an_up_vip_that_is_not_local_is_not_announced_until_it_is() -> None:
    c = core()
    _up(c, "192.0.2.10", "192.0.2.11")
    c.touched = set()
    changed = c.set_local([A("192.0.2.10"), A("192.0.2.11")], {A("192.0.2.10")})
    assert changed == [(A("192.0.2.10"), False)] and c.touched == {A("192.0.2.10")}
    assert set(c.desired(9.0, none, ALLOW)) == {N("192.0.2.11/32")}
    assert c.set_local([A("192.0.2.10")], {A("192.0.2.10")}) == []  # no change, no line
    assert c.set_local([A("192.0.2.10")], set()) == [(A("192.0.2.10"), True)]
    assert set(c.desired(9.0, none, ALLOW)) == {N("192.0.2.10/32"), N("192.0.2.11/32")}


def test_a_non_local_vip_keeps_its_health_and_is_not_kept_at_a_start() -> None:
    c = core()
    c.apply(specs("192.0.2.10"), 0.0, none, vip_loss=None)
    c.set_local([A("192.0.2.10")], {A("192.0.2.10")})
    kept = Route(N("192.0.2.10/32"))
    assert c.desired(1.0, none, ALLOW, keep={kept.prefix: kept}) == {}  # not even kept
    feed(c, "192.0.2.10", OK, 2, 1.0)
    assert str(c.vips[A("192.0.2.10")].state) == "UP" and c.desired(9.0, none, ALLOW) == {}
    feed(c, "192.0.2.10", FAIL, 2, 3.0)
    c.set_local([A("192.0.2.10")], set())
    assert c.desired(9.0, none, ALLOW) == {}  # local again, but DOWN: its checks decide


def test_require_local_false_announces_by_the_checks_alone() -> None:
    c = core()
    c.apply(specs("192.0.2.10", require_local=False), 0.0, none, vip_loss=None)
    feed(c, "192.0.2.10", OK, 2, 1.0)
    c.set_local([A("192.0.2.10")], {A("192.0.2.10")})
    assert set(c.desired(9.0, none, ALLOW)) == {N("192.0.2.10/32")}


def test_unknown_and_gone_vips_leave_the_not_local_set() -> None:
    c = core()
    _up(c, "192.0.2.10", "192.0.2.11")
    assert c.set_local([A("192.0.2.99")], {A("192.0.2.99")}) == []  # not a VIP
    c.set_local([A("192.0.2.11")], {A("192.0.2.11")})
    c.apply(specs("192.0.2.10"), 5.0, none, vip_loss=None)  # .11 gone from HAProxy
    assert c.truth.not_local == set()
