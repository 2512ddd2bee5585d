"""The HTTP check: opening its connection, its deadline, and keeping it alive between runs.

`run_http` sends the check's request on the connection its previous run left in the
`ConnectionPool`, or on a new one (`http_connect`); what goes over a connection and
how its answer is judged is probe_http_connection.py's.

`Prober` keeps one idle keep-alive connection per HTTP check, because a TCP connect
and close per probe (mostly kernel time) cost four times the rest of the probe
(tests/bench/bench_probes.py and docs/performance.md measure both). A new connection
is made with our own non-blocking connect to the IP literal: on loopback, where
HAProxy's VIPs are, that halves the CPU of a check's first probe, which at start is
every check's. A plain-TCP connection the pool may keep is then carried by the
pool's `SocketSet` (probe_sockets.py: its socket in one epoll set, about 160 bytes)
rather than by an event-loop transport (about 1.5 KiB); TLS connections, and those
of one-off probes without a pool, are handed to the loop as a connected socket.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import random
import socket
import ssl
from typing import NamedTuple, cast

from .model import CheckSpec
from .probe_failures import LocalFailure, Outcome, Stalls, describe, local_error, timed_out
from .probe_http_connection import HttpConnection, http_request, verdict
from .probe_sockets import SocketSet

# How often in-flight keep-alive requests are checked against their deadline: a
# timeout is reported at most this late, and no timer is set per request.
_DEADLINE_TICK = 0.02


class ConnectionPool:
    """Idle keep-alive HTTP connections, at most one per check, with an age and idle limit."""

    def __init__(self, *, limit: int, max_age: float, idle_timeout: float) -> None:
        self.limit = limit
        self.max_age = max_age
        self.idle_timeout = idle_timeout
        self._idle: dict[CheckSpec, HttpConnection] = {}
        self._inflight: dict[HttpConnection, float] = {}  # reused connection -> deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._sweep_due = 0.0
        self._next_sweep = 0.0
        self._sockets: SocketSet | None = None  # the plain connections', on their loop
        self.reused = 0  # counters for tests and benchmarks
        self.opened = 0

    def __len__(self) -> int:
        return len(self._idle)

    def sockets(self, loop: asyncio.AbstractEventLoop) -> SocketSet:
        """The set that carries this pool's plain connections on `loop` (a pool outlives
        a loop only in tests: a set left on a loop that has ended is closed)."""
        s = self._sockets
        if s is None or s.loop is not loop or s.closed:
            if s is not None:
                s.shutdown()
            s = self._sockets = SocketSet(loop)
        return s

    def take(self, spec: CheckSpec, now: float) -> HttpConnection | None:
        """The idle connection of `spec` if it is still good, else None."""
        conn = self._idle.pop(spec, None)
        if conn is None:
            return None
        if (
            not (conn.keep and conn.finished)  # its body never ended, or more came
            or conn.closed
            or now - conn.idle_since > self.idle_timeout
            or now >= conn.expires
        ):
            conn.shut()
            return None
        return conn

    def put(self, spec: CheckSpec, conn: HttpConnection, now: float) -> None:
        """Keep `conn` for the next run of `spec`, or close it if it may not be kept."""
        if conn.expires == float("inf"):
            # Spread replacements: connections opened together (at start, thousands)
            # must not all reconnect in the same second max_age later.
            conn.expires = conn.born + self.max_age * random.uniform(0.75, 1.0)
        if conn.closed or not conn.keep or now >= conn.expires:
            conn.shut()
        else:
            conn.idle_since = now
            conn.idle()
            # One dict lookup in the common case: hashing a CheckSpec costs about a
            # microsecond, a few per cent of a keep-alive probe.
            # Requests in flight hold their connections too (reuses take no slot).
            room = len(self._idle) + len(self._inflight) < self.limit
            old = self._idle.setdefault(spec, conn) if room else self._idle.get(spec)
            if old is None:
                conn.shut()  # no room
            elif old is not conn:
                old.shut()  # two runs of one check at once: keep the newer connection
                self._idle[spec] = conn
        if now >= self._next_sweep:
            self._sweep(now)

    async def reuse(self, spec: CheckSpec, conn: HttpConnection, deadline: float) -> Outcome | None:
        """One request on an idle connection; None if it turned out dead before any answer.

        No timer per request: one sweep every _DEADLINE_TICK expires the requests
        past their deadline (a timer per request costs more than the request).
        """
        done = self.send(conn, deadline)
        if done is None:
            return None
        try:
            await done
        except asyncio.CancelledError:
            conn.abort()  # shutting down: no graceful close
            raise
        finally:
            self.unwatch(conn)
        return self.finish(spec, conn, deadline)

    def send(self, conn: HttpConnection, deadline: float) -> asyncio.Future[None] | None:
        """Send the request on idle `conn`, watched until `deadline`; the future resolves
        when the answer's head is in, the connection closed or the deadline passed (then
        call `unwatch` and `finish`). None: the transport failed on write (it was dead)."""
        try:
            done = conn.send()
        except Exception:
            conn.shut()
            return None
        self.watch(conn, deadline)
        return done

    def finish(self, spec: CheckSpec, conn: HttpConnection, deadline: float) -> Outcome | None:
        """The outcome of the request `send` started; None if the connection was dead
        before any answer (the caller reconnects). Keeps `conn` for the next run if it may."""
        if not conn.timed_out and not conn.status and not conn.head and conn.closed:
            # The server had closed the idle connection as we sent (its keep-alive
            # timeout raced our request): not the VIP's fault; the caller reconnects.
            conn.shut()
            return None
        self.reused += 1
        outcome = verdict(spec, conn)
        if conn.timed_out:
            conn.abort()
            return timed_out(spec, deadline, outcome)
        self.put(spec, conn, conn.loop.time())
        return outcome

    def abandon(self, conn: HttpConnection) -> None:
        """A request given up (its check retired, or shutdown): no graceful close."""
        self.unwatch(conn)
        conn.abort()

    def watch(self, conn: HttpConnection, deadline: float) -> None:
        """Have `conn.expire()` called once `deadline` has passed, until `unwatch`."""
        self._inflight[conn] = deadline
        # (A sweep left on another loop, one that has ended, would never run.)
        if self._timer is None or self._timer_loop is not conn.loop:
            self._timer_loop = conn.loop
            self._sweep_due = conn.loop.time() + _DEADLINE_TICK
            self._timer = conn.loop.call_at(self._sweep_due, self._expire, conn.loop)

    def unwatch(self, conn: HttpConnection) -> None:
        self._inflight.pop(conn, None)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._inflight:
            return
        now = loop.time()
        # The sweep doubles as the loop's stall detector while requests are in flight.
        Stalls.late(now, self._sweep_due)
        for conn, deadline in list(self._inflight.items()):
            if deadline <= now:
                conn.expire()
        self._sweep_due = now + _DEADLINE_TICK
        self._timer = loop.call_at(self._sweep_due, self._expire, loop)

    def _sweep(self, now: float) -> None:
        """Close connections idle too long (their check was removed or slowed down)."""
        self._next_sweep = now + self.idle_timeout
        stale = [
            s for s, c in self._idle.items() if c.closed or now - c.idle_since > self.idle_timeout
        ]
        for spec in stale:
            self._idle.pop(spec).shut()

    def close(self) -> None:
        # The sweep stops by itself once no request is in flight; those still in
        # flight keep their deadline.
        if self._timer is not None and not self._inflight:
            self._timer.cancel()
            self._timer = None
        for conn in self._idle.values():
            conn.shut()
        self._idle.clear()
        if self._sockets is not None and not self._inflight:
            self._sockets.shutdown()
            self._sockets = None


async def run_http(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> Outcome:
    """GET spec.path and compare the status with spec.expect_status."""
    if pool is not None:
        conn = pool.take(spec, asyncio.get_running_loop().time())
        if conn is not None:
            outcome = await pool.reuse(spec, conn, deadline)
            if outcome is not None:
                return outcome
    return await http_connect(spec, deadline, pool)


async def http_connect(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> Outcome:
    """The HTTP check on a new connection (kept in `pool` afterwards if it can be)."""
    target = _http_target(spec, pool is not None)
    if target is None:
        return False, "path or Host is not a valid HTTP request token"
    return await _connect_and_get(spec, target, deadline, pool)


class _Target(NamedTuple):
    """What connecting to a check's listener and asking it needs, worked out once."""

    request: bytes
    family: socket.AddressFamily
    address: str
    port: int
    # None for a scoped IPv6 address (fe80::1%eth0): resolved when connecting.
    sockaddr: tuple[str, int] | tuple[str, int, int, int] | None
    server_hostname: str  # TLS: SNI and the name verified


def _http_target(spec: CheckSpec, keepalive: bool) -> _Target | None:
    """The request and socket address of an HTTP check; None if the request would be
    malformed. Worked out for each new connection (3.8 us here, for an IPv6 address):
    a check on a kept connection connects again about once a minute, and a cache of
    it held about 300 bytes per check (issue 16)."""
    address = str(spec.address)
    request = http_request(spec, address, keepalive)
    if request is None:
        return None
    port = spec.port if spec.port is not None else (443 if spec.tls else 80)
    sockaddr: tuple[str, int] | tuple[str, int, int, int] | None
    if spec.address.version == 6:
        family = socket.AF_INET6
        sockaddr = None if "%" in address else (address, port, 0, 0)
    else:
        family = socket.AF_INET
        sockaddr = (address, port)
    # An IP literal as the name gets no SNI and is matched against the certificate's IP SANs.
    return _Target(request, family, address, port, sockaddr, spec.host or address)


async def _connect_and_get(
    spec: CheckSpec, target: _Target, deadline: float, pool: ConnectionPool | None
) -> Outcome:
    """Open a connection, send the request, judge the answer; keep the connection if pooled."""
    loop = asyncio.get_running_loop()
    context = _tls_context(spec.tls_verify) if spec.tls else None
    conn = HttpConnection(loop, context is not None, target.request)
    # One deadline for the connect and the exchange, enforced by `conn.expire()`: from
    # the pool's sweep (no timer per probe), else from a timer.
    timer: asyncio.TimerHandle | None = None
    if pool is not None:
        pool.watch(conn, deadline)
    else:
        timer = loop.call_at(deadline, conn.expire)
    transport: asyncio.Transport | None = None
    adopted = False  # carried by the pool's SocketSet: closed here unless kept
    try:
        try:
            # The set first: made on the first connection, it takes a descriptor too.
            sockets = pool.sockets(loop) if pool is not None and context is None else None
            sock = await _connect(loop, conn, target)
            if sock is not None:
                if sockets is not None:
                    sockets.adopt(conn, sock)
                    adopted = True
                else:
                    transport = await _transport(loop, conn, sock, context, target, deadline)
            if (transport is None and not adopted) or conn.timed_out:
                return timed_out(
                    spec, deadline, (False, f"timeout after {spec.timeout}s (connecting)")
                )
            if timer is not None:
                # It may have fired while nothing waited (and so ended nothing): again
                # for the exchange, at once if the deadline has passed.
                timer.cancel()
                timer = loop.call_at(deadline, conn.expire)
            conn.write(target.request)
        except LocalFailure:
            raise
        except Exception as exc:
            local_error(exc, "connecting")
            return False, describe(exc, "connecting")
        assert conn.done is not None  # a new connection's first exchange
        await conn.done
        if pool is not None:
            pool.opened += 1
        outcome = verdict(spec, conn)
        if conn.timed_out:
            return timed_out(spec, deadline, outcome)
        if pool is not None and not conn.timed_out and conn.keep:
            pool.put(spec, conn, loop.time())
            transport = None  # the pool owns it now
            adopted = False
        return outcome
    except asyncio.CancelledError:
        if transport is not None:
            transport.abort()  # shutting down: no graceful TLS close
            transport = None
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if pool is not None:
            pool.unwatch(conn)
        if adopted:
            conn.shut()  # plain TCP: closed at once, as a transport closes it
        elif transport is not None:
            await _close(transport, conn, deadline - loop.time(), tls=context is not None)


async def _transport(
    loop: asyncio.AbstractEventLoop,
    conn: HttpConnection,
    sock: socket.socket,
    context: ssl.SSLContext | None,
    target: _Target,
    deadline: float,
) -> asyncio.Transport | None:
    """A transport on the connected `sock` (which it owns from the call on), after the
    TLS handshake if `context`; None if the deadline passed during the handshake."""
    if context is None:
        # No I/O to wait for: bounded without a timeout.
        transport, _ = await loop.create_connection(lambda: conn, sock=sock)
        return transport
    try:
        async with asyncio.timeout_at(deadline) as limit:
            transport, _ = await loop.create_connection(
                lambda: conn, sock=sock, ssl=context, server_hostname=target.server_hostname
            )
    except TimeoutError:
        if limit.expired():
            return None
        raise
    return transport


async def _connect(
    loop: asyncio.AbstractEventLoop, conn: HttpConnection, target: _Target
) -> socket.socket | None:
    """A connected non-blocking socket, or None if `conn` expired first; raises OSError.

    Our own connect rather than loop.create_connection(host, port): for an IP literal
    that resolves, wraps and re-checks the address, and always waits for the socket
    to become writable, which on loopback (a VIP on this host) is a wasted loop
    iteration and two epoll_ctl calls: the handshake is done when connect returns.
    """
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sockaddr = target.sockaddr
        if sockaddr is None:
            # A scoped address (fe80::1%eth0): the resolver parses the zone (numeric:
            # no DNS, no blocking), as loop.create_connection has it do.
            info = socket.getaddrinfo(
                target.address,
                target.port,
                socket.AF_INET6,
                socket.SOCK_STREAM,
                0,
                socket.AI_NUMERICHOST,
            )
            sockaddr = cast(tuple[str, int, int, int], info[0][4])
        err = sock.connect_ex(sockaddr)
        if err in (errno.EINPROGRESS, errno.EINTR):
            try:
                sock.getpeername()  # connected already?
                return sock
            except OSError:
                pass
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # refused already?
            if err == 0:
                fd = sock.fileno()
                loop.add_writer(fd, conn.writable)
                try:
                    assert conn.done is not None  # made with the connection
                    await conn.done
                finally:
                    loop.remove_writer(fd)
                if conn.timed_out:
                    sock.close()
                    return None
                conn.done = loop.create_future()  # for the first answer
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                # Worded as asyncio words it, so that the detail reads as it always has.
                raise OSError(err, f"Connect call failed {sockaddr}")
        elif err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


async def _close(
    transport: asyncio.Transport, exchange: HttpConnection, grace: float, *, tls: bool
) -> None:
    """Close gracefully within `grace` seconds, else abort: a probe's cleanup stays bounded."""
    if exchange.is_lost:
        return
    if grace <= 0:
        transport.abort()
        return
    transport.close()
    if not tls:
        return  # plain TCP: the socket is closed on the next loop iteration
    # A TLS close waits for the peer's close_notify (asyncio allows 30 s by default);
    # that must not hold a probe's socket past its deadline.
    await asyncio.wait([exchange.lost()], timeout=grace)
    if not exchange.is_lost:
        transport.abort()


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    """One shared client context per mode: building one loads the CA store (milliseconds)."""
    if verify:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # Offer only HTTP/1.1 so that a frontend with `alpn h2,http/1.1` cannot pick h2.
    context.set_alpn_protocols(["http/1.1"])
    return context
