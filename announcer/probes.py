"""Health-check probes: the only module that does health-check I/O.

`probe(spec)` runs one check and always returns a `CheckResult`: every failure,
including a bug in a probe, becomes `ok=False` with a short `detail`, and the
whole probe (connect, request, response, command run) is bounded by
`spec.timeout`. Only `asyncio.CancelledError` escapes, so that shutdown works.
`Prober` adds the concurrency limits a daemon needs in front of `probe`.

The HTTP client is our own minimal HTTP/1.1 rather than aiohttp or httpx:
thousands of VIPs probed every second on one core means the per-probe cost must
be a socket, a request line and a status line, with no session, connection pool
or response object built per request. It is a bare asyncio.Protocol rather than
asyncio streams for the same reason: the StreamReader/StreamWriter pair cost
about a third more CPU per probe (tests/bench_probes.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shlex
import signal
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from typing import cast

from . import __version__
from .model import CheckResult, CheckSpec

log = logging.getLogger("announcer.probes")

USER_AGENT = f"announcer/{__version__}"

# The most of a response head we keep; a status line must fit in it.
_HEAD_LIMIT = 16 * 1024
# How much of a failed command's output ends up in `detail`.
_OUTPUT_TAIL = 200
# After SIGKILL a process group dies at once unless a member is stuck in the kernel
# (D state); we wait this long to reap the leader, then give up and log it.
_REAP_GRACE = 1.0

_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: [^\r\n]*)?\r?\n")
# Visible ASCII only: a space, CR or LF in the path or Host would break the request.
_REQUEST_TOKEN = re.compile(r"[\x21-\x7e]+")

_Outcome = tuple[bool, str]


async def probe(spec: CheckSpec) -> CheckResult:
    """Run one check bounded by `spec.timeout`; never raises except CancelledError."""
    # Deadlines are on the loop's clock, the one asyncio.timeout_at compares with.
    loop = asyncio.get_running_loop()
    start = loop.time()
    run = _PROBES.get(spec.kind)
    try:
        if run is None:
            ok, detail = False, f"unknown check kind {spec.kind!r}"
        else:
            ok, detail = await run(spec, start + spec.timeout)
    except Exception as exc:  # a bug in a probe must fail the check, not kill the scheduler
        log.warning("probe %s crashed", spec.target, exc_info=True)
        ok, detail = False, f"probe error: {type(exc).__name__}: {exc}"
    return CheckResult(ok=ok, detail=detail, duration=loop.time() - start)


class Prober:
    """Runs probes with bounded concurrency: fork is expensive and sockets cost file descriptors."""

    def __init__(self, *, max_commands: int = 16, max_sockets: int = 512) -> None:
        if max_commands < 1 or max_sockets < 1:
            raise ValueError("max_commands and max_sockets must be at least 1")
        self.max_commands = max_commands
        self.max_sockets = max_sockets
        self._commands = asyncio.Semaphore(max_commands)
        self._sockets = asyncio.Semaphore(max_sockets)

    async def run(self, spec: CheckSpec) -> CheckResult:
        """Probe `spec` once a slot is free; time spent waiting for the slot is not timed."""
        # The timeout starts when the probe starts, not when it is queued: counting the
        # queue would turn an overloaded checker into failed checks and withdraw healthy
        # VIPs everywhere, which is far worse than checking late.
        limiter = self._commands if spec.kind == "command" else self._sockets
        async with limiter:
            return await probe(spec)


# ----------------------------------------------------------------------- http


class _HttpExchange(asyncio.Protocol):
    """Sends the request and keeps the response head; `done` fires at its end, EOF or loss."""

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self._request = request
        self.head = bytearray()
        self.error: Exception | None = None  # kept here, not in a future nobody may read
        self.done: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return  # the body, or anything after a timeout: not needed
        start = max(0, len(self.head) - 3)
        self.head += data
        # The whole head, not just the status line, so that the server sees its
        # response consumed before we hang up.
        if self.head.find(b"\r\n\r\n", start) >= 0 or len(self.head) >= _HEAD_LIMIT:
            self.done.set_result(None)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        if not self.done.done():
            self.done.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)


async def _http(spec: CheckSpec, deadline: float) -> _Outcome:
    """GET spec.path and compare the status with spec.expect_status."""
    request = _http_request(spec)
    if request is None:
        return False, "path or Host is not a valid HTTP request token"
    port = spec.port if spec.port is not None else (443 if spec.tls else 80)
    context = _tls_context(spec.tls_verify) if spec.tls else None
    loop = asyncio.get_running_loop()
    exchange = _HttpExchange(request, loop)
    transport: asyncio.Transport | None = None
    timed_out = False
    try:
        try:
            async with asyncio.timeout_at(deadline) as limit:
                transport, _ = await loop.create_connection(
                    lambda: exchange,
                    str(spec.address),
                    port,
                    ssl=context,
                    # SNI and the name verified: the Host we send, else the VIP (an IP
                    # literal gets no SNI and is matched against the certificate's IP SANs).
                    server_hostname=(spec.host or str(spec.address)) if context else None,
                )
                await exchange.done
        except TimeoutError as exc:
            if transport is None:
                if limit.expired():
                    return False, f"timeout after {spec.timeout}s (connecting)"
                return False, _describe(exc, "connecting")  # ETIMEDOUT from the kernel
            timed_out = True
        except Exception as exc:
            return False, _describe(exc, "connecting")
        return _judge(spec, exchange, timed_out)
    except asyncio.CancelledError:
        if transport is not None:
            transport.abort()  # shutting down: no graceful TLS close
            transport = None
        raise
    finally:
        if transport is not None:
            await _close(transport, exchange, deadline - loop.time(), tls=context is not None)


def _judge(spec: CheckSpec, exchange: _HttpExchange, timed_out: bool) -> _Outcome:
    """The outcome from what arrived: the status line decides, whatever followed it."""
    head = exchange.head
    end = head.find(b"\n", 0, _HEAD_LIMIT)
    if end < 0:
        if len(head) >= _HEAD_LIMIT:
            return False, "bad status line (too long)"
        if timed_out:
            return False, f"timeout after {spec.timeout}s (waiting for status line)"
        if exchange.error is not None:
            return False, _describe(exchange.error, "waiting for status line")
        if not head:
            return False, "connection closed before status line"
        return False, f"bad status line {bytes(head[:40])!r}"
    match = _STATUS_LINE.fullmatch(head, 0, end + 1)
    if match is None:
        return False, f"bad status line {bytes(head[: min(end + 1, 40)])!r}"
    # A server that stalls or resets after a good status line still gave its answer.
    status = int(match.group(1))
    return status in spec.expect_status, f"HTTP {status}"


def _http_request(spec: CheckSpec) -> bytes | None:
    """The request head, or None if the path or Host would make it malformed."""
    if spec.host is not None:
        host = spec.host
    elif spec.address.version == 6:
        host = f"[{spec.address}]"
    else:
        host = str(spec.address)
    if not (_REQUEST_TOKEN.fullmatch(spec.path) and _REQUEST_TOKEN.fullmatch(host)):
        return None
    return (
        f"GET {spec.path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


async def _close(
    transport: asyncio.Transport, exchange: _HttpExchange, grace: float, *, tls: bool
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
            return False, f"timeout after {spec.timeout}s (connecting)"
        return False, _describe(exc, "connecting")
    except Exception as exc:
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


def _command_argv(spec: CheckSpec) -> list[str]:
    """The argv to run, with every `%s` replaced by the VIP; raises ValueError."""
    if not spec.command:
        raise ValueError("no command configured")
    address = str(spec.address)
    if spec.shell:
        return ["/bin/sh", "-c", spec.command.replace("%s", address)]
    # Split first, then substitute: the address can never change the word boundaries.
    argv = [word.replace("%s", address) for word in shlex.split(spec.command)]
    if not argv:
        raise ValueError("empty command")
    return argv


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
        return False, f"timeout after {spec.timeout}s (process group killed)"
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


_PROBES: dict[str, Callable[[CheckSpec, float], Awaitable[_Outcome]]] = {
    "http": _http,
    "tcp": _tcp,
    "command": _command,
}
