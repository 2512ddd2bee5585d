"""Health-check probes: `probe()` and `Prober`, the only entry to health-check I/O.

`probe(spec)` runs one check and always returns a `CheckResult`: every failure,
including a bug in a probe, becomes `ok=False` with a short `detail`, and the
whole probe (connect, request, response, command run) is bounded by
`spec.timeout`. Only `asyncio.CancelledError` escapes, so that shutdown works.
`Prober` adds the concurrency limits a daemon needs in front of `probe`.

TCP checks are here; the rest is in the modules beside it:
probe_http.py (HTTP checks: connecting, deadlines, the keep-alive pool),
probe_http_connection.py (one HTTP/1.1 connection: request, parsing, verdict),
probe_command.py (command checks: environment, process group, reaping) and
probe_failures.py (which failures are ours, not the VIP's: descriptors, memory, a
stalled event loop).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from .model import CheckResult, CheckSpec
from .probe_command import run_command
from .probe_failures import LocalFailure, Outcome, describe, local_error, local_result, timed_out
from .probe_http import ConnectionPool, http_connect, run_http
from .probe_http_connection import HttpConnection

log = logging.getLogger("announcer.probes")

# Keep-alive (Prober): a connection is replaced after this many seconds, so the
# listener's accept path keeps being checked; and an idle one is closed after
# `KEEPALIVE_IDLE` (below the 5 s keep-alive timeout many servers use, so that we,
# not the server, normally end it and a request never races its close).
KEEPALIVE_MAX_AGE = 60.0
KEEPALIVE_IDLE = 4.0

# File descriptors left for everything but idle probe connections.
_FD_RESERVE = 256


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
    except LocalFailure as e:
        return local_result(e, loop.time() - start)
    except Exception as exc:  # a bug in a probe must fail the check, not kill the scheduler
        ok, detail = _crashed(spec, exc)
    return CheckResult(ok=ok, detail=detail, duration=loop.time() - start)


def _crashed(spec: CheckSpec, exc: Exception) -> Outcome:
    """A bug in a probe (logged with its traceback): the check fails and goes on."""
    log.warning("probe %s crashed", spec.target, exc_info=exc)
    return False, f"probe error: {type(exc).__name__}: {exc}"


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
        outcome: Outcome | None = None
        try:
            conn = pool.take(spec, start)
            if conn is not None:
                outcome = await pool.reuse(spec, conn, start + spec.timeout)
            if outcome is None:
                # No connection, or it turned out dead: a new one, with its own timeout.
                async with self._sockets:
                    start = loop.time()
                    outcome = await http_connect(spec, start + spec.timeout, pool)
        except LocalFailure as e:
            return local_result(e, loop.time() - start)
        except Exception as exc:  # a bug in a probe must fail the check, not kill the scheduler
            outcome = _crashed(spec, exc)
        return CheckResult(outcome[0], outcome[1], loop.time() - start)

    def start(
        self, spec: CheckSpec, on_done: Callable[[CheckResult | None], None]
    ) -> asyncio.Future[None] | None:
        """Start `spec` without a task where it can: an HTTP check whose kept connection
        is idle (the steady state: nearly every probe at 10 000 checks a second).

        Returns the request's future (cancel it to give the probe up) and later calls
        `on_done` from the future's callback with the result, or with None if the
        connection turned out dead before any answer (then `run` the check: it
        reconnects). Returns None, and never calls `on_done`, when the check needs
        `run`. Same outcome as `run`; it saves the task and three coroutine frames a
        probe cost (a task's creation was the scheduler's largest own cost).
        """
        pool = self.pool
        if pool is None or spec.kind != "http":
            return None
        start = asyncio.get_running_loop().time()
        try:
            conn = pool.take(spec, start)
        except Exception:  # `run` meets it again and reports it
            return None
        if conn is None:
            return None
        deadline = start + spec.timeout
        done = pool.send(conn, deadline)
        if done is not None:
            done.add_done_callback(
                functools.partial(self._answered, pool, spec, conn, start, deadline, on_done)
            )
        return done

    @staticmethod
    def _answered(
        pool: ConnectionPool,
        spec: CheckSpec,
        conn: HttpConnection,
        start: float,
        deadline: float,
        on_done: Callable[[CheckResult | None], None],
        done: asyncio.Future[None],
    ) -> None:
        if done.cancelled():
            pool.abandon(conn)
            return
        pool.unwatch(conn)
        clock = conn.loop.time
        try:
            outcome = pool.finish(spec, conn, deadline)
        except LocalFailure as e:
            on_done(local_result(e, clock() - start))
            return
        except Exception as exc:  # a bug in a probe must fail the check, not stop it
            outcome = _crashed(spec, exc)
        on_done(None if outcome is None else CheckResult(outcome[0], outcome[1], clock() - start))

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


async def _tcp(spec: CheckSpec, deadline: float) -> Outcome:
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
            return timed_out(spec, deadline, (False, f"timeout after {spec.timeout}s (connecting)"))
        return False, describe(exc, "connecting")
    except Exception as exc:
        local_error(exc, "connecting")
        return False, describe(exc, "connecting")
    transport.close()
    return True, "connected"


async def _tcp_probe(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> Outcome:
    return await _tcp(spec, deadline)


async def _command_probe(spec: CheckSpec, deadline: float, pool: ConnectionPool | None) -> Outcome:
    return await run_command(spec, deadline)


_PROBES: dict[str, Callable[[CheckSpec, float, ConnectionPool | None], Awaitable[Outcome]]] = {
    "http": run_http,
    "tcp": _tcp_probe,
    "command": _command_probe,
}
