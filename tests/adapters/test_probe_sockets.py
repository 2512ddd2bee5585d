"""The plain-TCP probe connections in one epoll set (probe_sockets.SocketSet).

Real sockets on loopback. What a transport did for a probe connection the set must
do as well: read every answer, send a request the socket takes only in part, report
the peer's close and reset, and leave no descriptor behind when the pool closes or
the loop it was made on has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

from announcer.model import CheckSpec
from announcer.probe_http import ConnectionPool
from announcer.probe_http_connection import HttpConnection
from announcer.probe_sockets import SocketSet
from announcer.probes import Prober

LOCALHOST = ipaddress.ip_address("127.0.0.1")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def keepalive_server() -> AsyncIterator[int]:
    """Answers 200 to every request on every connection; yields its port. Its own
    rather than test_probes.serve, which closes its side gracefully: this one aborts
    it as soon as the probe hangs up, so the descriptor counts below see ours."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # Until the probe hangs up (its close, or a reset).
            with contextlib.suppress(asyncio.IncompleteReadError, OSError):
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(OK)
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextmanager
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on loopback: (client, server), both non-blocking."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.setblocking(False)
    server.setblocking(False)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@contextmanager
def carried(
    loop: asyncio.AbstractEventLoop, request: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
) -> Iterator[tuple[SocketSet, HttpConnection, socket.socket]]:
    """A connection carried by a new SocketSet: (the set, the connection, the server side)."""
    sockets = SocketSet(loop)
    try:
        with pair() as (client, server):
            conn = HttpConnection(loop, False, request)
            sockets.adopt(conn, client)
            yield sockets, conn, server
    finally:
        sockets.shutdown()


def reset(sock: socket.socket) -> None:
    """Close `sock` with a RST rather than a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def until(condition: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def test_kept_connections_live_in_the_set_and_are_all_closed_with_the_pool() -> None:
    async def scenario() -> None:
        before = open_fds()
        prober = Prober()
        assert prober.pool is not None
        async with keepalive_server() as port:
            specs = [
                CheckSpec(kind="http", address=LOCALHOST, port=port, path=f"/{i}")
                for i in range(20)
            ]
            for _ in range(3):
                results = await asyncio.gather(*(prober.run(s) for s in specs))
                assert [r.detail for r in results] == ["HTTP 200"] * 20
            assert (prober.pool.opened, prober.pool.reused) == (20, 40)
            sockets = prober.pool.sockets(asyncio.get_running_loop())
            assert len(sockets) == 20
            idle = list(prober.pool._idle.values())
            assert all(c.transport is None and c.sock is not None for c in idle)
            # the server's 20 and the set's epoll descriptor beside our 20
            assert open_fds() >= before + 41
            prober.close()
            assert sockets.closed and len(sockets) == 0
            assert all(c.is_lost for c in idle)
            await until(lambda: open_fds() <= before + 1)  # the listener
        await until(lambda: open_fds() == before)

    asyncio.run(scenario())


def test_a_request_the_socket_takes_in_part_is_sent_whole() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        request = bytes(range(256)) * 65536  # 16 MiB: more than the socket buffers hold
        with carried(loop, request) as (sockets, conn, server):
            conn.send()
            assert sockets._unsent  # the rest waits for the socket to be writable
            received = bytearray()
            async with asyncio.timeout(10):
                while len(received) < len(request):
                    received += await loop.sock_recv(server, 1 << 20)
            assert received == request
            await until(lambda: not sockets._unsent)
            sockets.shutdown()
            assert conn.is_lost and conn.error is None

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["close", "reset"])
def test_the_peer_closing_an_idle_connection_is_seen_and_its_socket_freed(how: str) -> None:
    async def scenario() -> None:
        with carried(asyncio.get_running_loop()) as (sockets, conn, server):
            conn.idle()
            reset(server) if how == "reset" else server.close()
            await until(lambda: conn.is_lost)
            assert conn.closed and not conn.keep
            assert len(sockets) == 0 and conn.sock is not None and conn.sock.fileno() == -1
            if how == "reset":
                assert isinstance(conn.error, ConnectionResetError)
            else:
                assert conn.error is None

    asyncio.run(scenario())


def test_a_request_on_a_connection_reset_under_it_is_lost_not_raised() -> None:
    async def scenario() -> None:
        with carried(asyncio.get_running_loop()) as (sockets, conn, server):
            assert conn.sock is not None
            sockets._epoll.unregister(conn.sock.fileno())  # keep the set from reading the RST
            reset(server)
            await asyncio.sleep(0.05)  # the RST is in
            done = conn.send()
            assert done.done() and conn.is_lost
            assert isinstance(conn.error, (ConnectionResetError, BrokenPipeError))

    asyncio.run(scenario())


def test_a_pool_used_on_a_new_loop_gets_a_new_set_and_closes_the_old() -> None:
    pool = ConnectionPool(limit=10, max_age=60, idle_timeout=60)
    first: list[SocketSet] = []
    conns: list[HttpConnection] = []

    async def on_a_loop(client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sockets = pool.sockets(loop)
        assert pool.sockets(loop) is sockets  # one per loop
        first.append(sockets)
        conn = HttpConnection(loop, False, b"")
        sockets.adopt(conn, client)
        conns.append(conn)

    before = open_fds()
    with pair() as (client1, _server1), pair() as (client2, _server2):
        asyncio.run(on_a_loop(client1))
        asyncio.run(on_a_loop(client2))  # the first loop has ended: its set is closed
        assert first[0] is not first[1] and first[0].closed and not first[1].closed
        assert conns[0].is_lost and not conns[1].is_lost
        assert client1.fileno() == -1 and client2.fileno() >= 0
        pool.close()
        assert first[1].closed and conns[1].is_lost and client2.fileno() == -1
    assert open_fds() == before


def test_a_lost_connection_is_never_sent_on() -> None:
    """A request on a connection already lost would wait for its deadline: refused at
    once instead, and the pool connects anew."""

    async def scenario() -> None:
        with carried(asyncio.get_running_loop()) as (_sockets, conn, server):
            server.close()
            await until(lambda: conn.is_lost)
            with pytest.raises(ConnectionError):
                conn.send()
            pool = ConnectionPool(limit=10, max_age=60, idle_timeout=60)
            assert pool.send(conn, 1e9) is None and not pool._inflight

    asyncio.run(scenario())
