"""announcer.sdnotify without sockets: NOTIFY_SOCKET and WATCHDOG_* parsing, the no-op cases.

Sending to real AF_UNIX datagram sockets is in tests/adapters/test_sdnotify_socket.py.
"""

from __future__ import annotations

import os

import pytest

from announcer.sdnotify import Notifier, socket_address, watchdog_seconds


def test_from_env_unsets_the_variables() -> None:
    env = {
        "NOTIFY_SOCKET": "@x",
        "WATCHDOG_USEC": "10000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/usr/bin",
    }
    n = Notifier.from_env(env)
    assert env == {"PATH": "/usr/bin"}  # children (command checks) inherit none of it
    assert n.watchdog_interval == 10.0


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@announcer-test-unused")
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    n = Notifier.from_env()
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert n.watchdog_interval == 4.0


def test_no_socket_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert n.watchdog_interval is None
    assert not n.ready("x")
    assert not n.watchdog()
    assert not n.stopping()
    assert not n.reloading()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 10.0),
        ("500000", "OWN", 0.5),
        ("10000000", "1", None),  # another process's watchdog (e.g. ours is a child)
        ("10000000", "garbage", None),
        ("0", None, None),
        ("-5", None, None),
        ("ten", None, None),
        (None, "OWN", None),
        ("", None, None),
    ],
)
def test_watchdog_seconds(usec: str | None, pid: str | None, expected: float | None) -> None:
    own = os.getpid()
    assert watchdog_seconds(usec, str(own) if pid == "OWN" else pid, own) == expected


def test_watchdog_pid_is_honoured() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(env).watchdog_interval is None


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract", "\0abstract"),
        ("@", None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_socket_address(value: str, address: str | None) -> None:
    assert socket_address(value) == address


def test_unsupported_socket_disables() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.ready()


