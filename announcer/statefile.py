"""The state directory: small files written so that a crash or a full disk loses nothing.

Drains live here (`drains.json`): what an operator drained must still be drained after
a restart, and what they undrained must not come back drained. So:

* a write either lands whole or not at all: a temporary file opened with
  `O_CREAT|O_EXCL|O_NOFOLLOW` (a planted symlink cannot redirect it), written,
  fsynced, renamed over the old file, and the directory fsynced (the rename itself
  survives a power cut). Any failure raises `StateError`, which the control request
  reports to the operator instead of printing success;
* the directory must be ours: a state directory that other users can write could
  get a `drains.json` planted that drains the whole host at the next start, so one
  writable by group or others, or owned by another user, is refused (nothing is
  read from it or written to it) with an error naming it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from .errors import AnnouncerError

MAX_STATE_BYTES = 1 << 20  # a drains file is a few KiB even with 10 000 VIPs drained


class StateError(AnnouncerError):
    """The state directory or one of its files cannot be used."""


def check_dir(path: Path) -> None:
    """Create the state directory if missing; raise StateError if others could write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise StateError(f"state directory {path}: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        # systemd's StateDirectory= with DynamicUser= is /var/lib/announcer ->
        # private/announcer: follow a link only to a directory that passes the checks.
        st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"state directory {path} is not a directory")
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise StateError(f"state directory {path} belongs to uid {st.st_uid}, not to us ({me})")
    if st.st_mode & 0o022:
        raise StateError(
            f"state directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w it"
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, durably, or raise StateError leaving the old file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # our own leftover from a crash in the middle of a write
        fd = os.open(tmp, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {e.strerror or e}") from None


def read(path: Path) -> bytes | None:
    """The file's bytes, None if it does not exist; StateError if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"{path} is larger than {MAX_STATE_BYTES} bytes")
    return data
