"""Whether the kernel delivers a VIP to this host: the local-VIP check.

A VIP that is not local (the operator forgot `ip addr add VIP/32 dev lo` on one host,
and `net.ipv4.ip_nonlocal_bind=1` let HAProxy bind anyway) passes its probe through
the routers, answered by another LB; announcing it from this host would blackhole its
traffic here. So a VIP is announced only while the kernel's route for it is of type
`local`: what `ip route get VIP` prints as `local ...`. That covers an address on any
interface and a `local` route such as AnyIP (`ip route add local 192.0.2.0/24 dev lo`),
for IPv4 and IPv6, and whatever policy routing the host has.

How: one RTM_GETROUTE request per VIP on a NETLINK_ROUTE socket, sent in batches (the
kernel answers each request while it is sent, so a batch's answers are all queued when
the send returns). A UDP `connect()` to the VIP needs no netlink and tells a local
address by the source the kernel picks (the VIP itself), but not an IPv6 AnyIP route:
there the kernel picks another address of the host. Reading netlink needs no
privilege; changing routes through it needs CAP_NET_ADMIN, which announcer's unit does
not have, so the unit allows AF_NETLINK (systemd/announcer.service says why).

A second socket listens to the kernel's address and route events, so a VIP added to or
removed from `lo` is seen within milliseconds. An event names what changed (an address,
a route's prefix) and only the VIPs inside it are asked again: each answer costs the
kernel about 16 us, so asking all of 10 000 VIPs takes 170 ms of CPU (measured in a
namespace), which the service spends only every `SWEEP` seconds, in steps, in case an
event was lost (the socket's buffer overflowed) or a route it could not place changed.

The encoding and decoding are pure functions over bytes (tested without a kernel);
`LocalRoutes` and `RouteEvents` are the thin socket halves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network

from .core import Core
from .model import IPAddress, IPNetwork, by_version

log = logging.getLogger("announcer.health")

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_GETROUTE = 26
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
RTA_DST = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTN_LOCAL = 2
# Multicast groups (1 << (RTNLGRP_x - 1)): IPv4 and IPv6 addresses and routes.
_GROUPS = (1 << 4) | (1 << 6) | (1 << 8) | (1 << 10)  # IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, ROUTE

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")  # length, type
_ERRNO = struct.Struct("=i")
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface

# Requests per send: each answer is about 100 bytes (IPv6 about 150), so a batch's
# answers fit in the socket's receive buffer with room to spare.
BATCH = 256
_RCVBUF = 1 << 20
SWEEP = 30.0  # seconds between full checks when no event comes (170 ms of CPU at 10 000)


def route_get(seq: int, address: IPAddress) -> bytes:
    """The RTM_GETROUTE request for `address` (as `ip route get ADDRESS`)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    raw = address.packed
    attr = _RTATTR.pack(_RTATTR.size + len(raw), RTA_DST) + raw  # 4 or 16 bytes: aligned
    body = _RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0) + attr
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, seq, 0) + body


def answers(data: bytes) -> Iterator[tuple[int, int | None]]:
    """(sequence, route type) per answer in `data`; the type is None for an error
    (no route: ENETUNREACH, EHOSTUNREACH...). Stops at anything malformed."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return
        body = offset + _NLMSGHDR.size
        if kind == RTM_NEWROUTE and length >= _NLMSGHDR.size + _RTMSG.size:
            yield seq, _RTMSG.unpack_from(data, body)[7]
        elif (
            kind == NLMSG_ERROR
            and length >= _NLMSGHDR.size + _ERRNO.size
            and _ERRNO.unpack_from(data, body)[0] != 0
        ):
            yield seq, None
        offset += (length + 3) & ~3


def _attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            return
        yield kind, data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3


def _network(family: int, raw: bytes, prefixlen: int) -> IPNetwork | None:
    try:
        if family == socket.AF_INET and len(raw) == 4:
            return IPv4Network((raw, prefixlen), strict=False)
        if family == socket.AF_INET6 and len(raw) == 16:
            return IPv6Network((raw, prefixlen), strict=False)
    except ValueError:
        pass
    return None


def _host(family: int, raw: bytes) -> IPNetwork | None:
    return _network(family, raw, 32 if family == socket.AF_INET else 128)


def changed(data: bytes) -> tuple[set[IPNetwork], bool]:
    """What the events in `data` changed: the networks whose VIPs to check again, and
    whether to check every VIP (a route without a destination, such as a default route,
    or anything that could not be read)."""
    nets: set[IPNetwork] = set()
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            return nets, True
        body, end = offset + _NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3
        if kind in (RTM_NEWADDR, RTM_DELADDR) and end - body >= _IFADDRMSG.size:
            family = data[body]
            for a, raw in _attrs(data, body + _IFADDRMSG.size, end):
                # The address itself becomes (or stops being) local, whatever its
                # prefix length says about the subnet.
                if a in (IFA_ADDRESS, IFA_LOCAL) and (n := _host(family, raw)):
                    nets.add(n)
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and end - body >= _RTMSG.size:
            family, dst_len = data[body], data[body + 1]
            dst = [raw for a, raw in _attrs(data, body + _RTMSG.size, end) if a == RTA_DST]
            n = _network(family, dst[0], dst_len) if dst else None
            if n is None or dst_len == 0:
                return nets, True
            nets.add(n)
        elif kind not in (RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE):
            continue
        else:
            return nets, True
    return nets, False


def _netlink(groups: int) -> socket.socket:
    """A NETLINK_ROUTE socket with room for a batch's answers, bound to `groups`."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.bind((0, groups))
    return sock


class LocalRoutes:
    """Asks the kernel, VIP by VIP, whether it delivers the VIP locally."""

    def __init__(self) -> None:
        self._sock = _netlink(0)
        # The answers are queued before sendall returns: a read never waits for long;
        # the timeout only bounds a kernel that never answers (an OSError).
        self._sock.settimeout(1.0)
        self._seq = 0

    def not_local(self, addresses: Iterable[IPAddress]) -> set[IPAddress]:
        """The addresses whose route is not of type local (or that have no route)."""
        out: set[IPAddress] = set()
        batch: list[IPAddress] = []
        for a in addresses:
            batch.append(a)
            if len(batch) == BATCH:
                out |= self._ask(batch)
                batch = []
        if batch:
            out |= self._ask(batch)
        return out

    def _ask(self, batch: Sequence[IPAddress]) -> set[IPAddress]:
        first = self._seq + 1
        self._seq += len(batch)
        self._sock.sendall(b"".join(route_get(first + i, a) for i, a in enumerate(batch)))
        pending = {first + i: a for i, a in enumerate(batch)}
        local: set[IPAddress] = set()
        while pending:
            data = self._sock.recv(_RCVBUF)
            for seq, kind in answers(data):
                a = pending.pop(seq, None)
                if a is not None and kind == RTN_LOCAL:
                    local.add(a)
        return set(batch) - local

    def close(self) -> None:
        self._sock.close()


class RouteEvents:
    """The kernel's address and route events, for `loop.add_reader(events.fileno())`."""

    def __init__(self) -> None:
        self._sock = _netlink(_GROUPS)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> tuple[set[IPNetwork], bool]:
        """Every queued event: the networks they changed, and whether to check every
        VIP (ENOBUFS: events were lost while the buffer was full)."""
        nets: set[IPNetwork] = set()
        everything = False
        while True:
            try:
                data = self._sock.recv(_RCVBUF)
            except BlockingIOError:
                return nets, everything
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                everything = True
                continue
            if not data:
                return nets, everything
            more, all_ = changed(data)
            nets |= more
            everything = everything or all_

    def close(self) -> None:
        self._sock.close()


class Locality:
    """Keeps the core's `not_local` true: a look-up for new VIPs, the kernel's events,
    and a full sweep every SWEEP seconds. Logs one line per VIP that changes.

    If netlink cannot be used (a unit without AF_NETLINK, an old kernel), no VIP is
    held back for being non-local: an ERROR says so once and `ok` stays false, because
    refusing every VIP would take the LB off the network over a local setting.
    """

    def __init__(
        self,
        core: Core,
        wake: Callable[[], None],
        *,
        routes: Callable[[], LocalRoutes] = LocalRoutes,
        events: Callable[[], RouteEvents] = RouteEvents,
    ) -> None:
        self.core = core
        self.wake = wake
        self.ok = False
        self.error = ""
        self._routes: LocalRoutes | None = None
        self._events: RouteEvents | None = None
        try:
            self._routes = routes()
            self._events = events()
            self.ok = True
        except OSError as e:
            self._fail(f"cannot open a netlink socket: {e}")

    def _fail(self, why: str) -> None:
        """Netlink is gone: say so once, and hold no VIP back for being non-local."""
        self.ok, self.error = False, why
        log.error("local-VIP check off: %s; VIPs are announced by their checks alone", why)
        self.close()
        self._routes = self._events = None
        self._apply(list(self.core.vips), set())

    def check(self, addresses: Collection[IPAddress]) -> None:
        """Look `addresses` up now (new VIPs: before their first plan)."""
        if self._routes is None or not addresses:
            return
        try:
            not_local = self._routes.not_local(addresses)
        except OSError as e:
            self._fail(f"netlink route look-up failed: {e}")
            return
        self._apply(addresses, not_local)

    def _apply(self, addresses: Collection[IPAddress], not_local: set[IPAddress]) -> None:
        """The kernel's answer into the core: one line per VIP that changed."""
        changed = self.core.set_local(addresses, not_local)
        for a, local in sorted(changed, key=lambda c: by_version(c[0])):
            if local:
                log.warning("VIP %s is local again: it may be announced", a)
            else:
                log.error(
                    "VIP %s is not local to this host (no address, no local route): "
                    "not announced whatever its checks say (health.require_local)",
                    a,
                )
        if changed:
            self.wake()

    async def run(self) -> None:
        """Follow the kernel's events and sweep every VIP every SWEEP seconds; without
        netlink, wait to be cancelled (a loop that ends would stop the service)."""
        if self._events is not None:
            await self._follow(self._events)
        await asyncio.Future()

    async def _follow(self, events: RouteEvents) -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = events.fileno()
        loop.add_reader(fd, ready.set)
        try:
            next_sweep = loop.time() + SWEEP
            while self._events is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), max(0.0, next_sweep - loop.time()))
                ready.clear()
                await asyncio.sleep(0.02)  # one `ip addr add` brings several events
                try:
                    nets, everything = events.read()
                except OSError as e:
                    self._fail(f"reading netlink events failed: {e}")
                    return
                if everything or loop.time() >= next_sweep:
                    await self._sweep()
                    next_sweep = loop.time() + SWEEP
                elif nets:
                    self.check(_inside(self.core.vips, nets))
        finally:
            loop.remove_reader(fd)

    async def _sweep(self) -> None:
        vips = list(self.core.vips)
        for i in range(0, len(vips), BATCH):
            self.check(vips[i : i + BATCH])
            await asyncio.sleep(0)  # 256 look-ups are about 4 ms of the loop

    def close(self) -> None:
        for c in (self._routes, self._events):
            if c is not None:
                c.close()


def _inside(vips: Collection[IPAddress], nets: set[IPNetwork]) -> list[IPAddress]:
    """The VIPs inside any of `nets` (host routes by look-up, the rest by a scan)."""
    found = [n.network_address for n in nets if n.num_addresses == 1]
    out = [a for a in found if a in vips]
    wide = [n for n in nets if n.num_addresses > 1]
    if wide:
        out += [a for a in vips if any(a.version == n.version and a in n for n in wide)]
    return out
