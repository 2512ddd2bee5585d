"""The metrics endpoint: a small HTTP server on announcer's event loop (metrics.py
renders the page).

Anyone on the host can connect to a loopback port, so nothing a client does may cost
the health checks their time or their file descriptors (issue 11: held connections
used up descriptors and checks failed with EMFILE):

* The server holds at most `max_connections` connections (more are closed at
  once), each for at most `timeout` seconds in all, with a request of at most
  MAX_REQUEST bytes, and refuses connections that would dig into the descriptors
  kept for the probes (fds.py).
* `unix:///path` serves it on a socket only root and announcer's group reach.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import fds
from .metrics import Metrics

log = logging.getLogger("announcer.metrics")

MAX_REQUEST = 8192
UNIX_PREFIX = "unix://"


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server (metrics.max_connections, metrics.timeout)."""

    max_connections: int = 16
    timeout: float = 5.0  # seconds for a whole connection: request, render, response


async def serve(metrics: Metrics, address: str, limits: Limits | None = None) -> asyncio.Server:
    """GET /metrics on `address`: host:port (TCP) or unix:///path (a socket, mode 0660)."""
    server = _Server(metrics, limits or Limits())
    loop = asyncio.get_running_loop()
    if address.startswith(UNIX_PREFIX):
        path = Path(address[len(UNIX_PREFIX) :])
        _take_over(path)
        srv = await loop.create_unix_server(server.protocol, str(path))
        # Root and the service's group only: the page lists every VIP and peer.
        os.chmod(path, 0o660)
        return srv
    host, _, port = address.rpartition(":")
    return await loop.create_server(server.protocol, host.strip("[]"), int(port))


def _take_over(path: Path) -> None:
    """Remove a stale socket left by a killed announcer; refuse to steal a live one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: a leftover
            return
    raise OSError(f"{path}: another announcer is running and listening on it")


class _Server:
    """The connections of one listening socket, and their limits."""

    def __init__(self, metrics: Metrics, limits: Limits) -> None:
        self.metrics = metrics
        self.limits = limits
        self.open: set[_Connection] = set()
        self._warned = float("-inf")

    def protocol(self) -> _Connection:
        return _Connection(self)

    def refuse(self, why: str) -> None:
        self.metrics.scrapes.labels(why).inc()
        now = time.monotonic()
        if now - self._warned >= 60:  # a flood of them must not flood the log
            self._warned = now
            log.warning("metrics: refusing connections (%s)", why.replace("_", " "))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 exchange: a request head in, one response out, then close.

    A Protocol rather than asyncio streams: a connection refused costs an accept and
    an abort, and no task is made unless a scrape has to wait for a render.
    """

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = self.transport = cast(asyncio.Transport, transport)
        srv = self.server
        sock = t.get_extra_info("socket")
        if len(srv.open) >= srv.limits.max_connections:
            srv.refuse("too_many")
        elif sock is not None and not fds.admit(sock.fileno()):
            srv.refuse("fd_reserve")
        else:
            srv.open.add(self)
            loop = asyncio.get_running_loop()
            # One deadline for everything: a client that sends slowly, or reads slowly,
            # or not at all, is cut off (slowloris).
            self.timer = loop.call_later(srv.limits.timeout, self._expire)
            return
        self.answered = True
        t.abort()  # no FIN handshake, no TIME_WAIT on our side

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # a body, or more pipelined requests: ignored (we close)
        start = max(0, len(self.head) - 3)
        self.head += data
        end = self.head.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.head) > MAX_REQUEST:
                self._respond("431 Request Header Fields Too Large", b"request too large\n")
            return
        if end > MAX_REQUEST:
            self._respond("431 Request Header Fields Too Large", b"request too large\n")
            return
        line = bytes(self.head[: self.head.find(b"\r\n")]).split()
        if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
            self._respond("405 Method Not Allowed", b"GET only\n")
        elif line[1].split(b"?")[0] not in (b"/metrics", b"/"):
            self._respond("404 Not Found", b"try /metrics\n")
        else:
            head_only = line[0] == b"HEAD"
            metrics = self.server.metrics
            page = metrics.cached(asyncio.get_running_loop().time())
            if page is not None:
                self._respond("200 OK", page, CONTENT_TYPE_LATEST, head_only)
            else:
                self.answered = True
                self.task = asyncio.get_running_loop().create_task(self._scrape(head_only))

    async def _scrape(self, head_only: bool) -> None:
        try:
            page = await self.server.metrics.page()
        except Exception:
            log.error("metrics: rendering failed", exc_info=True)
            self._respond("500 Internal Server Error", b"rendering failed\n", force=True)
            return
        self._respond("200 OK", page, CONTENT_TYPE_LATEST, head_only, force=True)

    def _respond(
        self,
        status: str,
        body: bytes,
        ctype: str = "text/plain",
        head_only: bool = False,
        force: bool = False,
    ) -> None:
        t = self.transport
        if (self.answered and not force) or t is None or t.is_closing():
            return
        self.answered = True
        self.server.metrics.scrapes.labels("served" if status == "200 OK" else "bad").inc()
        t.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        if not head_only:
            t.write(body)
        t.close()  # after the buffer is sent; the deadline still aborts a slow reader

    def _expire(self) -> None:
        self.server.metrics.scrapes.labels("timeout").inc()
        assert self.transport is not None
        self.transport.abort()

    def eof_received(self) -> bool:
        # The client is done sending. Keep our side open while its page is rendered;
        # otherwise close (an answer being sent is flushed first).
        return self.task is not None and not self.task.done()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
