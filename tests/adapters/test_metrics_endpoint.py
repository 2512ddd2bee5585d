"""The metrics server (metrics_http.serve) on real sockets, TCP and unix: the page, its limits.

The series and the page's text, without sockets, are in tests/unit/test_metrics.py.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from announcer import fds
from announcer import metrics_http as mm
from announcer.metrics import Metrics
from tests.support.fakes import render


@asynccontextmanager
async def server(
    metrics: Metrics, address: str = "127.0.0.1:0", **limits: float
) -> AsyncIterator[tuple[str, int] | str]:
    srv = await mm.serve(metrics, address, mm.Limits(**limits))  # type: ignore[arg-type]
    try:
        name = srv.sockets[0].getsockname()
        yield name if isinstance(name, str) else (name[0], name[1])
    finally:
        srv.close()
        await srv.wait_closed()


async def exchange(where: tuple[str, int] | str, request: bytes, timeout: float = 5) -> bytes:
    if isinstance(where, str):
        reader, writer = await asyncio.open_unix_connection(where)
    else:
        reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(request)
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def test_scrape_answers_the_page_and_other_requests_are_refused() -> None:
    async def go() -> None:
        m = Metrics()
        m.check_done("http", True, 0.001)
        async with server(m) as where:
            answer = await exchange(where, GET)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b'announcer_checks_total{kind="http",result="ok"} 1.0' in answer
            head = await exchange(where, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
            assert (await exchange(where, b"GET /x HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
            assert (await exchange(where, b"POST / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
            big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (mm.MAX_REQUEST + 10)
            assert (await exchange(where, big)).startswith(b"HTTP/1.1 431")

    asyncio.run(go())


def test_scrapes_within_the_interval_share_one_render() -> None:
    async def go() -> None:
        m = Metrics(min_interval=60)
        async with server(m, max_connections=64) as where:
            answers = await asyncio.gather(*(exchange(where, GET) for _ in range(40)))
            m.check_done("tcp", True, 0.001)  # after the render: not on the cached page
            later = await exchange(where, GET)
        bodies = {a.split(b"\r\n\r\n", 1)[1] for a in [*answers, later]}
        assert len(bodies) == 1
        assert b'kind="tcp"' not in later
        assert "announcer_metrics_renders_total 1.0" in render(m).decode()

    asyncio.run(go())


def test_a_page_older_than_the_interval_is_rendered_again() -> None:
    async def go() -> None:
        m = Metrics(min_interval=0.05)
        async with server(m) as where:
            await exchange(where, GET)
            m.check_done("tcp", True, 0.001)
            await asyncio.sleep(0.1)
            assert b'kind="tcp"' in await exchange(where, GET)

    asyncio.run(go())


def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    async def go() -> None:
        m = Metrics()
        async with server(m, max_connections=3, timeout=30) as where:
            assert not isinstance(where, str)
            idle = [await asyncio.open_connection(*where) for _ in range(3)]
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await exchange(where, GET) == b""  # closed without an answer
            assert loop.time() - started < 1
            for _, w in idle:
                w.close()
            await asyncio.sleep(0.05)
            assert (await exchange(where, GET)).startswith(b"HTTP/1.1 200")
        assert 'announcer_metrics_connections_total{outcome="too_many"} 1.0' in render(m).decode()

    asyncio.run(go())


def test_a_connection_is_cut_off_at_its_deadline() -> None:
    async def go() -> None:
        m = Metrics()
        async with server(m, timeout=0.2) as where:
            assert not isinstance(where, str)
            reader, writer = await asyncio.open_connection(*where)
            writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the end of the head
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            assert 0.15 < loop.time() - started < 2
            writer.close()
        assert 'outcome="timeout"} 1.0' in render(m).decode()

    asyncio.run(go())


def test_connections_that_would_use_the_fd_reserve_are_refused() -> None:
    async def go() -> None:
        m = Metrics()
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        async with server(m) as where:
            try:
                fds.configure(soft)  # every descriptor is in the reserve
                assert await exchange(where, GET) == b""
            finally:
                fds.configure(fds.DEFAULT_RESERVE)
            assert (await exchange(where, GET)).startswith(b"HTTP/1.1 200")
        assert 'outcome="fd_reserve"} 1.0' in render(m).decode()

    asyncio.run(go())


def test_fd_reserve_uses_the_lowest_free_descriptor() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    with socket.socket() as s:
        assert fds.admit(s.fileno())
        fds.configure(soft - s.fileno())
        try:
            assert not fds.admit(s.fileno())
            assert fds.admit(s.fileno() - 1)
        finally:
            fds.configure(fds.DEFAULT_RESERVE)


def test_unix_socket_mode_0660_and_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    async def go() -> None:
        path = tmp_path / "run" / "metrics.sock"
        m = Metrics()
        async with server(m, f"unix://{path}") as where:
            assert where == str(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o660
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert (await exchange(where, GET)).startswith(b"HTTP/1.1 200")
            with pytest.raises(OSError, match="another announcer"):
                await mm.serve(m, f"unix://{path}")
        # Left behind (as by a killed announcer): taken over.
        assert path.exists()
        async with server(m, f"unix://{path}") as where:
            assert (await exchange(where, GET)).startswith(b"HTTP/1.1 200")

    asyncio.run(go())


def test_unix_socket_refuses_a_path_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sock"
    path.write_text("")

    async def go() -> None:
        with pytest.raises(OSError, match="not a socket"):
            await mm.serve(Metrics(), f"unix://{path}")

    asyncio.run(go())
    assert os.path.isfile(path)
