"""The plain-TCP probe connections of one event loop: one epoll set, one reader on the loop.

At 10 000 HTTP checks nearly every probe connection is an idle keep-alive
connection waiting for its check's next run. As an event-loop transport each one
cost about 1.5 KiB (uvloop's transport, its libuv handle, context and socket
object: 14.7 MiB for 10 000, measured with a standalone script), a fifth of
announcer's memory per VIP (issue 16). Here a connection is its socket in one
`select.epoll` set, and the loop watches only that set's descriptor: 10 000
connected sockets cost 1.6 MiB that way. When the set is readable `_ready` reads
each ready socket once into the shared read buffer and hands the bytes to its
`HttpConnection`, as a transport's read callback would (a socket with more to
read stays ready: the set is level-triggered).

TLS connections stay on the loop's transports (the handshake and record layer are
the loop's), and so do connections made without a pool (one-off probes).
"""

from __future__ import annotations

import asyncio
import select
import socket
from typing import TYPE_CHECKING

from .probe_http_connection import read_buffer

if TYPE_CHECKING:
    from .probe_http_connection import HttpConnection

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP


class SocketSet:
    """Connected probe sockets of one loop, read through one epoll set."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._conns: dict[int, HttpConnection] = {}
        # The unsent rest of a request the socket did not take at once (a full send
        # buffer: practically never for a request head on an idle connection).
        self._unsent: dict[int, memoryview] = {}
        self.closed = False
        try:
            loop.add_reader(self._epoll.fileno(), self._ready)
        except BaseException:
            self._epoll.close()
            raise

    def __len__(self) -> int:
        return len(self._conns)

    def adopt(self, conn: HttpConnection, sock: socket.socket) -> None:
        """Carry `conn` on the connected non-blocking `sock` (owned from the call on)."""
        if self.closed:
            sock.close()
            raise RuntimeError("the probe socket set is closed")
        fd = sock.fileno()
        try:
            self._epoll.register(fd, _IN)
        except BaseException:
            sock.close()
            raise
        self._conns[fd] = conn
        conn.attach(sock, self)

    def write(self, conn: HttpConnection, data: bytes) -> None:
        """Send `data` on `conn`'s socket; a failure loses the connection (as a
        transport reports it), it does not raise."""
        assert conn.sock is not None
        self._send(conn.sock.fileno(), conn, data, waiting=False)

    def _send(self, fd: int, conn: HttpConnection, data: bytes | memoryview, waiting: bool) -> None:
        """Send what the socket takes of `data` and keep the rest for EPOLLOUT;
        `waiting`: `data` is the rest kept before, and the socket is watched for it."""
        assert conn.sock is not None
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.close(conn, exc)
            return
        if sent < len(data):
            self._unsent[fd] = memoryview(data)[sent:]
            if not waiting:
                self._epoll.modify(fd, _IN | _OUT)
        elif waiting:
            del self._unsent[fd]
            self._epoll.modify(fd, _IN)

    def close(self, conn: HttpConnection, exc: Exception | None = None) -> None:
        """Close `conn`'s socket (no graceful TLS close to wait for) and tell it."""
        sock = conn.sock
        if sock is None or conn.is_lost:
            return
        fd = sock.fileno()
        if self._conns.get(fd) is conn:
            del self._conns[fd]
            self._unsent.pop(fd, None)
        # Closing the descriptor takes it out of the epoll set.
        sock.close()
        conn.connection_lost(exc)

    def _ready(self) -> None:
        conns = self._conns
        buffer = read_buffer()
        for fd, events in self._epoll.poll(0):
            conn = conns.get(fd)
            if conn is None:  # closed earlier in this batch
                continue
            if events & _OUT and (rest := self._unsent.get(fd)) is not None:
                self._send(fd, conn, rest, waiting=True)
            if not events & _READ or conn.is_lost:
                continue
            sock = conn.sock
            assert sock is not None
            try:
                n = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                continue  # ready, and nothing to read after all
            except OSError as exc:
                self.close(conn, exc)
                continue
            if n:
                conn.received(buffer[:n])
            else:
                conn.eof_received()
                self.close(conn)

    def shutdown(self) -> None:
        """Close every socket and the set (the pool's close, or its loop changed)."""
        if self.closed:
            return
        self.closed = True
        for conn in list(self._conns.values()):
            self.close(conn)
        if not self.loop.is_closed():
            self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
