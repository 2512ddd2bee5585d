#!/usr/bin/env python3
"""Stream a namespace's kernel host routes as timestamped lines (stdlib only).

Run inside a router's network namespace (`ip netns exec NS python3 routewatch.py`).
It subscribes to rtnetlink route events, then dumps the main table, and prints one
line per host route (/32, /128) event, flushed at once:

    <unix time> + <prefix>     route added or replaced (zebra installed it)
    <unix time> - <prefix>     route deleted
    <unix time> ready          the initial dump is complete
    <unix time> overflow       the kernel dropped events (ENOBUFS); a new dump follows

The time is taken when the message is read from the socket, so the benchmark can
tail the output at leisure and still time a route's arrival or departure to well
under a millisecond, without polling vtysh or `ip route` (each poll of 10 000
routes would cost the machine under test tens of milliseconds of CPU).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import time

NETLINK_ROUTE = 0
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTA_DST, RTA_TABLE = 1, 15
RT_TABLE_MAIN = 254
SO_RCVBUFFORCE = 33
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_RTA = struct.Struct("=HH")


def _host_route(data: bytes, off: int, end: int) -> str | None:
    """The prefix of one RTM_*ROUTE message if it is a host route of the main table."""
    family, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(data, off)
    if (family, dst_len) not in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
        return None
    dst: bytes | None = None
    a = off + _RTMSG.size
    while a + _RTA.size <= end:
        rta_len, rta_type = _RTA.unpack_from(data, a)
        if rta_len < _RTA.size:
            break
        value = data[a + _RTA.size : a + rta_len]
        if rta_type == RTA_DST:
            dst = value
        elif rta_type == RTA_TABLE and len(value) == 4:
            table = struct.unpack("=I", value)[0]
        a += (rta_len + 3) & ~3
    if dst is None or table != RT_TABLE_MAIN:
        return None
    return f"{socket.inet_ntop(family, dst)}/{dst_len}"


def _messages(data: bytes) -> list[tuple[int, str | None]]:
    """(type, host prefix or None) of every netlink message in one datagram."""
    out: list[tuple[int, str | None]] = []
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, _, _, _ = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        prefix = None
        if kind in (RTM_NEWROUTE, RTM_DELROUTE) and length >= _HDR.size + _RTMSG.size:
            prefix = _host_route(data, off + _HDR.size, off + length)
        out.append((kind, prefix))
        off += (length + 3) & ~3
    return out


def _dump(emit: list[str]) -> None:
    """Every host route now in the main table, as `+` lines."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        request = _HDR.pack(
            _HDR.size + _RTMSG.size, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        ) + _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
        s.send(request)
        while True:
            data = s.recv(1 << 20)
            now = time.time()
            for kind, prefix in _messages(data):
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    return
                if prefix is not None:
                    emit.append(f"{now:.6f} + {prefix}")


def main() -> int:
    out = sys.stdout
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    # A burst of 10 000 route installs must not overflow the socket: 64 MiB.
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    sock.bind((0, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
    lines: list[str] = []
    _dump(lines)
    lines.append(f"{time.time():.6f} ready")
    out.write("\n".join(lines) + "\n")
    out.flush()
    while True:
        try:
            data = sock.recv(1 << 20)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            lines = [f"{time.time():.6f} overflow"]
            _dump(lines)
            lines.append(f"{time.time():.6f} ready")
            out.write("\n".join(lines) + "\n")
            out.flush()
            continue
        now = time.time()
        lines = []
        for kind, prefix in _messages(data):
            if prefix is not None:
                lines.append(f"{now:.6f} {'+' if kind == RTM_NEWROUTE else '-'} {prefix}")
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):
        os._exit(0)
