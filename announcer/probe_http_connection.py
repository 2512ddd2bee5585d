"""One HTTP/1.1 probe connection: the request it sends and the verdict on the answer.

The HTTP client is our own minimal HTTP/1.1 rather than aiohttp or httpx:
thousands of VIPs probed every second on one core means the per-probe cost must
be a request line and a status line, with no session or response object built
per request. `HttpConnection` is a bare asyncio.BufferedProtocol (when a transport
carries it: TLS; plain connections are read by probe_sockets.py, which calls the
same methods) rather than asyncio streams for the same reason: the
StreamReader/StreamWriter pair cost about a third more CPU per probe. Response heads
are parsed by httptools (llhttp, or http-parser in its 0.1 releases, the one Debian
ships): it tells the status, whether the server keeps the connection open, and where
a Content-Length or chunked body ends, so that the connection can carry the next
request.

Opening connections, their deadlines and keeping them alive between runs are
probe_http.py's.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from typing import TYPE_CHECKING, Any, cast

import httptools

from . import __version__
from .checks import REQUEST_TOKEN
from .model import CheckSpec
from .probe_failures import Outcome, describe

if TYPE_CHECKING:
    from .probe_sockets import SocketSet

USER_AGENT = f"announcer/{__version__}"

# The most of an incomplete response head we keep; a status line must fit in it.
_HEAD_LIMIT = 16 * 1024
# What one read from a probe socket takes at most (into a buffer shared by all).
_READ_SIZE = 64 * 1024

# What httptools raises on a malformed answer (HttpParserUpgrade, for a 101 answer
# that switches protocols, is no subclass of HttpParserError).
_PARSE_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
_REQUEST_TOKEN = REQUEST_TOKEN  # checks.py: config.py validates with the same rule


class HttpConnection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection carrying one request at a time.

    A BufferedProtocol: the transport reads into one buffer shared by all probe
    connections, which the parser reads in place (a head is copied out only while it
    is incomplete). With a plain Protocol every read allocates a 256 KiB bytes
    object and shrinks it, which costs the kernel an mmap, an mremap and a munmap
    (about 12 us, a quarter of a keep-alive probe) whenever malloc hands such sizes
    to mmap.

    Its httptools parser is lent to it from a pool when the answer's first bytes
    arrive (`_borrow`), and given back when the answer is over, usually in the same
    read: at 10 000 checks nearly every connection is idle, and a parser per
    connection (with the bound methods it keeps) cost about 700 bytes each; lent at
    the request instead, a burst of requests (every check at start) needed a parser
    each, made anew past the pool's limit (0.2 s of the start's CPU at 10 000
    checks; issue 16).

    `done` fires at the end of a response head (the status is all a verdict needs),
    at a malformed answer, at EOF or when the connection is lost. The body is
    skipped by the parser as it arrives, possibly after `done`: `keep` says the
    server lets the connection carry another request, `finished` that the response
    is over. The pool keeps a connection that is `keep`, and reuses it only once it
    is `finished` as well (so a body still to come, or one that never ends, costs a
    new connection, not a check), and not if anything arrived after the response.
    """

    # 10 000 of them at 10 000 VIPs: slots rather than a dict each (issue 16).
    __slots__ = (
        "_lost",
        "born",
        "closed",
        "done",
        "error",
        "expires",
        "finished",
        "head",
        "idle_since",
        "is_lost",
        "keep",
        "lender",
        "loop",
        "parser",
        "request",
        "sock",
        "sockets",
        "status",
        "timed_out",
        "tls",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: bool, request: bytes) -> None:
        self.loop = loop
        self.tls = tls
        self.request = request  # what every exchange on it sends (it serves one check)
        # Carried by a transport (TLS, or no pool), or by its socket in the pool's
        # SocketSet (plain TCP: probe_sockets.py).
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.sockets: SocketSet | None = None
        # Borrowed when an answer begins to arrive (`_borrow`), given back once the
        # response is over and the connection may carry another; dropped when the
        # connection is lost.
        self.parser: Any = None
        self.lender: _Lender | None = None
        # Per exchange: the status once the head is complete, else 0 and what arrived
        # of the head (for the detail of an answer that is cut short or malformed).
        self.status = 0
        self.head: bytes | bytearray = b""  # a bytearray only once something is kept
        self.keep = False
        self.finished = False  # the response is over: any byte after it is out of step
        self.error: Exception | None = None  # kept here, not in a future nobody may read
        # Fires when the socket connects (if it did not at once), then per exchange.
        # Whatever arrives before the first request counts as the first answer.
        self.done: asyncio.Future[None] | None = loop.create_future()
        self.is_lost = False  # connection_lost has run (the transport is gone)
        self._lost: asyncio.Future[None] | None = None  # made only if someone waits
        self.closed = False  # EOF or lost: never send on it again
        # Set by the deadline sweep or timer, never reset: a connection that timed out
        # is aborted, not reused.
        self.timed_out = False
        self.born = loop.time()
        self.expires = float("inf")  # set by the pool: when to replace it
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def attach(self, sock: socket.socket, sockets: SocketSet) -> None:
        """Carried by `sock` in `sockets` (SocketSet.adopt) instead of a transport."""
        self.sock, self.sockets = sock, sockets

    def write(self, data: bytes) -> None:
        if self.sockets is not None:
            self.sockets.write(self, data)
        else:
            assert self.transport is not None
            self.transport.write(data)

    def send(self) -> asyncio.Future[None]:
        """Start the next exchange on this (reused) connection; raises ConnectionError
        if it is lost already (the caller connects anew)."""
        if self.is_lost:
            raise ConnectionError("the connection is lost")
        self.status = 0
        self.head = b""
        self.keep = self.finished = False
        self.done = self.loop.create_future()
        self.write(self.request)
        return self.done

    def pending(self) -> bool:
        """An exchange (or the connect) is waiting for its answer."""
        return self.done is not None and not self.done.done()

    def _fire(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def idle(self) -> None:
        """Between exchanges (the pool keeps it): drop the last exchange's future, which
        10 000 idle connections would otherwise each keep (issue 16)."""
        self.done = None

    def expire(self) -> None:
        """The deadline passed with no complete response head (or no connection yet)."""
        if self.pending():
            self.timed_out = True
            self.keep = False
            self.finished = True
            self._fire()

    def writable(self) -> None:
        """The socket being connected became writable: connected, or failed."""
        self._fire()

    def get_buffer(self, sizehint: int) -> memoryview:
        return read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        # Called right after the read into get_buffer()'s buffer, before anything
        # else can read into it.
        self.received(read_buffer()[:nbytes])

    def received(self, data: bytes | memoryview) -> None:
        if self.finished:
            # Anything after the response, a malformed answer or a timeout, or bytes on
            # an idle connection: the connection is out of step, so it is not reused.
            self.keep = False
            return
        if self.parser is None:
            _borrow(self)
        try:
            self.parser.feed_data(data)
        except _PARSE_ERRORS:
            # Judged on what arrived: a bad status line fails the check, a bad header
            # after a good one does not (the status decides, whatever followed it).
            self.keep = False
            self.finished = True
            if not self.status:
                self._keep_head(data)
            self._fire()
            return
        if self.finished and self.keep and self.lender is not None:
            # The response is over and the connection may carry another: the parser
            # is at a message boundary, with nothing after it, and goes back.
            _give_back(self)
            return
        if not self.status:
            # The head is not complete yet: keep it for the detail if it never is. We
            # wait for the whole head, not just the status line, so that the server
            # sees its response consumed before we hang up.
            self._keep_head(data)
            if len(self.head) >= _HEAD_LIMIT and self.pending():
                self.finished = True
                self._fire()

    def _keep_head(self, data: bytes | memoryview) -> None:
        if self.head:
            self.head += data
        else:
            self.head = bytearray(data)

    def eof_received(self) -> bool:
        self.closed = True
        self.keep = False
        self._fire()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep = False
        if self.lender is not None:  # mid-exchange: its state is unknown, not pooled
            self.lender.conn = None
        self.parser = self.lender = None
        self.error = exc
        self._fire()
        self.is_lost = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def lost(self) -> asyncio.Future[None]:
        """Resolves when the connection is lost (a future per connection only when asked:
        10 000 idle connections would otherwise each keep one)."""
        if self._lost is None:
            self._lost = self.loop.create_future()
            if self.is_lost:
                self._lost.set_result(None)
        return self._lost

    def shut(self) -> None:
        """Close an idle connection now (TLS: without waiting for close_notify)."""
        if self.is_lost:
            return
        if self.sockets is None and self.transport is not None and not self.tls:
            self.transport.close()  # plain TCP on a transport: its FIN after the writes
        else:
            self.abort()

    def abort(self) -> None:
        """Close now, whatever is pending (a timeout, a check given up, shutdown)."""
        if self.sockets is not None:
            self.sockets.close(self)
        elif self.transport is not None:
            self.transport.abort()


class _Lender:
    """The callback object of a pooled parser, acting on the connection that borrowed
    it (httptools binds the callbacks when a parser is made, so they cannot be the
    connection's own). The callbacks judge the answer here rather than passing it on:
    a call less per callback, three per probe."""

    __slots__ = ("conn", "parser")

    def __init__(self) -> None:
        self.conn: HttpConnection | None = None
        self.parser: Any = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        conn = self.conn
        if conn is not None and conn.finished:  # bytes after the response: out of step
            conn.keep = False

    def on_headers_complete(self) -> None:
        conn = self.conn
        if conn is None:
            return
        if conn.finished:  # a second response: the connection is out of step
            conn.keep = False
            return
        status: int = self.parser.get_status_code()
        if status >= 100:
            conn.status = status
            conn.keep = self.parser.should_keep_alive()
        else:  # a one- or two-digit status that http-parser (httptools 0.1) lets pass
            conn.finished = True
        done = conn.done
        if done is not None and not done.done():
            done.set_result(None)

    def on_message_complete(self) -> None:
        conn = self.conn
        if conn is not None:
            if conn.finished:
                conn.keep = False
            conn.finished = True


# Idle parsers, each at a message boundary. One list for every thread: a parser is
# owned by one connection while lent, and list.pop and append are atomic. More than
# _POOL_LIMIT idle at once (all the checks' first answers at start) are freed.
_IDLE_PARSERS: list[_Lender] = []
_POOL_LIMIT = 256


def _borrow(conn: HttpConnection) -> None:
    """Lend `conn` a parser."""
    lender = _IDLE_PARSERS.pop() if _IDLE_PARSERS else _Lender()
    lender.conn = conn
    conn.lender, conn.parser = lender, lender.parser


def _give_back(conn: HttpConnection) -> None:
    """`conn`'s response is complete and nothing followed it: its parser is at a message
    boundary (llhttp resets itself after a keep-alive response) and can serve another."""
    lender = conn.lender
    assert lender is not None
    lender.conn = None
    conn.parser = conn.lender = None
    if len(_IDLE_PARSERS) < _POOL_LIMIT:
        _IDLE_PARSERS.append(lender)


_local = threading.local()


def read_buffer() -> memoryview:
    """The read buffer of this thread's probe connections (one per thread: a loop runs
    in one thread, and a read and its `buffer_updated` follow each other at once)."""
    try:
        return cast(memoryview, _local.read_buffer)
    except AttributeError:
        _local.read_buffer = memoryview(bytearray(_READ_SIZE))
        return cast(memoryview, _local.read_buffer)


def verdict(spec: CheckSpec, conn: HttpConnection) -> Outcome:
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
            return False, describe(conn.error, "waiting for status line")
        if not head:
            return False, "connection closed before status line"
        return False, f"bad status line {bytes(head[:40])!r}"
    # A server that stalls, resets or sends a malformed header after a good status
    # line still gave its answer.
    status = _status_line(head[: end + 1])
    if not status:
        return False, f"bad status line {bytes(head[: min(end + 1, 40)])!r}"
    return status in spec.expect_status, _status_detail(status)


def _status_line(line: bytes | bytearray) -> int:
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


def http_request(spec: CheckSpec, address: str, keepalive: bool) -> bytes | None:
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
