"""Adapter tier: the instance lock, the control socket's path and the state directory,
on real files, sockets, processes and a real full file system (a tiny tmpfs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from announcer import control, statefile
from announcer.instance import AlreadyRunning, InstanceLock, lock_path

# ------------------------------------------------------------------ instance lock


def test_second_lock_in_another_process_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock.lock"
    first = InstanceLock(path)
    first.acquire()
    code = (
        "import sys; from pathlib import Path\n"
        "from announcer.instance import InstanceLock, AlreadyRunning\n"
        f"try:\n    InstanceLock(Path({str(path)!r})).acquire()\n"
        "except AlreadyRunning as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3, out
    assert f"pid {os.getpid()}" in out.stdout
    first.release()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out  # released: the next one gets it


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from announcer.instance import InstanceLock\n"
            f"InstanceLock(Path({str(path)!r})).acquire(); print('held', flush=True)\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning):
            InstanceLock(path).acquire()
        holder.kill()
        holder.wait(10)
        lock = InstanceLock(path)
        lock.acquire()  # SIGKILL left the file, not the lock
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_lock_file_is_never_followed_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    link = tmp_path / "control.sock.lock"
    link.symlink_to(target)
    with pytest.raises(Exception, match="instance lock"):
        InstanceLock(link).acquire()
    assert target.read_text() == "precious\n"


class _Listener:
    """A unix socket that counts who connects: the 'first announcer' and a fake gobgpd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[list[_Listener]]:
    made: list[_Listener] = []
    yield made
    for x in made:
        x.close()


def test_a_second_announcer_exits_75_and_touches_nothing(
    tmp_path: Path, listeners: list[_Listener]
) -> None:
    """The real `announcer run` beside a running one: refused before the keeper, the
    control socket or gobgpd; the first one's socket is still there and still answers."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sock_path = run_dir / "control.sock"
    gobgpd = tmp_path / "gobgpd.sock"
    first_lock = InstanceLock(lock_path(sock_path))
    first_lock.acquire()
    first_socket = _Listener(sock_path)
    fake_gobgpd = _Listener(gobgpd)
    listeners += [first_socket, fake_gobgpd]
    inode = sock_path.stat().st_ino
    cfg = tmp_path / "announcer.yaml"
    cfg.write_text(
        json.dumps(
            {
                "allowed_prefixes": ["192.0.2.0/24"],
                "dataplaneapi": {"password_env": "DPAPI_PW"},
                "gobgp": {"address": f"unix://{gobgpd}"},
                "service": {"control_socket": str(sock_path), "state_dir": None},
                "drain": {"disable_file": None},
                "metrics": {"enabled": False},
            }
        )
    )
    env = {**os.environ, "DPAPI_PW": "secret"}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "announcer.cli", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 75, out
    assert time.monotonic() - started < 30
    assert f"another announcer (pid {os.getpid()})" in out.stderr
    assert sock_path.stat().st_ino == inode  # the first one's socket was not deleted
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(sock_path))  # ...and still answers
    time.sleep(0.3)
    assert fake_gobgpd.accepted == 0  # nothing dialled gobgpd: no keeper, no client
    first_lock.release()


# --------------------------------------------------------------- control socket


class _NoService:
    pass


def _serve(path: Path) -> control.ControlSocket:
    async def go() -> control.ControlSocket:
        return await control.serve(path, _NoService())  # type: ignore[arg-type]

    return asyncio.new_event_loop().run_until_complete(go())


def test_control_socket_replaces_a_regular_file_and_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    loop = asyncio.new_event_loop()
    try:
        ctl = loop.run_until_complete(control.serve(path, _NoService()))  # type: ignore[arg-type]
        assert path.is_socket()
        ctl.close()
        assert not path.exists()
        path.mkdir()
        with pytest.raises(OSError, match="is a directory"):
            loop.run_until_complete(control.serve(path, _NoService()))  # type: ignore[arg-type]
    finally:
        loop.close()


def test_control_socket_close_leaves_someone_elses_socket(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    loop = asyncio.new_event_loop()
    try:
        ctl = loop.run_until_complete(control.serve(path, _NoService()))  # type: ignore[arg-type]
        path.unlink()
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(path))  # another process's socket now sits at the path
        ctl.close()
        assert path.is_socket()  # not ours: left alone
        other.close()
    finally:
        loop.close()


def test_the_cli_client_loads_neither_the_service_nor_grpc() -> None:
    # `announcer status` on a broken LB must not depend on (or pay for) the daemon's
    # machinery: the client half of control.py and the CLI import nothing heavy.
    code = (
        "import sys, announcer.cli\n"
        "rc = announcer.cli.main(['status', '--socket', '/nonexistent'])\n"
        "heavy = sorted(m for m in ('announcer.service', 'grpc') if m in sys.modules)\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert out.stdout.strip() == "69 []", out  # EX_UNAVAILABLE, and nothing heavy loaded
    assert "no control socket at /nonexistent" in out.stderr


# ---------------------------------------------------------------- state directory


def test_write_atomic_replaces_durably_and_refuses_a_planted_symlink(tmp_path: Path) -> None:
    path = tmp_path / "drains.json"
    statefile.write_atomic(path, b"one\n")
    statefile.write_atomic(path, b"two\n")
    assert path.read_bytes() == b"two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["drains.json"]  # no temporary left
    # An attacker's symlink where the temporary file goes must not be followed.
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / f".drains.json.{os.getpid()}.tmp").symlink_to(victim)
    statefile.write_atomic(path, b"three\n")  # our own leftover name: removed, not followed
    assert victim.read_text() == "keep" and path.read_bytes() == b"three\n"
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    with pytest.raises(statefile.StateError):
        statefile.read(link)


def test_state_dir_writable_by_others_or_foreign_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "state"
    statefile.check_dir(d)
    assert (d.stat().st_mode & 0o777) == 0o700
    d.chmod(0o770)
    with pytest.raises(statefile.StateError, match="writable by group or others"):
        statefile.check_dir(d)
    d.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(d, 65534, 65534)
        with pytest.raises(statefile.StateError, match="belongs to uid 65534"):
            statefile.check_dir(d)


@contextlib.contextmanager
def tiny_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI is root)")
def test_disk_full_fails_loudly_and_keeps_the_old_file(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "full") as d:
        path = d / "drains.json"
        statefile.write_atomic(path, b'{"all": false, "vips": ["192.0.2.10"]}\n')
        filler = d / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        with pytest.raises(statefile.StateError, match="No space left"):
            statefile.write_atomic(path, b'{"all": false, "vips": []}\n' + b" " * 8192)
        assert path.read_bytes() == b'{"all": false, "vips": ["192.0.2.10"]}\n'
        assert sorted(p.name for p in d.iterdir()) == ["drains.json", "filler"]
