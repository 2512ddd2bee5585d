"""One announcer per control socket: an exclusive lock taken before anything else.

Two announcers steering one gobgpd fight: the second one (an operator's manual
`announcer run` beside the unit) used to delete the first one's control socket,
withdraw everything on its own SIGTERM, and its keeper disabled the peers when it
was killed, all while the first one kept running. So `run` first takes an exclusive
`flock` on a file beside the control socket (`<control_socket>.lock`, in systemd's
RuntimeDirectory), before it starts the keeper, binds a socket or talks to gobgpd.
A second instance finds the lock taken, says who holds it, and exits having touched
nothing. The kernel drops the lock when the holder dies, however it dies, so a
crash never leaves a stale lock behind (the file may stay; the lock does not).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from .errors import AnnouncerError


class AlreadyRunning(AnnouncerError):
    """Another announcer holds the instance lock."""


def lock_path(control_socket: Path) -> Path:
    """The lock file of the announcer that owns `control_socket`."""
    return control_socket.with_name(control_socket.name + ".lock")


class InstanceLock:
    """An exclusive, non-blocking flock held for the life of the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning (or AnnouncerError if the file is unusable)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as e:
            raise AnnouncerError(f"cannot open the instance lock {self.path}: {e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f" (pid {holder})" if holder else ""
                raise AlreadyRunning(
                    f"another announcer{who} is running with the lock {self.path}: "
                    "this one exits without touching gobgpd, the control socket or the "
                    "peers (stop the other one first, e.g. `systemctl stop announcer`)"
                ) from None
            raise AnnouncerError(f"cannot lock {self.path}: {e}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the process exiting does the same)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
