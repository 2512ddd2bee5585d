"""Health-check probes: the only module that does health-check I/O.

`probe(spec)` runs one check and always returns a `CheckResult`: every failure,
including a bug in a probe, becomes `ok=False` with a short `detail`, and the
whole probe (connect, request, response, command run) is bounded by
`spec.timeout`. Only `asyncio.CancelledError` escapes, so that shutdown works.
`Prober` adds the concurrency limits a daemon needs in front of `probe`.

The HTTP client is our own minimal HTTP/1.1 rather than aiohttp or httpx:
thousands of VIPs probed every second on one core means the per-probe cost must
be a request line and a status line, with no session or response object built
per request. It is a bare asyncio.BufferedProtocol rather than asyncio streams for
the same reason: the StreamReader/StreamWriter pair cost about a third more CPU per
probe. And `Prober` keeps one idle keep-alive connection per HTTP check, because
a TCP connect and close per probe (mostly kernel time) cost four times the rest
of the probe (tests/bench/bench_probes.py and docs/performance.md measure both).
A new connection is made with our own non-blocking connect to the IP literal and
handed to the event loop as a connected socket: on loopback, where HAProxy's VIPs
are, that halves the CPU of a check's first probe, which at start is every check's.
Response heads are parsed by httptools (llhttp, or http-parser in its 0.1 releases,
the one Debian ships): it tells the status, whether the server keeps the connection
open, and where a Content-Length or chunked body ends, so that the connection can
carry the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast

import httptools

from . import __version__
from .checks import REQUEST_TOKEN, command_argv
from .model import CheckResult, CheckSpec

log = logging.getLogger("announcer.probes")

USER_AGENT = f"announcer/{__version__}"

# The most of an incomplete response head we keep; a status line must fit in it.
_HEAD_LIMIT = 16 * 1024
# What one read from a probe socket takes at most (into a buffer shared by all).
_READ_SIZE = 64 * 1024
# How much of a failed command's output ends up in `detail`.
_OUTPUT_TAIL = 200
# After SIGKILL a process group dies at once unless a member is stuck in the kernel
# (D state); we wait this long to reap the leader, then give up and log it.
_REAP_GRACE = 1.0

# Keep-alive (Prober): a connection is replaced after this many seconds, so the
# listener's accept path keeps being checked; and an idle one is closed after
# `KEEPALIVE_IDLE` (below the 5 s keep-alive timeout many servers use, so that we,
# not the server, normally end it and a request never races its close).
KEEPALIVE_MAX_AGE = 60.0
KEEPALIVE_IDLE = 4.0
# File descriptors left for everything but idle probe connections.
_FD_RESERVE = 256

# How often in-flight keep-alive requests are checked against their deadline: a
# timeout is reported at most this late, and no timer is set per request.
_DEADLINE_TICK = 0.02

# What httptools raises on a malformed answer (HttpParserUpgrade, for a 101 answer
# that switches protocols, is no subclass of HttpParserError).
_PARSE_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
_REQUEST_TOKEN = REQUEST_TOKEN  # checks.py: config.py validates with the same rule

_Outcome = tuple[bool, str]

# Failures that say nothing about the VIP: this process is out of descriptors,
# socket buffers or memory (EAGAIN: fork failed for a command check). A probe that
# meets one reports `local`, and the service keeps the VIP's state (issue 11: a
# /metrics client holding descriptors made checks fail with EMFILE).
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LOCAL_FORK_ERRNOS = _LOCAL_ERRNOS | {errno.EAGAIN}
# A timeout is ours, not the VIP's, when the event loop stalled for longer than this
# while the probe was in flight: the answer may have been waiting in the socket while
# nothing ran (a blocked loop timed out 1 708 of 2 000 healthy VIPs in 30 s). Normal
# loop iterations at 10 000 checks a second are milliseconds.
STALL = 0.1
# Local failures are logged at most this often (they come in bursts of thousands).
_LOCAL_LOG_EVERY = 10.0


class _Local(Exception):
    """A probe failed for a reason of this process, not of the VIP (caught by the callers
    of the probe functions and turned into a `CheckResult` with `local` set)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Stalls:
    """When the event loop was last seen late by more than STALL (loop.time())."""

    last = float("-inf")

    @classmethod
    def late(cls, now: float, due: float) -> bool:
        """Note a timer or deadline due at `due` that ran at `now`; True if it ran late."""
        if now - due > STALL:
            cls.last = now
            return True
        return False


def _timed_out(spec: CheckSpec, deadline: float, outcome: _Outcome) -> _Outcome:
    """A timeout's outcome, or _Local if the loop stalled while the probe was in flight."""
    now = asyncio.get_running_loop().time()
    # A stall seen after the probe started overlapped it (a stall is seen when it ends).
    if _Stalls.late(now, deadline) or _Stalls.last > deadline - spec.timeout:
        raise _Local("loop_stall", f"{outcome[1]} while the event loop stalled")
    return outcome


def _local_error(exc: BaseException, phase: str, errnos: frozenset[int] = _LOCAL_ERRNOS) -> None:
    """Raise _Local if `exc` is a shortage of this process's resources."""
    if isinstance(exc, OSError) and exc.errno in errnos:
        raise _Local(errno.errorcode[exc.errno].lower(), _describe(exc, phase)) from exc


_local_logged = [float("-inf"), 0]  # when the last line was logged, failures since


def _local_result(e: _Local, duration: float) -> CheckResult:
    """The result of a local failure; logs a line at most every _LOCAL_LOG_EVERY seconds."""
    _local_logged[1] += 1
    now = time.monotonic()
    if now - _local_logged[0] >= _LOCAL_LOG_EVERY:
        log.warning(
            "%d check(s) failed for a reason of ours, not the VIPs' (not counted, retried): "
            "latest %s",
            _local_logged[1],
            e.detail,
        )
        _local_logged[0], _local_logged[1] = now, 0
    return CheckResult(False, f"not counted: {e.detail}", duration, local=e.reason)


async def probe(spec: CheckSpec, *, pool: ConnectionPool | None = None) -> CheckResult:
    """Run one check bounded by `spec.timeout`; never raises except CancelledError.

    With a `pool`, an HTTP check reuses an idle keep-alive connection of the same
    check when there is one, and leaves its connection there for the next run.
    """
    # Deadlines are on the loop's clock, the one asyncio.timeout_at compares with.
    loop = asyncio.get_running_loop()
    start = loop.time()
    run = _PROBES.get(spec.kind)
    try:
        if run is None:
            ok, detail = False, f"unknown check kind {spec.kind!r}"
        else:
            ok, detail = await run(spec, start + spec.timeout, pool)
    except _Local as e:
        return _local_result(e, loop.time() - start)
    except Exception as exc:  # a bug in a probe must fail the check, not kill the scheduler
        log.warning("probe %s crashed", spec.target, exc_info=True)
        ok, detail = False, f"probe error: {type(exc).__name__}: {exc}"
    return CheckResult(ok=ok, detail=detail, duration=loop.time() - start)


class Prober:
    """Runs probes with bounded concurrency: fork is expensive and sockets cost file descriptors.

    At most `max_commands` commands and `max_sockets` new connections at once; a
    request on a kept keep-alive connection needs no new descriptor and takes no slot.

    HTTP checks use keep-alive connections (`keepalive=True`, the default): a check
    sends its request on the connection its previous run left open, and opens a new
    one only when there is none, the server closed it, or it is about `max_age`
    seconds old (75 to 100 % of it, spread out). A probe on an open connection
    costs a fifth of one that connects: no handshake, teardown or TIME_WAIT, which
    are mostly kernel time (docs/performance.md). Reconnecting every `max_age`
    still exercises the listener's accept path, so a listener that stops accepting
    (`disable frontend`) fails the check within `max_age` plus fall x interval;
    everything that answers (`monitor fail`, a 503, a reload, a dead HAProxy) is
    seen on the next check as before. Idle connections beyond what the
    file-descriptor limit allows are closed (those checks connect every time).
    """

    def __init__(
        self,
        *,
        max_commands: int = 16,
        max_sockets: int = 512,
        keepalive: bool = True,
        max_age: float = KEEPALIVE_MAX_AGE,
        idle_timeout: float = KEEPALIVE_IDLE,
        max_idle: int | None = None,
    ) -> None:
        if max_commands < 1 or max_sockets < 1:
            raise ValueError("max_commands and max_sockets must be at least 1")
        self.max_commands = max_commands
        self.max_sockets = max_sockets
        self._commands = asyncio.Semaphore(max_commands)
        self._sockets = asyncio.Semaphore(max_sockets)
        self.pool: ConnectionPool | None = None
        if keepalive:
            limit = max_idle if max_idle is not None else _idle_limit(max_sockets)
            self.pool = ConnectionPool(limit=limit, max_age=max_age, idle_timeout=idle_timeout)

    async def run(self, spec: CheckSpec) -> CheckResult:
        """Probe `spec` once a slot is free; time spent waiting for the slot is not timed."""
        # The timeout starts when the probe starts, not when it is queued: counting the
        # queue would turn an overloaded checker into failed checks and withdraw healthy
        # VIPs everywhere, which is far worse than checking late.
        pool = self.pool
        if pool is None or spec.kind != "http":
            async with self._commands if spec.kind == "command" else self._sockets:
                return await probe(spec, pool=pool)
        # The common case, kept short: a request on the check's idle connection. It
        # takes no slot: the connection's descriptor is counted by the pool already,
        # and the semaphore cost a fifth of a keep-alive probe (docs/performance.md).
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcome: _Outcome | None = None
        try:
            conn = pool.take(spec, start)
            if conn is not None:
                outcome = await pool.reuse(spec, conn, start + spec.timeout)
            if outcome is None:
                # No connection, or it turned out dead: a new one, with its own timeout.
                async with self._sockets:
                    start = loop.time()
                    outcome = await _http_connect(spec, start + spec.timeout, pool)
        except _Local as e:
            return _local_result(e, loop.time() - start)
        except Exception as exc:  # a bug in a probe must fail the check, not kill the scheduler
            log.warning("probe %s crashed", spec.target, exc_info=True)
            outcome = False, f"probe error: {type(exc).__name__}: {exc}"
        return CheckResult(outcome[0], outcome[1], loop.time() - start)

    def close(self) -> None:
        """Close the idle keep-alive connections (at shutdown; checks may still run after)."""
        if self.pool is not None:
            self.pool.close()


def _idle_limit(max_sockets: int) -> int:
    """How many idle connections fit under RLIMIT_NOFILE beside `max_sockets` busy ones."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Linux
        return 0
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    # Leave room for gRPC, DataPlaneAPI, logs and command checks' pipes.
    return max(0, soft - max_sockets - _FD_RESERVE)


# ----------------------------------------------------------------------- http


class _HttpConnection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection carrying one request at a time.

    A BufferedProtocol: the transport reads into one buffer shared by all probe
    connections, which the parser reads in place (a head is copied out only while it
    is incomplete). With a plain Protocol every read allocates a 256 KiB bytes
    object and shrinks it, which costs the kernel an mmap, an mremap and a munmap
    (about 12 us, a quarter of a keep-alive probe) whenever malloc hands such sizes
    to mmap.

    It is also the callback object of its httptools parser, which lives as long as
    the connection and parses one response after the other. `done` fires at the end
    of a response head (the status is all a verdict needs), at a malformed answer,
    at EOF or when the connection is lost. The body is skipped by the parser as it
    arrives, possibly after `done`: `keep` says the server lets the connection carry
    another request, `finished` that the response is over. The pool keeps a
    connection that is `keep`, and reuses it only once it is `finished` as well
    (so a body still to come, or one that never ends, costs a new connection, not a
    check), and not if anything arrived after the response.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: bool, request: bytes) -> None:
        self.loop = loop
        self.tls = tls
        self.request = request  # what every exchange on it sends (it serves one check)
        self.transport: asyncio.Transport | None = None
        # Made when the connection is, dropped when it is lost: it refers back to its
        # connection, and a cycle would leave every closed connection to the garbage
        # collector.
        self.parser: Any = None
        # Per exchange: the status once the head is complete, else 0 and what arrived
        # of the head (for the detail of an answer that is cut short or malformed).
        self.status = 0
        self.head = bytearray()
        self.keep = False
        self.finished = False  # the response is over: any byte after it is out of step
        self.error: Exception | None = None  # kept here, not in a future nobody may read
        # Fires when the socket connects (if it did not at once), then per exchange.
        # Whatever arrives before the first request counts as the first answer.
        self.done: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.closed = False  # EOF or lost: never send on it again
        # Set by the deadline sweep or timer, never reset: a connection that timed out
        # is aborted, not reused.
        self.timed_out = False
        self.born = loop.time()
        self.expires = float("inf")  # set by the pool: when to replace it
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.parser = httptools.HttpResponseParser(self)

    def send(self) -> asyncio.Future[None]:
        """Start the next exchange on this (reused) connection."""
        assert self.transport is not None
        self.status = 0
        self.head = bytearray()
        self.keep = self.finished = False
        self.done = self.loop.create_future()
        self.transport.write(self.request)
        return self.done

    def expire(self) -> None:
        """The deadline passed with no complete response head (or no connection yet)."""
        if not self.done.done():
            self.timed_out = True
            self.keep = False
            self.finished = True
            self.done.set_result(None)

    def writable(self) -> None:
        """The socket being connected became writable: connected, or failed."""
        if not self.done.done():
            self.done.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        # Called right after the read into get_buffer()'s buffer, before anything
        # else can read into it.
        self.received(_read_buffer()[:nbytes])

    def received(self, data: bytes | memoryview) -> None:
        if self.finished:
            # Anything after the response, a malformed answer or a timeout, or bytes on
            # an idle connection: the connection is out of step, so it is not reused.
            self.keep = False
            return
        try:
            self.parser.feed_data(data)
        except _PARSE_ERRORS:
            # Judged on what arrived: a bad status line fails the check, a bad header
            # after a good one does not (the status decides, whatever followed it).
            self.keep = False
            self.finished = True
            if not self.status:
                self.head += data
            if not self.done.done():
                self.done.set_result(None)
            return
        if not self.status:
            # The head is not complete yet: keep it for the detail if it never is. We
            # wait for the whole head, not just the status line, so that the server
            # sees its response consumed before we hang up.
            self.head += data
            if len(self.head) >= _HEAD_LIMIT and not self.done.done():
                self.finished = True
                self.done.set_result(None)

    # httptools callbacks (it looks up which of them exist when the parser is made).

    def on_headers_complete(self) -> None:
        if self.finished:  # a second response: the connection is out of step
            self.keep = False
            return
        status: int = self.parser.get_status_code()
        if status >= 100:
            self.status = status
            self.keep = self.parser.should_keep_alive()
        else:  # a one- or two-digit status that http-parser (httptools 0.1) lets pass
            self.finished = True
        if not self.done.done():
            self.done.set_result(None)

    def on_message_complete(self) -> None:
        if self.finished:
            self.keep = False
        self.finished = True

    def eof_received(self) -> bool:
        self.closed = True
        self.keep = False
        if not self.done.done():
            self.done.set_result(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep = False
        self.parser = None
        self.error = exc
        if not self.done.done():
            self.done.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)

    def shut(self) -> None:
        """Close an idle connection now (TLS: without waiting for close_notify)."""
        if self.transport is not None and not self.lost.done():
            if self.tls:
                self.transport.abort()
            else:
                self.transport.close()


_local = threading.local()


def _read_buffer() -> memoryview:
    """The read buffer of this thread's probe connections (one per thread: a loop runs
    in one thread, and a read and its `buffer_updated` follow each other at once)."""
    try:
        return cast(memoryview, _local.read_buffer)
    except AttributeError:
        _local.read_buffer = memoryview(bytearray(_READ_SIZE))
        return cast(memoryview, _local.read_buffer)


class ConnectionPool:
    """Idle keep-alive HTTP connections, at most one per check, with an age and idle limit."""

    def __init__(self, *, limit: int, max_age: float, idle_timeout: float) -> None:
        self.limit = limit
        self.max_age = max_age
        self.idle_timeout = idle_timeout
        self._idle: dict[CheckSpec, _HttpConnection] = {}
        self._inflight: dict[_HttpConnection, float] = {}  # reused connection -> deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._sweep_due = 0.0
        self._next_sweep = 0.0
        self.reused = 0  # counters for tests and benchmarks
        self.opened = 0

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, spec: CheckSpec, now: float) -> _HttpConnection | None:
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

    def put(self, spec: CheckSpec, conn: _HttpConnection, now: float) -> None:
        """Keep `conn` for the next run of `spec`, or close it if it may not be kept."""
        if conn.expires == float("inf"):
            # Spread replacements: connections opened together (at start, thousands)
            # must not all reconnect in the same second max_age later.
            conn.expires = conn.born + self.max_age * random.uniform(0.75, 1.0)
        if conn.closed or not conn.keep or now >= conn.expires:
            conn.shut()
        else:
            conn.idle_since = now
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

    async def reuse(
        self, spec: CheckSpec, conn: _HttpConnection, deadline: float
    ) -> _Outcome | None:
        """One request on an idle connection; None if it turned out dead before any answer.

        No timer per request: one sweep every _DEADLINE_TICK expires the requests
        past their deadline (a timer per request costs more than the request).
        """
        try:
            done = conn.send()
        except Exception:  # a transport that fails on write was dead
            conn.shut()
            return None
        self.watch(conn, deadline)
        try:
            await done
        except asyncio.CancelledError:
            _abort(conn)  # shutting down: no graceful close
            raise
        finally:
            del self._inflight[conn]
        if not conn.timed_out and not conn.status and not conn.head and conn.closed:
            # The server had closed the idle connection as we sent (its keep-alive
            # timeout raced our request): not the VIP's fault; the caller reconnects.
            conn.shut()
            return None
        self.reused += 1
        outcome = _verdict(spec, conn)
        if conn.timed_out:
            _abort(conn)
            return _timed_out(spec, deadline, outcome)
        self.put(spec, conn, conn.loop.time())
        return outcome

    def watch(self, conn: _HttpConnection, deadline: float) -> None:
        """Have `conn.expire()` called once `deadline` has passed, until `unwatch`."""
        self._inflight[conn] = deadline
        # (A sweep left on another loop, one that has ended, would never run.)
        if self._timer is None or self._timer_loop is not conn.loop:
            self._timer_loop = conn.loop
            self._sweep_due = conn.loop.time() + _DEADLINE_TICK
            self._timer = conn.loop.call_at(self._sweep_due, self._expire, conn.loop)

    def unwatch(self, conn: _HttpConnection) -> None:
        self._inflight.pop(conn, None)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._inflight:
            return
        now = loop.time()
        # The sweep doubles as the loop's stall detector while requests are in flight.
        _Stalls.late(now, self._sweep_due)
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


async def _http(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> _Outcome:
    """GET spec.path and compare the status with spec.expect_status."""
    if pool is not None:
        conn = pool.take(spec, asyncio.get_running_loop().time())
        if conn is not None:
            outcome = await pool.reuse(spec, conn, deadline)
            if outcome is not None:
                return outcome
    return await _http_connect(spec, deadline, pool)


async def _http_connect(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> _Outcome:
    """The HTTP check on a new connection (kept in `pool` afterwards if it can be)."""
    target = _http_target(spec, pool is not None)
    if target is None:
        return False, "path or Host is not a valid HTTP request token"
    return await _connect_and_get(spec, target, deadline, pool)


def _abort(conn: _HttpConnection) -> None:
    if conn.transport is not None:
        conn.transport.abort()


class _Target(NamedTuple):
    """What connecting to a check's listener and asking it needs, worked out once."""

    request: bytes
    family: socket.AddressFamily
    address: str
    port: int
    # None for a scoped IPv6 address (fe80::1%eth0): resolved when connecting.
    sockaddr: tuple[str, int] | tuple[str, int, int, int] | None
    server_hostname: str  # TLS: SNI and the name verified


@functools.lru_cache(maxsize=1 << 16)
def _http_target(spec: CheckSpec, keepalive: bool) -> _Target | None:
    """The request and socket address of an HTTP check; None if the request would be
    malformed. Cached: formatting an IPv6 address costs more than a keep-alive probe's
    own work, and a check connects again every minute or so."""
    address = str(spec.address)
    request = _http_request(spec, address, keepalive)
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
) -> _Outcome:
    """Open a connection, send the request, judge the answer; keep the connection if pooled."""
    loop = asyncio.get_running_loop()
    context = _tls_context(spec.tls_verify) if spec.tls else None
    conn = _HttpConnection(loop, context is not None, target.request)
    # One deadline for the connect and the exchange, enforced by `conn.expire()`: from
    # the pool's sweep (no timer per probe), else from a timer.
    timer: asyncio.TimerHandle | None = None
    if pool is not None:
        pool.watch(conn, deadline)
    else:
        timer = loop.call_at(deadline, conn.expire)
    transport: asyncio.Transport | None = None
    try:
        try:
            sock = await _connect(loop, conn, target)
            if sock is not None:
                transport = await _transport(loop, conn, sock, context, target, deadline)
            if transport is None or conn.timed_out:
                return _timed_out(
                    spec, deadline, (False, f"timeout after {spec.timeout}s (connecting)")
                )
            if timer is not None:
                # It may have fired while nothing waited (and so ended nothing): again
                # for the exchange, at once if the deadline has passed.
                timer.cancel()
                timer = loop.call_at(deadline, conn.expire)
            transport.write(target.request)
        except _Local:
            raise
        except Exception as exc:
            _local_error(exc, "connecting")
            return False, _describe(exc, "connecting")
        await conn.done
        if pool is not None:
            pool.opened += 1
        outcome = _verdict(spec, conn)
        if conn.timed_out:
            return _timed_out(spec, deadline, outcome)
        if pool is not None and not conn.timed_out and conn.keep:
            pool.put(spec, conn, loop.time())
            transport = None  # the pool owns it now
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
        if transport is not None:
            await _close(transport, conn, deadline - loop.time(), tls=context is not None)


async def _transport(
    loop: asyncio.AbstractEventLoop,
    conn: _HttpConnection,
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
    loop: asyncio.AbstractEventLoop, conn: _HttpConnection, target: _Target
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


def _verdict(spec: CheckSpec, conn: _HttpConnection) -> _Outcome:
    """The outcome from what arrived: the status line decides, whatever followed it."""
    status = conn.status
    if status:  # a complete head, the common case
        return status in spec.expect_status, _status_detail(status)
    head = conn.head
    end = head.find(b"\n", 0, _HEAD_LIMIT)
    if end < 0:
        if len(head) >= _HEAD_LIMIT:
            return False, "bad status line (too long)"
        if conn.timed_out:
            return False, f"timeout after {spec.timeout}s (waiting for status line)"
        if conn.error is not None:
            return False, _describe(conn.error, "waiting for status line")
        if not head:
            return False, "connection closed before status line"
        return False, f"bad status line {bytes(head[:40])!r}"
    # A server that stalls, resets or sends a malformed header after a good status
    # line still gave its answer.
    status = _status_line(head[: end + 1])
    if not status:
        return False, f"bad status line {bytes(head[: min(end + 1, 40)])!r}"
    return status in spec.expect_status, _status_detail(status)


def _status_line(line: bytearray) -> int:
    """The status of a response's first line (with its line end); 0 if it is malformed."""
    parser = httptools.HttpResponseParser(None)
    try:
        parser.feed_data(line)
    except _PARSE_ERRORS:
        return 0
    status: int = parser.get_status_code()
    return status if status >= 100 else 0


@functools.cache
def _status_detail(status: int) -> str:
    """`HTTP 200`: formatted once per status, not once per probe."""
    return f"HTTP {status}"


def _http_request(spec: CheckSpec, address: str, keepalive: bool) -> bytes | None:
    """The request head, or None if the path or Host would make it malformed."""
    if spec.host is not None:
        host = spec.host
    elif spec.address.version == 6:
        host = f"[{address}]"
    else:
        host = address
    if not (_REQUEST_TOKEN.fullmatch(spec.path) and _REQUEST_TOKEN.fullmatch(host)):
        return None
    return (
        f"GET {spec.path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"User-Agent: {USER_AGENT}\r\n" + ("" if keepalive else "Connection: close\r\n") + "\r\n"
    ).encode("ascii")


async def _close(
    transport: asyncio.Transport, exchange: _HttpConnection, grace: float, *, tls: bool
) -> None:
    """Close gracefully within `grace` seconds, else abort: a probe's cleanup stays bounded."""
    if exchange.lost.done():
        return
    if grace <= 0:
        transport.abort()
        return
    transport.close()
    if not tls:
        return  # plain TCP: the socket is closed on the next loop iteration
    # A TLS close waits for the peer's close_notify (asyncio allows 30 s by default);
    # that must not hold a probe's socket past its deadline.
    await asyncio.wait([exchange.lost], timeout=grace)
    if not exchange.lost.done():
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


# ------------------------------------------------------------------------ tcp


async def _tcp(spec: CheckSpec, deadline: float) -> _Outcome:
    """Healthy if a TCP connection to address:port opens."""
    if spec.port is None:
        return False, "no port to connect to"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(deadline) as limit:
            # A bare Protocol: no stream objects for a connection we close at once.
            transport, _ = await loop.create_connection(
                asyncio.Protocol, str(spec.address), spec.port
            )
    except TimeoutError as exc:
        if limit.expired():
            return _timed_out(
                spec, deadline, (False, f"timeout after {spec.timeout}s (connecting)")
            )
        return False, _describe(exc, "connecting")
    except Exception as exc:
        _local_error(exc, "connecting")
        return False, _describe(exc, "connecting")
    transport.close()
    return True, "connected"


def _describe(exc: BaseException, phase: str) -> str:
    """A short reason for a socket or TLS failure."""
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset ({phase})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({phase})"
    return f"{type(exc).__name__}: {exc} ({phase})"


# -------------------------------------------------------------------- command


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Keeps the tail of stdout and stderr, and signals exit and end of output."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()
        # Exited and both pipes closed: every byte of output has been received
        # (asyncio reports the exit and the pipes' data in no particular order).
        self.finished: asyncio.Future[None] = loop.create_future()
        self.output = {1: bytearray(), 2: bytearray()}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        # Keep only the tail: a chatty check must not grow our memory.
        buffer = self.output[fd]
        buffer += data
        del buffer[:-_OUTPUT_TAIL]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def tail(self) -> str:
        """The end of stderr, else of stdout, on one line."""
        raw = self.output[2].strip() or self.output[1].strip()
        return " ".join(raw.decode("utf-8", "replace").split())


# The PATH a command check gets when announcer itself has none.
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _command_env() -> dict[str, str]:
    """The whole environment of a command check: PATH and LANG, nothing else.

    announcer's own environment holds what a check must not see: the DataPlaneAPI
    password (`password_env`), systemd's CREDENTIALS_DIRECTORY and NOTIFY_SOCKET
    (with which a check could tell systemd we are ready or stopping).
    """
    return {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def _command_argv(spec: CheckSpec) -> list[str]:
    """The argv to run, with every `%s` replaced by the VIP; raises ValueError."""
    return command_argv(spec.command, spec.shell, str(spec.address))


async def _command(spec: CheckSpec, deadline: float) -> _Outcome:
    """Run spec.command; healthy on exit status 0."""
    try:
        argv = _command_argv(spec)
    except ValueError as exc:
        return False, f"bad command: {exc}"
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _CommandProtocol(loop),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_command_env(),
            # Its own process group, so that a timeout kills everything the check
            # started, not just the shell (ExaBGP healthcheck PR #188: timed-out
            # checks left their children running and they piled up).
            start_new_session=True,
        )
    except FileNotFoundError:
        return False, f"command not found: {argv[0]}"
    except PermissionError:
        return False, f"permission denied: {argv[0]}"
    except OSError as exc:
        _local_error(exc, f"starting {argv[0]}", _LOCAL_FORK_ERRNOS)
        return False, f"cannot run {argv[0]}: {exc.strerror or exc}"

    try:
        # asyncio.wait, not a timeout around `await`: a timeout would cancel the
        # protocol's futures, and the cleanup still needs `exited`.
        await asyncio.wait([protocol.finished], timeout=max(0.0, deadline - loop.time()))
        # Decided before the cleanup kills anything: None means it was still running.
        returncode = transport.get_returncode()
    finally:
        await _end_command(transport, protocol, argv[0])

    if returncode is None:
        return _timed_out(
            spec, deadline, (False, f"timeout after {spec.timeout}s (process group killed)")
        )
    if returncode == 0:
        return True, "exit 0"
    reason = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    output = protocol.tail()
    return False, f"{reason}: {output}" if output else reason


async def _end_command(
    transport: asyncio.SubprocessTransport, protocol: _CommandProtocol, name: str
) -> None:
    """Kill what is left of the command's process group, reap the leader, close the pipes."""
    try:
        # Kill the group if the leader runs or something it started still holds the
        # pipes. In both cases the group is not empty, so its id cannot have been
        # reused by an unrelated process; a finished check is left alone for that reason.
        if transport.get_returncode() is None or not protocol.finished.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(transport.get_pid(), signal.SIGKILL)
        await asyncio.wait([protocol.exited], timeout=_REAP_GRACE)
        if not protocol.exited.done():
            log.warning(
                "command %s (pid %s) survived SIGKILL; not reaped yet", name, transport.get_pid()
            )
    finally:
        transport.close()


async def _tcp_probe(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> _Outcome:
    return await _tcp(spec, deadline)


async def _command_probe(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> _Outcome:
    return await _command(spec, deadline)


_PROBES: dict[str, Callable[[CheckSpec, float, ConnectionPool | None], Awaitable[_Outcome]]] = {
    "http": _http,
    "tcp": _tcp_probe,
    "command": _command_probe,
}
