"""DataPlaneClient against hostile servers and impostors, over real loopback sockets.

* Every request has a total deadline: a server dripping its answer (in the headers or
  the body), accepting and never answering, or stopping halfway through its headers
  fails with kind `timeout` within the deadline plus a small margin.
* Answers are capped while they stream: a huge Content-Length, a huge or endless
  chunked body fail with kind `too_big`, and the memory the process allocated meanwhile
  stays near the cap (tracemalloc's peak), whatever the server sends.
* One discovery has a deadline too, and the number of frontends and binds is capped
  (checked before v2's per-frontend requests).
* The password only goes to a server that proved itself: an impostor listening under
  another uid (setpriv), on a loopback port or a unix socket, receives not one byte and
  the client raises `unverified_server`; the same listener run as root is accepted.

The hostile servers are small asyncio servers on the test's own event loop; the
emulator's fault modes (drip, halfopen, halfopen_headers, huge, chunked) are covered
too, since the lab uses them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from announcer.dataplane import DataPlaneClient
from announcer.errors import DataPlaneError
from announcer.target import resolve_server_users, socket_owner
from tests.support.dpapi_emulator import start_emulator

FIXTURES = Path(__file__).parents[1] / "fixtures"
PASSWORD = "hostile-test-Pa55"
EMU_PASSWORD = "adminpwd"  # tests/fixtures/haproxy-vips.cfg
CAP = 1 << 20  # max_response_bytes in these tests
TIMEOUT = 1.0
MARGIN = 0.5  # scheduling slack on a shared machine
NOBODY = 65534
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ---------------------------------------------------------------- the servers


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def _until_hangup(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()  # bounded buffering: the server never holds more than a window


def dripping(answer: bytes, *, at_once: int = 0, every: float = 0.3) -> Handler:
    """Send `answer[:at_once]`, then the rest one byte every `every` seconds."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await _send(writer, answer[:at_once])
        for i in range(at_once, len(answer)):
            await asyncio.sleep(every)
            await _send(writer, answer[i : i + 1])
        await _until_hangup(reader)

    return handle


def half_open(partial: bytes = b"") -> Handler:
    """Read the request, send `partial` (maybe nothing), then say nothing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await _send(writer, partial)
        await _until_hangup(reader)

    return handle


def silent() -> Handler:
    """Accept and never even read."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _until_hangup(reader)

    return handle


def streaming(*, length: int | None, chunked: bool, every: float = 0.0) -> Handler:
    """A 200 whose body is `length` bytes of JSON whitespace (None: endless, chunked)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}".encode()
        await _send(writer, b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
        block = b" " * 65536
        sent = 0
        while length is None or sent < length:
            await _send(writer, b"10000\r\n" + block + b"\r\n" if chunked else block)
            sent += len(block)
            if every:
                await asyncio.sleep(every)

    return handle


def keep_alive_once() -> Handler:
    """Answer one request keeping the connection open, then hang up while idle."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await _send(writer, OK_HEAD + b"7")
        await asyncio.sleep(0.05)
        writer.close()

    return handle


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server on this event loop; yields its URL and the connection count."""
    connections: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: expected for every hostile case
        finally:
            tasks.discard(task)
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def client(url: str, **kw: Any) -> DataPlaneClient:
    kw.setdefault("username", "admin")
    kw.setdefault("password", PASSWORD)
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("api_version", 3)
    kw.setdefault("max_response_bytes", CAP)
    return DataPlaneClient(url, **kw)


async def version_from(handler: Handler) -> tuple[int | DataPlaneError, float, int]:
    """(the version or the error, seconds taken, peak bytes allocated meanwhile)."""
    async with serving(handler) as (url, _), client(url) as c:
        tracemalloc.start()
        start = time.monotonic()
        try:
            result: int | DataPlaneError = await c.configuration_version()
        except DataPlaneError as e:
            result = e
        took = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, took, peak


# ------------------------------------------------------------- total deadline

ANSWER = OK_HEAD + b"7"


@pytest.mark.parametrize(
    ("name", "handler"),
    [
        ("drip in headers", dripping(ANSWER, at_once=3)),
        (
            "drip in body",
            dripping(
                OK_HEAD.replace(b": 1\r", b": 40\r") + b" " * 39 + b"7", at_once=len(OK_HEAD) + 2
            ),
        ),
        ("half-open, never reads", silent()),
        ("half-open", half_open()),
        ("half-open after partial headers", half_open(b"HTTP/1.1 200 OK\r\nContent-Ty")),
        ("endless slow chunked", streaming(length=None, chunked=True, every=0.2)),
    ],
)
def test_a_server_that_holds_on_times_out_within_the_deadline(name: str, handler: Handler) -> None:
    result, took, _ = asyncio.run(version_from(handler))
    assert isinstance(result, DataPlaneError), (name, result)
    assert result.kind == "timeout", (name, result)
    assert f"timed out after {TIMEOUT:g}s" in str(result)
    assert TIMEOUT - 0.05 <= took <= TIMEOUT + MARGIN, (name, took)


@pytest.mark.parametrize(
    ("name", "handler"),
    [
        ("huge Content-Length", streaming(length=200 * 1000 * 1000, chunked=False)),
        ("huge chunked", streaming(length=50 * 1000 * 1000, chunked=True)),
        ("endless chunked", streaming(length=None, chunked=True)),
    ],
)
def test_a_huge_answer_is_cut_at_the_cap_with_bounded_memory(name: str, handler: Handler) -> None:
    result, took, peak = asyncio.run(version_from(handler))
    assert isinstance(result, DataPlaneError), (name, result)
    assert result.kind == "too_big", (name, result)
    assert "max_response_bytes" in str(result)
    assert took < TIMEOUT, (name, took)
    # Everything the process allocated meanwhile (client and server): the cap plus
    # buffers, not the 200 MB the server offers.
    assert peak < CAP + (1 << 20), (name, peak)


def test_a_large_content_length_is_refused_before_reading_the_body() -> None:
    result, _, peak = asyncio.run(version_from(streaming(length=CAP + 1, chunked=False)))
    assert isinstance(result, DataPlaneError) and result.kind == "too_big"
    assert f"Content-Length {CAP + 1}" in str(result)
    assert peak < CAP // 2


def test_slow_but_valid_within_the_deadline_succeeds() -> None:
    # 0.6 s in all, one byte every 0.1 s: slower than any per-read timeout would like,
    # but inside the total deadline.
    result, took, _ = asyncio.run(
        version_from(dripping(ANSWER, at_once=len(ANSWER) - 6, every=0.1))
    )
    assert result == 7
    assert 0.5 <= took < TIMEOUT


def test_an_idle_keep_alive_connection_closed_by_the_server_is_replaced() -> None:
    async def main() -> tuple[list[int], list[int]]:
        async with serving(keep_alive_once()) as (url, conns), client(url) as c:
            versions = [await c.configuration_version()]
            await asyncio.sleep(0.2)  # the server hangs up meanwhile
            versions.append(await c.configuration_version())
            return versions, conns

    versions, conns = asyncio.run(main())
    assert versions == [7, 7]
    assert len(conns) == 2


# ------------------------------------------------------- the emulator's modes


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "haproxy.cfg"
    shutil.copy(FIXTURES / "haproxy-vips.cfg", path)
    return path


@pytest.mark.parametrize(
    ("mode", "extra", "kind"),
    [
        ("drip", {"delay": 0.2}, "timeout"),
        ("halfopen", {}, "timeout"),
        ("halfopen_headers", {}, "timeout"),
        ("huge", {}, "too_big"),
        ("chunked", {}, "too_big"),
        ("chunked", {"delay": 0.2}, "timeout"),
    ],
)
def test_emulator_fault_modes(cfg: Path, mode: str, extra: dict[str, Any], kind: str) -> None:
    with start_emulator(cfg, 3) as emu:
        emu.set_fault(mode, **extra)

        async def main() -> tuple[DataPlaneError, float]:
            async with client(emu.url, password=EMU_PASSWORD) as c:
                start = time.monotonic()
                with pytest.raises(DataPlaneError) as info:
                    await c.discover()
                took = time.monotonic() - start
                emu.set_fault("none")
                assert len((await c.discover()).frontends) == 5  # and it recovers
                return info.value, took

        error, took = asyncio.run(main())
    assert error.kind == kind, error
    assert took <= TIMEOUT + MARGIN


# ---------------------------------------------------- discovery deadline, caps


def test_one_discovery_has_a_deadline_of_its_own(cfg: Path) -> None:
    with start_emulator(cfg, 2) as emu:
        emu.set_fault("slow", delay=0.3, match="/binds")  # each request within its timeout

        async def main() -> None:
            async with client(
                emu.url, password=EMU_PASSWORD, api_version=2, discovery_timeout=1.0
            ) as c:
                await c.discover()

        start = time.monotonic()
        with pytest.raises(DataPlaneError, match="discovery took longer than 1s") as info:
            asyncio.run(main())
        took = time.monotonic() - start
    assert info.value.kind == "timeout"
    assert 1.0 <= took <= 1.0 + MARGIN


@pytest.mark.parametrize("api", [2, 3])
def test_too_many_frontends_fail_before_reading_their_binds(cfg: Path, api: int) -> None:
    with start_emulator(cfg, api) as emu:

        async def main() -> None:
            async with client(
                emu.url, password=EMU_PASSWORD, api_version=api, max_frontends=4
            ) as c:
                await c.discover()

        with pytest.raises(
            DataPlaneError, match=r"5 frontends, more than .*max_frontends \(4\)"
        ) as info:
            asyncio.run(main())
        reqs = emu.requests
    assert info.value.kind == "too_big"
    assert not any("binds" in r for r in reqs), reqs


@pytest.mark.parametrize("api", [2, 3])
def test_too_many_binds(cfg: Path, api: int) -> None:
    with start_emulator(cfg, api) as emu:

        async def main() -> None:
            async with client(emu.url, password=EMU_PASSWORD, api_version=api, max_binds=10) as c:
                await c.discover()

        with pytest.raises(DataPlaneError, match=r"max_binds \(10\)") as info:
            asyncio.run(main())
    assert info.value.kind == "too_big"


# ------------------------------------------------------------------ impostors

# A listener that records every byte it receives; it answers a request (a version
# number) only once it has seen one. Standard library only: it runs under Debian's
# python3 as another user.
IMPOSTOR = r"""
import base64, socket, sys, time
where = sys.argv[1]
if where.startswith("unix:"):
    s = socket.socket(socket.AF_UNIX)
    s.bind(where[5:])
elif where == "dualstack":  # [::]:port also takes 127.0.0.1:port (v4-mapped in tcp6)
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
else:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
s.listen(4)
print(s.getsockname()[1] if not where.startswith("unix:") else 0, flush=True)
s.settimeout(10)
conn, _ = s.accept()
conn.settimeout(0.2)
got, answered, deadline = b"", False, time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        data = conn.recv(65536)
    except socket.timeout:
        continue
    except ConnectionError:
        break
    if not data:
        break
    got += data
    if b"\r\n\r\n" in got and not answered:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n7")
        answered = True
print(base64.b64encode(got).decode(), flush=True)
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can create a socket in (tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="announcer-impostor-", dir="/tmp"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def impostor(place: str, uid: int | None) -> tuple[subprocess.Popen[str], str]:
    """Start the recording listener (as `uid`, or as we are); returns it and its URL."""
    argv = ["/usr/bin/python3", "-I", "-c", IMPOSTOR, place]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd="/")
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    url = f"unix://{place[5:]}" if place.startswith("unix:") else f"http://127.0.0.1:{port}"
    return proc, url


def received(proc: subprocess.Popen[str]) -> bytes:
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return base64.b64decode(out.strip())


def ask(url: str, **kw: Any) -> int | DataPlaneError:
    async def main() -> int | DataPlaneError:
        async with client(url, timeout=3.0, **kw) as c:
            try:
                return await c.configuration_version()
            except DataPlaneError as e:
                return e

    return asyncio.run(main())


def where(transport: str, shared_dir: Path) -> str:
    return f"unix:{shared_dir / 'dpapi.sock'}" if transport == "unix" else transport


@pytest.mark.parametrize("transport", ["tcp", "dualstack", "unix"])
def test_an_impostor_under_another_uid_receives_nothing(transport: str, shared_dir: Path) -> None:
    proc, url = impostor(where(transport, shared_dir), NOBODY)
    try:
        result = ask(url)
    finally:
        got = received(proc)
    assert got == b""  # not the request line, not the Authorization header
    assert isinstance(result, DataPlaneError), result
    assert result.kind == "unverified_server"
    assert f"uid {NOBODY}" in str(result) and "server_users" in str(result)
    assert PASSWORD not in str(result)


@pytest.mark.parametrize("transport", ["tcp", "dualstack", "unix"])
def test_the_same_listener_as_root_is_accepted(transport: str, shared_dir: Path) -> None:
    proc, url = impostor(where(transport, shared_dir), None)
    try:
        result = ask(url)
    finally:
        got = received(proc)
    assert result == 7
    token = base64.b64encode(f"admin:{PASSWORD}".encode())
    assert b"Authorization: Basic " + token in got


def test_a_numeric_uid_in_server_users(shared_dir: Path) -> None:
    proc, url = impostor("tcp", NOBODY)
    try:
        result = ask(url, server_users=(NOBODY,))
    finally:
        got = received(proc)
    assert result == 7
    assert got.startswith(b"GET /v3/services/haproxy/configuration/version HTTP/1.1\r\n")


def test_unknown_server_users_are_ignored_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="announcer.dataplane"):
        uids = resolve_server_users(["root", "no-such-user-here", 4242])
    assert uids == {0, 4242}
    assert "no user 'no-such-user-here' on this host; ignored" in caplog.text


# ------------------------------------------------------- /proc/net/tcp lookup

PROC_TCP = [
    # 127.0.0.1:5555 listening, owned by 108
    "   0: 0100007F:15B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108 0 1 1",
    # the server end of a connection from 127.0.0.1:40000, TIME_WAIT (uid 0, skipped)
    "   1: 0100007F:15B3 0100007F:9C40 06 00000000:00000000 00:00000000 00000000     0 0 0 3",
    # our end (client), uid 0
    "   2: 0100007F:9C41 0100007F:15B3 01 00000000:00000000 00:00000000 00000000     0 0 2 1",
    # the server end of our connection from 127.0.0.1:40001, owned by 65534
    "   3: 0100007F:15B3 0100007F:9C41 01 00000000:00000000 00:00000000 00000000 65534 0 3 1",
]
PROC_TCP6 = [
    # [::ffff:127.0.0.1]:5555 accepted from [::ffff:127.0.0.1]:40002 (a dual-stack
    # listener), and [::1]:5555 from [::1]:40003
    "   0: 0000000000000000FFFF00000100007F:15B3 0000000000000000FFFF00000100007F:9C42 01 "
    "00000000:00000000 00:00000000 00000000   108 0 4 1",
    "   1: 00000000000000000000000001000000:15B3 00000000000000000000000001000000:9C43 01 "
    "00000000:00000000 00:00000000 00000000   109 0 5 1",
]


@pytest.mark.skipif(sys.byteorder != "little", reason="fixture lines are little-endian")
def test_socket_owner_reads_proc_net_tcp() -> None:
    lines = PROC_TCP + PROC_TCP6
    assert socket_owner(lines, ("127.0.0.1", 5555), ("127.0.0.1", 40001)) == 65534
    assert socket_owner(lines, ("127.0.0.1", 5555), ("127.0.0.1", 40000)) is None  # TIME_WAIT
    assert socket_owner(lines, ("127.0.0.1", 5555), ("127.0.0.1", 40002)) == 108
    assert socket_owner(lines, ("::ffff:127.0.0.1", 5555), ("127.0.0.1", 40002)) == 108
    assert socket_owner(lines, ("::1", 5555), ("::1", 40003)) == 109
    assert socket_owner(lines, ("127.0.0.1", 5556), ("127.0.0.1", 40001)) is None
    assert socket_owner(["garbage", ""], ("127.0.0.1", 5555), ("127.0.0.1", 1)) is None
