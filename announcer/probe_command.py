"""Command checks: run the check's command, healthy on exit status 0.

The command runs with only PATH and LANG in its environment, in its own process
group, which is killed whole at the deadline and reaped (boundedly) before the
probe returns; a failure's detail ends with the tail of its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess

from .checks import command_argv
from .model import CheckSpec
from .probe_failures import LOCAL_FORK_ERRNOS, Outcome, local_error, timed_out

log = logging.getLogger("announcer.probes")

# How much of a failed command's output ends up in `detail`.
_OUTPUT_TAIL = 200
# After SIGKILL a process group dies at once unless a member is stuck in the kernel
# (D state); we wait this long to reap the leader, then give up and log it.
_REAP_GRACE = 1.0


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


async def run_command(spec: CheckSpec, deadline: float) -> Outcome:
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
        local_error(exc, f"starting {argv[0]}", LOCAL_FORK_ERRNOS)
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
        return timed_out(
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
