"""Whose fault a failed probe is, and how its failure reads.

A probe that fails for a reason of this process rather than of the VIP (out of file
descriptors, socket buffers or memory, or a timeout while the event loop stalled)
raises `LocalFailure`; `probe()` and `Prober` turn it into a `CheckResult` with
`local` set, which the service does not count against the VIP. `Stalls` records
when the loop was last seen late, from the probes' own deadlines and the keep-alive
pool's sweep. `describe` words a socket or TLS error as a check's short `detail`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time

from .model import REFUSED, CheckResult, CheckSpec

log = logging.getLogger("announcer.probes")

# What a probe function returns: healthy or not, and the detail.
Outcome = tuple[bool, str]

# Failures that say nothing about the VIP: this process is out of descriptors,
# socket buffers or memory (EAGAIN: fork failed for a command check). A probe that
# meets one reports `local`, and the service keeps the VIP's state (issue 11: a
# /metrics client holding descriptors made checks fail with EMFILE).
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LOCAL_FORK_ERRNOS = _LOCAL_ERRNOS | {errno.EAGAIN}
# A timeout is ours, not the VIP's, when the event loop stalled for longer than this
# while the probe was in flight: the answer may have been waiting in the socket while
# nothing ran (a blocked loop timed out 1 708 of 2 000 healthy VIPs in 30 s). Normal
# loop iterations at 10 000 checks a second are milliseconds.
STALL = 0.1
# Local failures are logged at most this often (they come in bursts of thousands).
_LOCAL_LOG_EVERY = 10.0


class LocalFailure(Exception):
    """A probe failed for a reason of this process, not of the VIP (caught by the callers
    of the probe functions and turned into a `CheckResult` with `local` set)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Stalls:
    """When the event loop was last seen late by more than STALL (loop.time())."""

    last = float("-inf")

    @classmethod
    def late(cls, now: float, due: float) -> bool:
        """Note a timer or deadline due at `due` that ran at `now`; True if it ran late."""
        if now - due > STALL:
            cls.last = now
            return True
        return False


def timed_out(spec: CheckSpec, deadline: float, outcome: Outcome) -> Outcome:
    """A timeout's outcome; raises LocalFailure if the loop stalled while the probe ran."""
    now = asyncio.get_running_loop().time()
    # A stall seen after the probe started overlapped it (a stall is seen when it ends).
    if Stalls.late(now, deadline) or Stalls.last > deadline - spec.timeout:
        raise LocalFailure("loop_stall", f"{outcome[1]} while the event loop stalled")
    return outcome


def local_error(exc: BaseException, phase: str, errnos: frozenset[int] = _LOCAL_ERRNOS) -> None:
    """Raise LocalFailure if `exc` is a shortage of this process's resources."""
    if isinstance(exc, OSError) and exc.errno in errnos:
        raise LocalFailure(errno.errorcode[exc.errno].lower(), describe(exc, phase)) from exc


_local_logged = [float("-inf"), 0]  # when the last line was logged, failures since


def local_result(e: LocalFailure, duration: float) -> CheckResult:
    """The result of a local failure; logs a line at most every _LOCAL_LOG_EVERY seconds."""
    _local_logged[1] += 1
    now = time.monotonic()
    if now - _local_logged[0] >= _LOCAL_LOG_EVERY:
        log.warning(
            "%d check(s) failed for a reason of ours, not the VIPs' (not counted, retried): "
            "latest %s",
            _local_logged[1],
            e.detail,
        )
        _local_logged[0], _local_logged[1] = now, 0
    return CheckResult(False, f"not counted: {e.detail}", duration, local=e.reason)


def describe(exc: BaseException, phase: str) -> str:
    """A short reason for a socket or TLS failure."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset ({phase})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({phase})"
    return f"{type(exc).__name__}: {exc} ({phase})"
