"""tests/support/supervisor.py, the systemd emulation, with tiny Python services.

The services speak through announcer.sdnotify.Notifier, so these tests also show our
notifier working against a service manager that checks the sender's PID
(NotifyAccess=main) and sets WATCHDOG_PID the way systemd does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.supervisor import Supervisor, SupervisorError

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import os, sys, time
from pathlib import Path
from announcer.sdnotify import Notifier
n = Notifier.from_env()
counter = Path(sys.argv[1])
run = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(run + 1))
"""

# Pings, then (first run only) hangs like a stuck main loop; later runs stay healthy.
HANGS_ONCE = """
assert n.watchdog_interval is not None, "WATCHDOG_PID/WATCHDOG_USEC not for us"
assert "NOTIFY_SOCKET" not in os.environ
n.ready(f"run {run}")
for _ in range(3):
    n.watchdog()
    time.sleep(n.watchdog_interval / 4)
if run == 0:
    time.sleep(60)
while True:
    n.watchdog()
    time.sleep(n.watchdog_interval / 2)
"""

EXITS = """
n.ready()
sys.exit(int(sys.argv[2]))
"""

# Like announcer and its keeper: the child ignores SIGTERM, outlives the main process
# by a moment, and its notifications are not the main PID's.
CRASHES_WITH_KEEPER = """
if run == 0:
    n.ready("run 0")
    if os.fork() == 0:
        signal = __import__("signal")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        n.status("from the keeper")
        time.sleep(0.5)
        Path(sys.argv[1] + ".keeper-done").write_text(repr(time.monotonic()))
        os._exit(0)
    time.sleep(0.2)
    os._exit(3)
n.ready(f"run {run}")
time.sleep(60)
"""

# A child that ignores SIGTERM for good: only SIGKILL ends it.
STUBBORN = """
import signal
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(sys.argv[1] + ".child").write_text(str(os.getpid()))
    time.sleep(60)
    os._exit(0)
while not Path(sys.argv[1] + ".child").exists():
    time.sleep(0.01)
n.ready()
time.sleep(60)
"""


def _supervisor(tmp_path: Path, body: str, *args: str, **kw: object) -> Supervisor:
    script = tmp_path / "service.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONFAULTHANDLER="1")
    argv = [sys.executable, str(script), str(tmp_path / "runs"), *args]
    return Supervisor(argv, env, log_path=tmp_path / "service.log", **kw)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_watchdog_aborts_a_hung_service_and_restarts_it(tmp_path: Path) -> None:
    with _supervisor(tmp_path, HANGS_ONCE, watchdog_sec=0.4, restart_sec=0.05) as sup:
        sup.start()
        first = sup.wait_ready(5).pid
        sup.wait_restarts(1, timeout=5)
        second = sup.wait_ready(5).pid
        assert second != first
        assert sup.main_pid == second
        exit_ = sup.stop(timeout=5)
        assert exit_ is not None and exit_.result == "success"  # SIGTERM is a clean stop

    aborted, stopped = sup.exits
    assert (aborted.pid, aborted.result, aborted.restarted) == (first, "watchdog", True)
    assert aborted.returncode == -signal.SIGABRT
    assert (stopped.pid, stopped.returncode, stopped.restarted) == (second, -signal.SIGTERM, False)
    assert sup.values("STATUS") == ["run 0", "run 1"]
    assert sup.values("WATCHDOG").count("1") >= 3
    assert all(m.accepted for m in sup.messages)
    assert sup.state == "inactive"
    # PYTHONFAULTHANDLER=1 (as in the unit): the abort left a traceback of the hang.
    log = (tmp_path / "service.log").read_text()
    assert "Fatal Python error: Aborted" in log
    assert "Current thread" in log and "service.py" in log


def test_exit_78_is_not_restarted(tmp_path: Path) -> None:
    with _supervisor(tmp_path, EXITS, "78", restart_sec=0.05) as sup:
        sup.start()
        assert sup.wait_state("failed", timeout=5) == "failed"
        time.sleep(0.2)  # longer than RestartSec: still no restart
        assert sup.restarts == 0
        assert [(e.returncode, e.result, e.restarted) for e in sup.exits] == [
            (78, "exit-code", False)
        ]
        with pytest.raises(SupervisorError, match="failed before READY"):
            sup.wait_ready(1)


def test_other_failures_are_restarted(tmp_path: Path) -> None:
    # The contrast to exit 78: exit 1 is retried (so the test above can fail).
    with _supervisor(tmp_path, EXITS, "1", restart_sec=0.05) as sup:
        sup.start()
        sup.wait_restarts(2, timeout=5)
        sup.stop(timeout=5)
    assert [e.returncode for e in sup.exits[:2]] == [1, 1]
    assert all(e.restarted for e in sup.exits[:2])


def test_clean_exit_is_not_restarted(tmp_path: Path) -> None:
    with _supervisor(tmp_path, EXITS, "0", restart_sec=0.05) as sup:
        sup.start()
        assert sup.wait_state("inactive", timeout=5) == "inactive"
        assert [(e.result, e.restarted) for e in sup.exits] == [("success", False)]


def test_restart_waits_for_the_keeper_and_rejects_its_messages(tmp_path: Path) -> None:
    with _supervisor(tmp_path, CRASHES_WITH_KEEPER, restart_sec=0.05, stop_timeout=3) as sup:
        sup.start()
        sup.wait_ready(5)
        sup.wait_restarts(1, timeout=5)
        sup.wait_ready(5)
        sup.stop(timeout=5)
    crashed = sup.exits[0]
    assert (crashed.returncode, crashed.result, crashed.restarted) == (3, "exit-code", True)
    # The keeper got SIGTERM (ignored it) and finished before the restart, the way
    # systemd empties the cgroup before Restart= (KillMode=control-group).
    keeper_done = float((tmp_path / "runs.keeper-done").read_text())
    assert keeper_done <= crashed.time
    rejected = [m for m in sup.messages if not m.accepted]
    assert [m.get("STATUS") for m in rejected] == ["from the keeper"]
    assert sup.values("STATUS") == ["run 0", "run 1"]


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    with _supervisor(tmp_path, STUBBORN, stop_timeout=0.3) as sup:
        sup.start()
        sup.wait_ready(5)
        child = int((tmp_path / "runs.child").read_text())
        assert _alive(child)
        exit_ = sup.stop(timeout=5)
        assert exit_ is not None and exit_.result == "timeout"  # systemd: "timed out. Killing."
        assert sup.state == "failed"
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def test_start_timeout(tmp_path: Path) -> None:
    body = "time.sleep(60)\n"  # never READY=1
    with _supervisor(tmp_path, body, restart="no", start_timeout=0.3) as sup:
        sup.start()
        with pytest.raises(SupervisorError, match="failed before READY"):
            sup.wait_ready(5)
    assert [(e.result, e.returncode) for e in sup.exits] == [("timeout", -signal.SIGTERM)]


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root")
    name = f"sup-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.lab
def test_netns_main_pid_is_the_command(tmp_path: Path, netns: str) -> None:
    body = "n.ready(str(os.getpid()))\nassert n.watchdog_interval\ntime.sleep(60)\n"
    with _supervisor(tmp_path, body, netns=netns, watchdog_sec=5) as sup:
        sup.start()
        ready = sup.wait_ready(5)
        pid = sup.main_pid
        assert pid is not None and ready.pid == pid
        assert ready.get("STATUS") == str(pid)  # ip netns exec and sh both exec'd
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
        sup.stop(timeout=5)
    assert not _alive(pid)
