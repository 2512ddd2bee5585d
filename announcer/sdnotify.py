"""systemd's sd_notify protocol, our own small implementation (no libsystemd, no dependency).

The protocol (sd_notify(3)): the service manager passes an AF_UNIX datagram socket in
$NOTIFY_SOCKET (a path, or "@name" for the abstract namespace) and the service sends
newline-separated KEY=VALUE datagrams to it: READY=1, STATUS=..., WATCHDOG=1,
STOPPING=1, RELOADING=1. $WATCHDOG_USEC is the watchdog period (WatchdogSec=), and
$WATCHDOG_PID, when set, names the one process it is meant for.

Rules kept here:

* Without $NOTIFY_SOCKET every method is a no-op, so `announcer run` behaves the
  same in a terminal, in tests and under systemd.
* Sending never raises and never blocks the event loop: the socket is non-blocking,
  a failed datagram is dropped (the next watchdog ping comes soon anyway) and logged
  once at DEBUG until a send succeeds again. A notification is a courtesy to the
  service manager; losing one must not take the service down.
* `from_env` removes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
  environment it read (like sd_notify's unset_environment), so children such as
  command health checks do not inherit them and cannot speak for us.
* The watchdog is ours only if WATCHDOG_PID is absent or equals our PID.

systemd versions: bookworm has systemd 252, where Type=notify-reload does not exist
(253+). The unit therefore uses Type=notify with ExecReload=kill -HUP; `reloading()`
still sends RELOADING=1, which 252 understands for Type=notify too (the unit shows
"reloading" until the next READY=1), plus MONOTONIC_USEC, which 253+ requires and
older versions ignore.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("announcer.sdnotify")

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str | None:
    """The AF_UNIX address for a $NOTIFY_SOCKET value, None if unusable.

    "/path" is a filesystem socket, "@name" an abstract one ("\\0name"). Other forms
    (systemd 253+ also knows "vsock:CID:PORT") are not supported and give None.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_seconds(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """The watchdog period in seconds from $WATCHDOG_USEC/$WATCHDOG_PID, None if not ours."""
    if not usec:
        return None
    try:
        period = int(usec)
    except ValueError:
        return None
    if period <= 0:
        return None
    if pid:
        try:
            if int(pid) != own_pid:
                return None  # meant for another process (e.g. we are a child of the main one)
        except ValueError:
            return None
    return period / 1e6


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(text.splitlines())


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock MONOTONIC_USEC= is read against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to the service manager; a no-op without $NOTIFY_SOCKET."""

    def __init__(self, address: str | None = None, watchdog_interval: float | None = None) -> None:
        self._address = address
        self._watchdog_interval = watchdog_interval
        self._failing = False  # a send failed and was logged; stay quiet until one succeeds

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read $NOTIFY_SOCKET/$WATCHDOG_USEC/$WATCHDOG_PID and remove them from `environ`."""
        env = os.environ if environ is None else environ
        raw_socket = env.pop(ENV_SOCKET, None)
        usec = env.pop(ENV_WATCHDOG_USEC, None)
        pid = env.pop(ENV_WATCHDOG_PID, None)
        address = socket_address(raw_socket) if raw_socket else None
        if raw_socket and address is None:
            log.debug("unsupported %s=%r, notifications disabled", ENV_SOCKET, raw_socket)
        return cls(address, watchdog_seconds(usec, pid, os.getpid()))

    @property
    def watchdog_interval(self) -> float | None:
        """WatchdogSec in seconds when the watchdog is enabled for us; ping at half of it."""
        return self._watchdog_interval

    def ready(self, status: str = "") -> bool:
        """READY=1: startup (or a reload) is complete; optionally with a STATUS line."""
        lines = ["READY=1"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def status(self, text: str) -> bool:
        """STATUS=...: the one-line state `systemctl status` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the main loop is alive."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """STOPPING=1: an orderly shutdown has begun."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC; send ready() again when the reload is done."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def notify(self, *assignments: str) -> bool:
        """Send KEY=VALUE lines as one datagram; True if sent, False if disabled or failed."""
        if self._address is None or not assignments:
            return False
        data = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Non-blocking: a full queue on the manager's side drops this datagram
                # instead of stalling the asyncio loop that sends it.
                sock.setblocking(False)
                sock.sendto(data, self._address)
        except OSError as e:
            if not self._failing:
                self._failing = True
                log.debug("sd_notify to %r failed (%s); not logging more", self._address, e)
            return False
        self._failing = False
        return True


__all__ = ["Notifier", "monotonic_usec", "socket_address", "watchdog_seconds"]
