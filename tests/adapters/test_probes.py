"""Probe tests against real sockets on loopback and real processes.

Each test drives its own event loop with asyncio.run; warnings are errors, so a
transport or process the probe forgets to close fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from announcer import probe_http, probes
from announcer.model import CheckResult, CheckSpec, IPAddress
from announcer.probe_http_connection import USER_AGENT
from announcer.probes import Prober, probe

V4 = ipaddress.ip_address("127.0.0.1")
V6 = ipaddress.ip_address("::1")


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    """What a test server saw."""

    port: int = 0
    heads: list[bytes] = field(default_factory=list)  # request heads, in arrival order
    sni: list[str | None] = field(default_factory=list)
    active: int = 0
    max_active: int = 0


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Awaitable[None]]


@asynccontextmanager
async def serve(
    handler: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """Run `handler` for every connection on a random port of `host`."""
    state = Server()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.active += 1
        state.max_active = max(state.max_active, state.active)
        try:
            await handler(reader, writer, state)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the probe hung up first: that is its right
        finally:
            state.active -= 1
            writer.close()
            try:
                async with asyncio.timeout(1):
                    await writer.wait_closed()
            except Exception:
                writer.transport.abort()
                await asyncio.sleep(0)

    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: state.sni.append(name)
    server = await asyncio.start_server(on_connect, host, 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


async def read_head(reader: asyncio.StreamReader, state: Server) -> None:
    state.heads.append(await reader.readuntil(b"\r\n\r\n"))


def answer(raw: bytes) -> Handler:
    """A server that reads the request head and sends `raw` back."""

    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await read_head(reader, s)
        w.write(raw)
        await w.drain()

    return handler


def status(code: int) -> Handler:
    return answer(
        f"HTTP/1.1 {code} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
    )


async def silent(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
    """Accept, read the request, never answer (until the probe hangs up)."""
    await read_head(reader, s)
    await reader.read()


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it) but not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


def http(port: int, address: IPAddress = V4, **kw: Any) -> CheckSpec:
    return CheckSpec(kind="http", address=address, port=port, **kw)


def command(cmd: str, address: IPAddress = V4, **kw: Any) -> CheckSpec:
    return CheckSpec(kind="command", address=address, command=cmd, **kw)


async def probe_server(handler: Handler, **kw: Any) -> tuple[CheckResult, Server]:
    async with serve(handler) as server:
        return await probe(http(server.port, **kw)), server


# --------------------------------------------------------------------- http


def test_http_200_is_healthy_and_request_is_well_formed() -> None:
    result, server = asyncio.run(probe_server(status(200), path="/_healthz?full=1"))
    assert result == CheckResult(True, "HTTP 200", result.duration)
    head = server.heads[0].decode()
    assert head.startswith("GET /_healthz?full=1 HTTP/1.1\r\n")
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
    assert headers == {"Host": "127.0.0.1", "Connection": "close", "User-Agent": USER_AGENT}
    assert USER_AGENT.startswith("announcer/")


def test_http_503_is_unhealthy() -> None:
    result, _ = asyncio.run(probe_server(status(503)))
    assert (result.ok, result.detail) == (False, "HTTP 503")


def test_http_expect_status_decides() -> None:
    ok, _ = asyncio.run(probe_server(status(301), expect_status=(204, 301)))
    not_ok, _ = asyncio.run(probe_server(status(200), expect_status=(204, 301)))
    assert (ok.ok, ok.detail) == (True, "HTTP 301")
    assert (not_ok.ok, not_ok.detail) == (False, "HTTP 200")


def test_http_host_header_is_sent_as_configured() -> None:
    _, server = asyncio.run(probe_server(status(200), host="www.example.com"))
    assert b"\r\nHost: www.example.com\r\n" in server.heads[0]


def test_http_status_line_without_reason_is_accepted() -> None:
    result, _ = asyncio.run(probe_server(answer(b"HTTP/1.0 200\r\n\r\n")))
    assert (result.ok, result.detail) == (True, "HTTP 200")


def test_http_ipv6() -> None:
    async def scenario() -> tuple[CheckResult, Server]:
        async with serve(status(200), host="::1") as server:
            return await probe(http(server.port, address=V6)), server

    result, server = asyncio.run(scenario())
    assert result.ok, result
    assert b"\r\nHost: [::1]\r\n" in server.heads[0]


def test_http_server_that_never_answers_times_out_on_time() -> None:
    result, server = asyncio.run(probe_server(silent, timeout=0.3))
    assert (result.ok, result.detail) == (False, "timeout after 0.3s (waiting for status line)")
    assert 0.3 <= result.duration < 0.6
    assert server.heads  # it did connect and send the request


def test_http_status_then_stall_still_reports_the_status() -> None:
    async def stall(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await read_head(reader, s)
        w.write(b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\n")
        await reader.read()

    result, _ = asyncio.run(probe_server(stall, timeout=0.3))
    assert (result.ok, result.detail) == (True, "HTTP 200")
    assert result.duration < 0.6


def test_http_connection_refused() -> None:
    with closed_port() as port:
        result = asyncio.run(probe(http(port)))
    assert (result.ok, result.detail) == (False, "connect refused")


def test_http_connection_refused_ipv6() -> None:
    with closed_port("::1") as port:
        result = asyncio.run(probe(http(port, address=V6)))
    assert (result.ok, result.detail) == (False, "connect refused")


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, so connect hangs."""
    with socket.socket() as listener, contextlib.ExitStack() as stack:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        yield port


def test_http_connect_timeout() -> None:
    with full_backlog() as port:
        result = asyncio.run(probe(http(port, timeout=0.3)))
    assert (result.ok, result.detail) == (False, "timeout after 0.3s (connecting)")
    assert 0.3 <= result.duration < 0.6


def test_http_reset_before_status_line() -> None:
    async def reset(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await read_head(reader, s)
        w.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        w.transport.abort()

    result, _ = asyncio.run(probe_server(reset))
    assert (result.ok, result.detail) == (False, "connection reset (waiting for status line)")


def test_http_large_response_is_not_read() -> None:
    body = b"x" * 1_000_000
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    result, _ = asyncio.run(probe_server(answer(raw)))
    assert (result.ok, result.detail) == (True, "HTTP 200")


def test_cancelled_http_probe_raises_and_cleans_up() -> None:
    async def scenario() -> None:
        async with serve(silent) as server:
            task = asyncio.create_task(probe(http(server.port, timeout=10)))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())  # an unclosed socket would be a ResourceWarning, hence an error


def test_a_crashing_probe_becomes_a_failed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(spec: CheckSpec, deadline: float, pool: object) -> tuple[bool, str]:
        raise RuntimeError("bug")

    monkeypatch.setitem(probes._PROBES, "http", broken)
    result = asyncio.run(probe(http(80)))
    assert (result.ok, result.detail) == (False, "probe error: RuntimeError: bug")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"garbage\r\n\r\n", "bad status line b'garbage\\r\\n'"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "bad status line b'HTTP/1.1 abc OK\\r\\n'"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "bad status line b'SSH-2.0-OpenSSH_9.2\\r\\n'"),
        (b"HTTP/1.1 200 OK", "bad status line b'HTTP/1.1 200 OK'"),  # EOF mid-line
        (b"", "connection closed before status line"),
        (b"HTTP/1.1 200 " + b"x" * 20000 + b"\r\n", "bad status line (too long)"),
    ],
)
def test_http_garbage(raw: bytes, detail: str) -> None:
    result, _ = asyncio.run(probe_server(answer(raw)))
    assert (result.ok, result.detail) == (False, detail)


@pytest.mark.parametrize("path", ["/a b", "/x\r\nEvil: 1", "/é", ""])
def test_http_refuses_to_send_a_malformed_request(path: str) -> None:
    result = asyncio.run(probe(http(1, path=path)))
    assert (result.ok, result.detail) == (False, "path or Host is not a valid HTTP request token")


# ---------------------------------------------------------------------- tls


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


def tls_server(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


async def probe_tls(cert: tuple[Path, Path], **kw: Any) -> tuple[CheckResult, Server]:
    async with serve(status(200), tls=tls_server(cert)) as server:
        return await probe(http(server.port, tls=True, **kw)), server


@pytest.fixture
def trust(cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the self-signed certificate the system CA store for the verifying context."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    probe_http._tls_context.cache_clear()
    yield
    probe_http._tls_context.cache_clear()


def test_tls_without_verification(cert: tuple[Path, Path]) -> None:
    result, server = asyncio.run(probe_tls(cert, tls_verify=False))
    assert (result.ok, result.detail) == (True, "HTTP 200")
    assert server.sni == [None]  # an IP literal is not a server name


def test_tls_sends_host_as_sni(cert: tuple[Path, Path]) -> None:
    _, server = asyncio.run(probe_tls(cert, host="localhost"))
    assert server.sni == ["localhost"]


def test_tls_verification_fails_without_the_ca(cert: tuple[Path, Path]) -> None:
    result, _ = asyncio.run(probe_tls(cert, tls_verify=True, host="localhost"))
    assert not result.ok
    assert result.detail.startswith("TLS verify failed: "), result.detail


def test_tls_verification_passes_with_the_ca(cert: tuple[Path, Path], trust: None) -> None:
    by_name, server = asyncio.run(probe_tls(cert, tls_verify=True, host="localhost"))
    by_ip, _ = asyncio.run(probe_tls(cert, tls_verify=True))
    assert (by_name.ok, by_name.detail) == (True, "HTTP 200")
    assert server.sni == ["localhost"]
    assert (by_ip.ok, by_ip.detail) == (True, "HTTP 200")  # matched against the IP SAN


def test_tls_verification_checks_the_name(cert: tuple[Path, Path], trust: None) -> None:
    result, _ = asyncio.run(probe_tls(cert, tls_verify=True, host="www.example.com"))
    assert not result.ok
    assert result.detail.startswith("TLS verify failed: Hostname mismatch"), result.detail


def test_tls_against_a_plain_http_port(cert: tuple[Path, Path]) -> None:
    result, _ = asyncio.run(probe_server(silent, tls=True, timeout=0.3))
    assert not result.ok
    assert result.detail.startswith(("TLS error", "timeout", "connection reset")), result.detail


# ---------------------------------------------------------------------- tcp


def test_tcp_open_and_refused() -> None:
    async def scenario() -> tuple[CheckResult, CheckResult]:
        async with serve(silent, host="::1") as v6, serve(silent) as v4:
            return (
                await probe(CheckSpec(kind="tcp", address=V4, port=v4.port)),
                await probe(CheckSpec(kind="tcp", address=V6, port=v6.port)),
            )

    v4, v6 = asyncio.run(scenario())
    assert (v4.ok, v4.detail) == (True, "connected")
    assert (v6.ok, v6.detail) == (True, "connected")
    with closed_port() as port:
        refused = asyncio.run(probe(CheckSpec(kind="tcp", address=V4, port=port)))
    assert (refused.ok, refused.detail) == (False, "connect refused")
    with full_backlog() as port:
        hung = asyncio.run(probe(CheckSpec(kind="tcp", address=V4, port=port, timeout=0.3)))
    assert (hung.ok, hung.detail) == (False, "timeout after 0.3s (connecting)")


# ------------------------------------------------------------------ command


def test_command_exit_status_decides() -> None:
    ok = asyncio.run(probe(command("true")))
    fail = asyncio.run(
        probe(command(r"""sh -c 'echo out; printf "went\n  wrong\n" >&2; exit 3'"""))
    )
    assert (ok.ok, ok.detail) == (True, "exit 0")
    assert (fail.ok, fail.detail) == (False, "exit 3: went wrong")


def test_command_failure_detail_is_the_tail_of_the_output() -> None:
    result = asyncio.run(probe(command("sh -c 'seq 1 100000; exit 1'")))
    assert not result.ok
    assert result.detail.startswith("exit 1: ")
    assert result.detail.endswith(" 99999 100000")
    assert len(result.detail) < 220


def test_command_substitutes_the_address_without_a_shell() -> None:
    cmd = "sh -c 'test \"$1\" = 127.0.0.1' _ %s"
    ok = asyncio.run(probe(command(cmd)))
    other = asyncio.run(probe(command(cmd, address=ipaddress.ip_address("127.0.0.2"))))
    assert ok.ok, ok
    assert (other.ok, other.detail) == (False, "exit 1")


def test_command_substitutes_every_occurrence() -> None:
    result = asyncio.run(probe(command("test %s = %s", address=V6)))
    assert result.ok, result


def test_command_with_a_shell() -> None:
    ok = asyncio.run(probe(command("test %s = ::1 && exit 0 || exit 7", address=V6, shell=True)))
    fail = asyncio.run(probe(command("test %s = ::1 && exit 0 || exit 7", shell=True)))
    assert ok.ok, ok
    assert (fail.ok, fail.detail) == (False, "exit 7")


def test_without_shell_no_shell_syntax_is_interpreted(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = asyncio.run(probe(command(f"true; touch {marker}")))
    assert not result.ok  # `true` does not exist as "true;"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("cmd", "detail"),
    [
        ("/nonexistent/check --fail %s", "command not found: /nonexistent/check"),
        ("no-such-health-check-binary %s", "command not found: no-such-health-check-binary"),
        ("sh -c 'unbalanced", "bad command: No closing quotation"),
        ("   ", "bad command: empty command"),
        ("", "bad command: no command configured"),
    ],
)
def test_command_that_cannot_run(cmd: str, detail: str) -> None:
    result = asyncio.run(probe(command(cmd)))
    assert (result.ok, result.detail) == (False, detail)


def test_command_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "check"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = asyncio.run(probe(command(str(script))))
    assert (result.ok, result.detail) == (False, f"permission denied: {script}")


def gone(pid: int, within: float = 2.0) -> bool:
    """True once `pid` no longer runs (a zombie counts: PID 1 may be slow to reap it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    cmd = f"sh -c 'echo $$ > {tmp_path}/leader; sleep 30 & echo $! > {tmp_path}/child; wait'"
    result = asyncio.run(probe(command(cmd, timeout=0.5)))
    assert (result.ok, result.detail) == (False, "timeout after 0.5s (process group killed)")
    assert 0.5 <= result.duration < 1.0
    leader = int((tmp_path / "leader").read_text())
    child = int((tmp_path / "child").read_text())
    assert not Path(f"/proc/{leader}").exists()  # killed and reaped by us: no zombie left
    assert gone(child)


def test_command_leftover_children_are_killed_but_exit_status_counts(tmp_path: Path) -> None:
    # The check exits 0 but leaves a child holding its stdout open.
    cmd = f"sh -c 'sleep 30 & echo $! > {tmp_path}/child; exit 0'"
    result = asyncio.run(probe(command(cmd, timeout=0.4)))
    assert (result.ok, result.detail) == (True, "exit 0")
    assert gone(int((tmp_path / "child").read_text()))


def test_cancelled_command_probe_kills_the_process_group(tmp_path: Path) -> None:
    cmd = f"sh -c 'sleep 30 & echo $! > {tmp_path}/child; wait'"

    async def scenario() -> None:
        task = asyncio.create_task(probe(command(cmd, timeout=10)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert gone(int((tmp_path / "child").read_text()))


# ------------------------------------------------------------------- Prober


def test_prober_limits_concurrent_socket_probes() -> None:
    async def slow(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await read_head(reader, s)
        await asyncio.sleep(0.1)
        w.write(b"HTTP/1.1 200 OK\r\n\r\n")

    async def scenario() -> tuple[list[CheckResult], Server]:
        prober = Prober(max_sockets=3)
        async with serve(slow) as server:
            spec = http(server.port)
            return list(await asyncio.gather(*(prober.run(spec) for _ in range(9)))), server

    results, server = asyncio.run(scenario())
    assert all(r.ok for r in results)
    assert server.max_active == 3
    # Queueing is not timed: each probe took one server delay, not up to three.
    assert max(r.duration for r in results) < 0.2


def test_prober_limits_concurrent_commands() -> None:
    async def scenario() -> tuple[list[CheckResult], float]:
        prober = Prober(max_commands=2)
        start = time.monotonic()
        results = await asyncio.gather(*(prober.run(command("sleep 0.2")) for _ in range(4)))
        return list(results), time.monotonic() - start

    results, elapsed = asyncio.run(scenario())
    assert all(r.ok for r in results)
    assert elapsed >= 0.4
    assert max(r.duration for r in results) < 0.35


def test_prober_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError):
        Prober(max_commands=0)


# --------------------------------------------------------------- keep-alive

KEEPALIVE_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
KEEPALIVE_503 = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nbad"


def keepalive(responses: Callable[[int, int], bytes | None]) -> tuple[Handler, list[int]]:
    """A server answering every request on a connection; `responses(conn, n)` gives the
    answer to request n of connection conn (None: hang up without answering).
    The returned list holds the number of requests each connection carried."""
    per_conn: list[int] = []

    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        conn = len(per_conn)
        per_conn.append(0)
        while True:
            try:
                await read_head(reader, s)
            except asyncio.IncompleteReadError:
                return  # the probe closed the connection
            per_conn[conn] += 1
            raw = responses(conn, per_conn[conn])
            if raw is None:
                return
            w.write(raw)
            await w.drain()

    return handler, per_conn


# How run_many probes: "run" (a task per probe, as for every check kind), or "start"
# (Prober.start, the scheduler's way for HTTP checks on a kept connection, falling back
# to run as the scheduler does). The `both_paths` fixture runs a test each way.
PROBE_WITH = {"path": "run"}
PATHS_TAKEN: list[str] = []


@pytest.fixture(params=["run", "start"])
def both_paths(request: pytest.FixtureRequest) -> Iterator[str]:
    PROBE_WITH["path"] = request.param
    PATHS_TAKEN.clear()
    yield request.param
    if request.param == "start":  # the fast path really ran, not only the fallback
        assert any(p.startswith("start") for p in PATHS_TAKEN), PATHS_TAKEN
    PROBE_WITH["path"] = "run"


async def probe_once(prober: Prober, spec: CheckSpec) -> CheckResult:
    if PROBE_WITH["path"] == "run":
        return await prober.run(spec)
    answer: asyncio.Future[CheckResult | None] = asyncio.get_running_loop().create_future()
    if prober.start(spec, answer.set_result) is None:
        PATHS_TAKEN.append("run")
        return await prober.run(spec)
    result = await answer
    if result is None:  # the kept connection was dead: the scheduler runs it afresh
        PATHS_TAKEN.append("start, then run")
        return await prober.run(spec)
    PATHS_TAKEN.append("start")
    return result


def run_many(
    handler: Handler,
    runs: int,
    *,
    gap: float = 0.0,
    expect_status: tuple[int, ...] = (200,),
    **prober_kw: Any,
) -> tuple[list[CheckResult], Server, Prober]:
    """Probe one check `runs` times in a row through one Prober."""

    async def scenario() -> tuple[list[CheckResult], Server, Prober]:
        prober = Prober(**prober_kw)
        results = []
        async with serve(handler) as server:
            spec = http(server.port, expect_status=expect_status)
            try:
                for _ in range(runs):
                    results.append(await probe_once(prober, spec))
                    await asyncio.sleep(gap)
            finally:
                prober.close()
                await asyncio.sleep(0.01)  # let the closed transports finish
        return results, server, prober

    return asyncio.run(scenario())


@pytest.mark.usefixtures("both_paths")
def test_keepalive_reuses_one_connection() -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200)
    results, server, prober = run_many(handler, 4)
    assert [r.ok for r in results] == [True] * 4
    assert per_conn == [4]
    assert prober.pool is not None and (prober.pool.opened, prober.pool.reused) == (1, 3)
    # no `Connection: close` on a pooled request
    assert b"connection: close" not in server.heads[0].lower()


@pytest.mark.usefixtures("both_paths")
def test_keepalive_failure_status_is_reported_and_connection_kept() -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200 if n % 2 else KEEPALIVE_503)
    results, _, _ = run_many(handler, 4)
    assert [(r.ok, r.detail) for r in results] == [
        (True, "HTTP 200"),
        (False, "HTTP 503"),
        (True, "HTTP 200"),
        (False, "HTTP 503"),
    ]
    assert per_conn == [4]


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",  # body still to come
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nok",  # more than announced
        b"HTTP/1.1 200 OK\r\n\r\nok",  # no length: the body ends at close
        # the answer, then another one nobody asked for
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",  # no last chunk
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",  # not chunked: ends at close
    ],
)
def test_responses_that_cannot_leave_a_usable_connection_are_not_reused(raw: bytes) -> None:
    handler, per_conn = keepalive(lambda c, n: raw)
    results, _, _ = run_many(handler, 3)
    assert all(r.ok for r in results)
    assert per_conn == [1, 1, 1]


@pytest.mark.parametrize(
    "raw",
    [
        KEEPALIVE_200,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",  # a 204 has no body, whatever the headers
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    ],
)
@pytest.mark.usefixtures("both_paths")
def test_responses_whose_end_is_known_are_reused(raw: bytes) -> None:
    handler, per_conn = keepalive(lambda c, n: raw)
    results, _, prober = run_many(handler, 3, expect_status=(200, 204))
    assert [r.ok for r in results] == [True] * 3, results
    assert per_conn == [3]
    assert prober.pool is not None and (prober.pool.opened, prober.pool.reused) == (1, 2)


@pytest.mark.usefixtures("both_paths")
def test_a_body_that_arrives_after_the_head_keeps_the_connection() -> None:
    # The verdict is given at the end of the head; the body, chunked or not, is
    # skipped as it arrives, and the connection is reused once it has.
    async def slow_body(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            try:
                await read_head(reader, s)
            except asyncio.IncompleteReadError:
                return
            chunked = len(s.heads) % 2 == 0
            w.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                if chunked
                else b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe"
            )
            await w.drain()
            await asyncio.sleep(0.02)
            w.write(b"5\r\nhello\r\n0\r\n\r\n" if chunked else b"llo")
            await w.drain()

    results, server, prober = run_many(slow_body, 4, gap=0.05)
    assert [(r.ok, r.detail) for r in results] == [(True, "HTTP 200")] * 4
    assert all(r.duration < 0.02 for r in results)  # not held up by the body
    assert server.max_active == 1
    assert prober.pool is not None and (prober.pool.opened, prober.pool.reused) == (1, 3)


def test_a_bad_header_after_a_good_status_line_is_judged_by_the_status() -> None:
    # As with a stall or a reset after the status line: the status decides. But
    # the connection is out of step, so it is not reused.
    def raw(c: int, n: int) -> bytes:
        code = b"200 OK" if c % 2 == 0 else b"503 Down"
        return b"HTTP/1.1 " + code + b"\r\nBad Header\r\nContent-Length: 0\r\n\r\n"

    handler, per_conn = keepalive(raw)
    results, _, _ = run_many(handler, 3)
    assert [(r.ok, r.detail) for r in results] == [
        (True, "HTTP 200"),
        (False, "HTTP 503"),
        (True, "HTTP 200"),
    ]
    assert per_conn == [1, 1, 1]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line b'HTTP/1.1 2000 OK\\r\\n'"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "bad status line b'HTTP/1.1 20 OK\\r\\n'"),
        (b"HTTP/1.1 -200 OK\r\n\r\n", "bad status line b'HTTP/1.1 -200 OK\\r\\n'"),
        (b"HTTP/1 200 OK\r\n\r\n", "bad status line b'HTTP/1 200 OK\\r\\n'"),
        (b"HTTP/1.1200 OK\r\n\r\n", "bad status line b'HTTP/1.1200 OK\\r\\n'"),
    ],
)
def test_a_malformed_status_line_fails_the_check(raw: bytes, detail: str) -> None:
    handler, per_conn = keepalive(lambda c, n: raw)
    alone, _ = asyncio.run(probe_server(handler))
    pooled, _, _ = run_many(handler, 2)
    assert (alone.ok, alone.detail) == (False, detail)
    assert [(r.ok, r.detail) for r in pooled] == [(False, detail)] * 2
    assert per_conn == [1, 1, 1]


def test_a_switch_of_protocols_is_judged_by_its_status_and_not_reused() -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    handler, per_conn = keepalive(lambda c, n: raw)
    results, _, _ = run_many(handler, 2, expect_status=(101,))
    assert [(r.ok, r.detail) for r in results] == [(True, "HTTP 101")] * 2
    assert per_conn == [1, 1]


@pytest.mark.usefixtures("both_paths")
def test_server_closing_an_idle_connection_is_not_a_failure() -> None:
    # The server closes after each answer without saying so: the probe sees the EOF
    # while idle and connects afresh next time.
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200 if n == 1 else None)

    async def closing(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await handler(reader, w, s)
        w.close()

    results, _, _ = run_many(closing, 3, gap=0.05)
    assert [r.ok for r in results] == [True] * 3
    assert len(per_conn) == 3


@pytest.mark.usefixtures("both_paths")
def test_request_racing_the_servers_close_is_retried_on_a_new_connection() -> None:
    # The second request on a connection gets no answer, only a close: what a
    # server's keep-alive timeout firing as our request arrives looks like.
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200 if n == 1 else None)
    results, _, prober = run_many(handler, 3)
    assert [r.ok for r in results] == [True] * 3
    assert per_conn == [2, 2, 1]
    assert prober.pool is not None and prober.pool.opened == 3


def test_timeout_on_a_reused_connection_is_a_failure_and_drops_it() -> None:
    handler, _ = keepalive(lambda c, n: KEEPALIVE_200 if n == 1 else b"")

    async def scenario() -> list[CheckResult]:
        prober = Prober()
        async with serve(handler) as server:
            spec = http(server.port, timeout=0.2)
            try:
                return [await prober.run(spec), await prober.run(spec)]
            finally:
                prober.close()

    first, second = asyncio.run(scenario())
    assert first.ok
    assert (second.ok, second.detail) == (False, "timeout after 0.2s (waiting for status line)")
    assert 0.15 < second.duration < 0.4


@pytest.mark.usefixtures("both_paths")
def test_connections_are_replaced_after_max_age() -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200)
    results, _, _ = run_many(handler, 4, gap=0.06, max_age=0.1)
    assert all(r.ok for r in results)
    assert len(per_conn) >= 2 and all(n <= 2 for n in per_conn)


def test_idle_connections_expire() -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200)
    results, _, _ = run_many(handler, 3, gap=0.15, idle_timeout=0.1)
    assert all(r.ok for r in results)
    assert per_conn == [1, 1, 1]


def test_no_idle_connections_without_keepalive_or_room() -> None:
    for kw in ({"keepalive": False}, {"max_idle": 0}):
        handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200)
        results, _, _ = run_many(handler, 3, **kw)
        assert all(r.ok for r in results)
        assert per_conn == [1, 1, 1], kw


def test_one_shot_probe_still_asks_the_server_to_close() -> None:
    result, server = asyncio.run(probe_server(answer(KEEPALIVE_200)))
    assert result.ok
    assert b"Connection: close\r\n" in server.heads[0]


# ------------------------------------------------- connecting (our own connect)


def prober_probe(spec: CheckSpec, **prober_kw: Any) -> CheckResult:
    """One run of `spec` through a keep-alive Prober (deadlines from the pool's sweep)."""

    async def scenario() -> CheckResult:
        prober = Prober(**prober_kw)
        try:
            return await prober.run(spec)
        finally:
            prober.close()
            await asyncio.sleep(0.01)

    return asyncio.run(scenario())


def test_prober_connect_timeout_is_reported_as_before() -> None:
    with full_backlog() as port:
        result = prober_probe(http(port, timeout=0.3))
    assert (result.ok, result.detail) == (False, "timeout after 0.3s (connecting)")
    assert 0.3 <= result.duration < 0.6


def test_prober_connection_refused_is_reported_as_before() -> None:
    with closed_port() as port:
        v4 = prober_probe(http(port))
    with closed_port("::1") as port:
        v6 = prober_probe(http(port, address=V6))
    assert (v4.ok, v4.detail) == (False, "connect refused")
    assert (v6.ok, v6.detail) == (False, "connect refused")


def test_connect_timeout_with_no_time_at_all() -> None:
    # The deadline passes while the transport is being set up: still a connect timeout.
    # (Not through a Prober: its sweep may let an answer within one tick count.)
    async def scenario() -> CheckResult:
        async with serve(status(200)) as server:
            result = await probe(http(server.port, timeout=0.0))
            await asyncio.sleep(0.05)  # the server's side of the aborted connection ends
            return result

    result = asyncio.run(scenario())
    assert (result.ok, result.detail) == (False, "timeout after 0.0s (connecting)")


def test_prober_new_connection_times_out_waiting_for_the_status_line() -> None:
    async def scenario() -> tuple[CheckResult, Server]:
        async with serve(silent) as server:
            return await Prober().run(http(server.port, timeout=0.3)), server

    result, server = asyncio.run(scenario())
    assert (result.ok, result.detail) == (False, "timeout after 0.3s (waiting for status line)")
    assert 0.3 <= result.duration < 0.6
    assert server.heads


def test_cancelled_probe_while_connecting_cleans_up() -> None:
    async def scenario(pooled: bool) -> None:
        with full_backlog() as port:
            spec = http(port, timeout=10)
            task = asyncio.create_task(Prober().run(spec) if pooled else probe(spec))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    # An unclosed socket would be a ResourceWarning, hence an error.
    asyncio.run(scenario(pooled=False))
    asyncio.run(scenario(pooled=True))


def test_connect_error_is_described_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    # A connect that fails later (here: reported by SO_ERROR after a wait) is worded
    # as loop.create_connection worded it: "Connect call failed (address, port)".
    real_getsockopt = socket.socket.getsockopt

    class Unreachable(socket.socket):
        def getpeername(self) -> Any:
            raise OSError(107, "Transport endpoint is not connected")

        def getsockopt(self, *args: Any) -> Any:
            if args[:2] == (socket.SOL_SOCKET, socket.SO_ERROR):
                return 113  # EHOSTUNREACH
            return real_getsockopt(self, *args)

    monkeypatch.setattr(probe_http.socket, "socket", Unreachable)
    with closed_port() as port:
        result = asyncio.run(probe(http(port)))
    assert (result.ok, result.detail) == (
        False,
        f"Connect call failed ('127.0.0.1', {port}) (connecting)",
    )


def test_connect_that_fails_at_once_is_described_by_its_errno(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoNetwork(socket.socket):
        def connect_ex(self, address: Any) -> int:
            return 101  # ENETUNREACH

    monkeypatch.setattr(probe_http.socket, "socket", NoNetwork)
    result = asyncio.run(probe(http(80)))
    assert (result.ok, result.detail) == (False, "Network is unreachable (connecting)")


def test_a_server_that_speaks_first_is_judged_on_what_it_said() -> None:
    async def banner(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        w.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await w.drain()
        await reader.read()

    async def scenario() -> tuple[CheckResult, CheckResult]:
        async with serve(banner) as server:
            spec = http(server.port, timeout=0.5)
            return await probe(spec), await Prober().run(spec)

    alone, pooled = asyncio.run(scenario())
    assert (alone.ok, alone.detail) == (False, "bad status line b'SSH-2.0-OpenSSH_9.2\\r\\n'")
    assert (pooled.ok, pooled.detail) == (False, "bad status line b'SSH-2.0-OpenSSH_9.2\\r\\n'")


def test_cached_request_and_address_follow_the_spec() -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200)

    async def scenario() -> tuple[list[CheckResult], Server, Prober]:
        prober = Prober()
        async with serve(handler) as server:
            a = http(server.port, path="/a")
            b = http(server.port, path="/b", host="www.example.com")
            a_again = http(server.port, path="/a")  # equal to `a`, another object
            try:
                results = [await prober.run(s) for s in (a, b, a_again, b)]
            finally:
                prober.close()
                await asyncio.sleep(0.01)
        return results, server, prober

    results, server, prober = asyncio.run(scenario())
    assert all(r.ok for r in results)
    lines = [h.split(b"\r\n")[:2] for h in server.heads]
    assert lines == [
        [b"GET /a HTTP/1.1", b"Host: 127.0.0.1"],
        [b"GET /b HTTP/1.1", b"Host: www.example.com"],
        [b"GET /a HTTP/1.1", b"Host: 127.0.0.1"],
        [b"GET /b HTTP/1.1", b"Host: www.example.com"],
    ]
    # One connection per distinct check, each carrying its own check's requests.
    assert per_conn == [2, 2]
    assert prober.pool is not None and (prober.pool.opened, prober.pool.reused) == (2, 2)
    one_shot = probe_http._http_target(http(1, path="/a"), False)
    pooled = probe_http._http_target(http(1, path="/a"), True)
    other = probe_http._http_target(http(2, path="/a"), True)
    assert one_shot is not None and pooled is not None and other is not None
    assert b"Connection: close" in one_shot.request
    assert b"Connection: close" not in pooled.request
    assert (pooled.sockaddr, other.sockaddr) == (("127.0.0.1", 1), ("127.0.0.1", 2))
    v6 = probe_http._http_target(http(8080, address=V6, tls=True), True)
    assert v6 is not None and v6.sockaddr == ("::1", 8080, 0, 0)
    assert v6.server_hostname == "::1" and b"\r\nHost: [::1]\r\n" in v6.request
    default_port = probe_http._http_target(http(None, tls=True), True)  # type: ignore[arg-type]
    assert default_port is not None and default_port.port == 443


@pytest.mark.usefixtures("both_paths")
def test_a_head_split_across_reads_keeps_the_connection() -> None:
    async def split(reader: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            try:
                await read_head(reader, s)
            except asyncio.IncompleteReadError:
                return
            w.write(b"HTTP/1.1 200 OK\r\nContent-")
            await w.drain()
            await asyncio.sleep(0.02)
            w.write(b"Length: 2\r\n\r\nok")
            await w.drain()

    results, server, prober = run_many(split, 3)
    assert [(r.ok, r.detail) for r in results] == [(True, "HTTP 200")] * 3
    assert server.max_active == 1
    assert prober.pool is not None and (prober.pool.opened, prober.pool.reused) == (1, 2)


def test_tls_keepalive_reuses_the_connection(cert: tuple[Path, Path]) -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200)

    async def scenario() -> tuple[list[CheckResult], Prober]:
        prober = Prober()
        async with serve(handler, tls=tls_server(cert)) as server:
            spec = http(server.port, tls=True)
            try:
                return [await prober.run(spec) for _ in range(3)], prober
            finally:
                prober.close()
                await asyncio.sleep(0.05)

    results, prober = asyncio.run(scenario())
    assert [(r.ok, r.detail) for r in results] == [(True, "HTTP 200")] * 3
    assert per_conn == [3]
    assert prober.pool is not None and (prober.pool.opened, prober.pool.reused) == (1, 2)


def test_requests_in_flight_keep_their_deadline_after_close() -> None:
    async def scenario() -> CheckResult:
        prober = Prober()
        async with serve(silent) as server:
            task = asyncio.create_task(prober.run(http(server.port, timeout=0.3)))
            await asyncio.sleep(0.05)
            prober.close()  # at shutdown, checks may still run: they still time out
            return await asyncio.wait_for(task, 2)

    result = asyncio.run(scenario())
    assert (result.ok, result.detail) == (False, "timeout after 0.3s (waiting for status line)")
    assert result.duration < 0.6


def test_a_prober_used_again_on_a_new_loop_still_times_out() -> None:
    prober = Prober()

    async def first() -> None:
        # Leaves the sweep's timer on this loop, which then ends.
        async with serve(silent) as server:
            task = asyncio.create_task(prober.run(http(server.port, timeout=10)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    async def second() -> CheckResult:
        async with serve(silent) as server:
            return await asyncio.wait_for(prober.run(http(server.port, timeout=0.3)), 2)

    asyncio.run(first())
    result = asyncio.run(second())
    prober.close()
    assert (result.ok, result.detail) == (False, "timeout after 0.3s (waiting for status line)")


# ------------------------------------------- the httptools of Debian and of PyPI

# Debian bookworm and trixie ship httptools 0.1.1 (on http-parser), PyPI newer ones
# (on llhttp): the probes must judge and reuse alike on both. This runs the same
# answers through a Prober under the venv's python and under Debian's python3 with
# python3-httptools (what the LB VMs run), and compares with what we expect.
HTTPTOOLS_SCRIPT = r"""
import asyncio, ipaddress, json
import httptools
from announcer.model import CheckSpec
from announcer.probes import Prober

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 503 Down\r\ncontent-length: 3\r\n\r\nbad",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"garbage\r\n\r\n",
]

async def main():
    out = []
    for raw in ANSWERS:
        conns = []

        async def handle(reader, writer):
            conns.append(0)
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    conns[-1] += 1
                    writer.write(raw)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        spec = CheckSpec(kind="http", address=ipaddress.ip_address("127.0.0.1"), port=port,
                         timeout=2.0, expect_status=(200, 204))
        prober = Prober()
        results = [await prober.run(spec) for _ in range(3)]
        prober.close()
        server.close()
        await server.wait_closed()
        out.append([[[r.ok, r.detail] for r in results], conns])
    print(json.dumps({"version": httptools.__version__, "results": out}))

asyncio.run(main())
"""

HTTPTOOLS_EXPECTED = [
    # (ok, detail) of each of the three runs, requests per connection
    ((True, "HTTP 200"), [3]),
    ((False, "HTTP 503"), [3]),
    ((True, "HTTP 200"), [3]),
    ((True, "HTTP 204"), [3]),
    ((True, "HTTP 200"), [1, 1, 1]),
    ((True, "HTTP 200"), [1, 1, 1]),
    ((True, "HTTP 200"), [1, 1, 1]),
    ((True, "HTTP 200"), [1, 1, 1]),
    ((False, "bad status line b'HTTP/1.1 20 OK\\r\\n'"), [1, 1, 1]),
    ((False, "bad status line b'HTTP/1.1 2000 OK\\r\\n'"), [1, 1, 1]),
    ((False, "bad status line b'garbage\\r\\n'"), [1, 1, 1]),
]


def _debian_httptools() -> str | None:
    """/usr/bin/python3 if it has Debian's python3-httptools, else None."""
    debian = "/usr/bin/python3"
    if not Path(debian).exists():
        return None
    found = subprocess.run(
        [debian, "-c", "import httptools"], capture_output=True, cwd="/", timeout=30
    )
    return debian if found.returncode == 0 else None


@pytest.mark.parametrize("python", ["venv", "debian"])
def test_answers_are_judged_alike_on_every_httptools(python: str) -> None:
    executable = sys.executable if python == "venv" else _debian_httptools()
    # Fail loudly, never skip: a test that skips in CI tests nothing.
    assert executable is not None, "no Debian python3 with python3-httptools (scripts/deps)"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [executable, "-c", HTTPTOOLS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",  # nothing from the checkout on the path but the package itself
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    expected = [[[list(outcome)] * 3, conns] for outcome, conns in HTTPTOOLS_EXPECTED]
    assert got["results"] == expected, got["version"]


# ------------------------------------------------- failures that are ours, not the VIP's

EMFILE_SCRIPT = r"""
import asyncio, ipaddress, json, os, resource
from announcer.model import CheckSpec
from announcer.probes import Prober, probe

V4 = ipaddress.ip_address("127.0.0.1")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

async def answer(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(OK)
    writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    specs = [
        CheckSpec("http", V4, port, timeout=0.5),
        CheckSpec("tcp", V4, port, timeout=0.5),
        CheckSpec("command", V4, None, timeout=0.5, command="true"),
    ]
    prober = Prober(max_sockets=4)
    held = []
    try:
        while True:  # every free descriptor, as a client holding connections would
            held.append(os.dup(0))
    except OSError:
        pass
    results = [await prober.run(s) for s in specs] + [await probe(specs[0])]
    for fd in held:
        os.close(fd)
    # With descriptors free again, the same checks pass.
    results += [await prober.run(s) for s in specs]
    prober.close()
    server.close()
    print(json.dumps([(r.ok, r.detail, r.local) for r in results]))

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
asyncio.run(main())
"""


def test_out_of_descriptors_is_a_local_failure() -> None:
    """EMFILE while probing (a real one: RLIMIT_NOFILE lowered and filled in a child)."""
    root = Path(__file__).resolve().parents[2]
    cp = subprocess.run(
        [sys.executable, "-c", EMFILE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert cp.returncode == 0, cp.stderr
    results = json.loads(cp.stdout)
    starved, freed = results[:4], results[4:]
    for ok, detail, local in starved:
        assert not ok
        assert local == "emfile", detail
        assert "Too many open files" in detail and detail.startswith("not counted: ")
    assert [ok for ok, _, _ in freed] == [True, True, True], freed
    assert all(local is None for _, _, local in freed)


def block_loop_at(delay: float, seconds: float) -> None:
    """Make the running loop stall: a callback that sleeps (as a slow render did)."""
    asyncio.get_running_loop().call_later(delay, time.sleep, seconds)


@pytest.mark.parametrize("pooled", [False, True])
def test_a_timeout_while_the_loop_stalled_is_a_local_failure(pooled: bool) -> None:
    async def go() -> CheckResult:
        async with serve(silent) as server:
            spec = http(server.port, timeout=0.3)
            block_loop_at(0.05, 0.4)
            if pooled:
                prober = Prober()
                try:
                    return await prober.run(spec)
                finally:
                    prober.close()
            return await probe(spec)

    result = asyncio.run(go())
    assert (result.ok, result.local) == (False, "loop_stall")
    assert result.detail.startswith("not counted: timeout after 0.3s")


def test_a_stall_before_the_probe_does_not_excuse_its_timeout() -> None:
    async def go() -> CheckResult:
        async with serve(silent) as server:
            block_loop_at(0, 0.3)
            await asyncio.sleep(0.35)  # the stall is over (and seen) before the probe
            prober = Prober()
            try:
                return await prober.run(http(server.port, timeout=0.2))
            finally:
                prober.close()

    result = asyncio.run(go())
    assert (result.ok, result.local) == (False, None)
    assert result.detail == "timeout after 0.2s (waiting for status line)"


def test_a_tcp_and_a_command_timeout_while_the_loop_stalled_are_local() -> None:
    async def go() -> list[CheckResult]:
        block_loop_at(0.05, 0.4)
        cmd = await probe(command("sleep 5", timeout=0.2))
        with full_backlog() as port:
            block_loop_at(0.05, 0.4)
            tcp = await probe(CheckSpec("tcp", V4, port, timeout=0.2))
        return [cmd, tcp]

    for result in asyncio.run(go()):
        assert (result.ok, result.local) == (False, "loop_stall"), result


def test_ordinary_failures_are_not_local() -> None:
    result, _ = asyncio.run(probe_server(silent, timeout=0.2))
    assert (result.ok, result.local) == (False, None)
    with closed_port() as port:
        refused = asyncio.run(probe(http(port)))
    assert (refused.ok, refused.detail, refused.local) == (False, "connect refused", None)
    failed = asyncio.run(probe(command("false")))
    assert (failed.ok, failed.local) == (False, None)


# ------------------------------------------------------------- command environment


def test_a_command_check_sees_only_path_and_lang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of announcer's environment leaks: no password, no systemd sockets."""
    monkeypatch.setenv("ANNOUNCER_DPAPI_PASSWORD", "secret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/announcer.service")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("LANG", "C.UTF-8")
    out = tmp_path / "env.json"
    script = tmp_path / "dump.py"
    script.write_text(
        "import json, os, sys\nopen(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))\n"
    )
    result = asyncio.run(probe(command(f"{sys.executable} -I {script} {out}")))
    assert result.ok, result.detail
    env = json.loads(out.read_text())
    assert env == {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    # and `env` itself (what the issue asked): its output ends up in the failure detail
    shown = asyncio.run(probe(command("sh -c 'env; exit 1'", shell=False)))
    assert "secret" not in shown.detail and "NOTIFY_SOCKET" not in shown.detail


def test_start_on_a_kept_connection_times_out_and_drops_it() -> None:
    handler, _ = keepalive(lambda c, n: KEEPALIVE_200 if n == 1 else b"")

    async def scenario() -> tuple[CheckResult, CheckResult | None, int]:
        prober = Prober()
        async with serve(handler) as server:
            spec = http(server.port, timeout=0.2)
            try:
                first = await prober.run(spec)  # opens the connection it keeps
                answer: asyncio.Future[CheckResult | None] = asyncio.Future()
                assert prober.start(spec, answer.set_result) is not None
                second = await answer
                assert prober.pool is not None
                return first, second, len(prober.pool._idle)
            finally:
                prober.close()

    first, second, idle = asyncio.run(scenario())
    assert first.ok and second is not None
    assert (second.ok, second.detail) == (False, "timeout after 0.2s (waiting for status line)")
    assert 0.15 < second.duration < 0.4
    assert idle == 0  # dropped, not kept


def test_start_given_up_aborts_the_connection_and_reports_nothing() -> None:
    handler, per_conn = keepalive(lambda c, n: KEEPALIVE_200 if n == 1 else b"")

    async def scenario() -> tuple[list[CheckResult | None], int]:
        prober = Prober()
        reported: list[CheckResult | None] = []
        async with serve(handler) as server:
            spec = http(server.port, timeout=5)
            try:
                assert (await prober.run(spec)).ok
                pending = prober.start(spec, reported.append)
                assert pending is not None
                await asyncio.sleep(0.05)  # the request is out, no answer comes
                pending.cancel()  # what Scheduler.retire does
                await asyncio.sleep(0.05)
                assert prober.pool is not None
                return reported, len(prober.pool._inflight) + len(prober.pool._idle)
            finally:
                prober.close()

    reported, left = asyncio.run(scenario())
    assert reported == [] and left == 0
    assert per_conn == [2]


def test_start_is_only_for_http_checks_with_a_kept_connection() -> None:
    async def scenario() -> list[object]:
        with_pool, without = Prober(), Prober(keepalive=False)
        spec = http(1)
        return [
            with_pool.start(spec, lambda r: None),  # no connection kept yet
            without.start(spec, lambda r: None),
            with_pool.start(command("true"), lambda r: None),
        ]

    assert asyncio.run(scenario()) == [None, None, None]
