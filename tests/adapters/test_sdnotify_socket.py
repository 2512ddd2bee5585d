"""announcer.sdnotify against real AF_UNIX datagram sockets (path and abstract).

The pure parts (NOTIFY_SOCKET and WATCHDOG_* parsing) are in tests/unit/test_sdnotify.py.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from announcer.sdnotify import Notifier, monotonic_usec


class Listener:
    """The service manager's end: a bound datagram socket we read messages from."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value  # what NOTIFY_SOCKET would hold

    def recv(self) -> list[str]:
        data = self.sock.recv(4096)
        return data.decode().split("\n")

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)
        return True


def _listener(kind: str, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    if kind == "path":
        path = tmp_path / "notify.sock"
        sock.bind(str(path))
        env_value = str(path)
    else:
        name = f"announcer-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        env_value = "@" + name
    try:
        yield Listener(sock, env_value)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    yield from _listener(request.param, tmp_path)


def test_messages_reach_the_socket(listener: Listener) -> None:
    env = {"NOTIFY_SOCKET": listener.env_value}
    n = Notifier.from_env(env)
    assert n.ready("3 VIPs announced")
    assert listener.recv() == ["READY=1", "STATUS=3 VIPs announced"]
    assert n.ready()
    assert listener.recv() == ["READY=1"]
    assert n.status("syncing\nwith gobgpd")
    assert listener.recv() == ["STATUS=syncing with gobgpd"]  # one line, never a new key
    assert n.watchdog()
    assert listener.recv() == ["WATCHDOG=1"]
    assert n.stopping()
    assert listener.recv() == ["STOPPING=1"]


def test_reloading_carries_monotonic_usec(listener: Listener) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.env_value})
    before = monotonic_usec()
    assert n.reloading()
    first, second = listener.recv()
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= monotonic_usec()


def test_send_errors_never_raise_and_log_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="announcer.sdnotify")
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert not n.ready()
    assert not n.watchdog()
    assert not n.watchdog()
    failures = [r for r in caplog.records if r.name == "announcer.sdnotify"]
    assert len(failures) == 1  # it did try: a notifier without a socket logs nothing
    assert failures[0].levelno == logging.DEBUG
    assert "nobody-listens.sock" in failures[0].getMessage()


def test_logs_again_after_recovering(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="announcer.sdnotify")
    path = tmp_path / "notify.sock"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    assert not n.watchdog()  # nobody listens yet
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert n.watchdog()
        assert sock.recv(64) == b"WATCHDOG=1"
    path.unlink()
    assert not n.watchdog()
    assert len([r for r in caplog.records if r.name == "announcer.sdnotify"]) == 2


def test_full_queue_drops_instead_of_blocking(listener: Listener) -> None:
    # The manager is not reading: the queue fills up and sends start failing
    # (EAGAIN) instead of blocking the caller's event loop.
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.env_value})
    results = [n.watchdog() for _ in range(5000)]
    assert results[0] is True
    assert results[-1] is False
    assert listener.pending()
