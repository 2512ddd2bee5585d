"""A small emulation of systemd's service manager, for one Type=notify service.

No systemd runs on the test host (PID 1 is not systemd), so the lab tests run
announcer under this instead, with the settings of systemd/announcer.service. What is
emulated, and how faithfully (checked against systemd 252's src/core/service.c):

* NOTIFY_SOCKET: a datagram socket we own. A *path* socket, not an abstract one:
  abstract unix sockets belong to a network namespace, and the command may run in
  another (`netns=`). SO_PASSCRED gives each datagram's sender PID; like
  NotifyAccess=main, only the main PID's messages count (others are recorded with
  accepted=False, the way systemd logs and drops them).
* WATCHDOG_USEC and WATCHDOG_PID: the command is started through `sh -c 'export
  WATCHDOG_PID=$$; exec "$@"'` (after `ip netns exec NAME` when in a namespace); both
  exec, so the PID we watch is the command's own.
* Type=notify: the start ends with READY=1; no READY=1 within `start_timeout`
  (TimeoutStartSec) is a failure ("timeout") and the service is stopped.
* WatchdogSec: armed by READY=1 and re-armed by every WATCHDOG=1, off while stopping
  (systemd stops the watchdog outside the running/reload states). On expiry, or on
  WATCHDOG=trigger, the whole group gets WatchdogSignal (SIGABRT), then SIGKILL after
  `abort_timeout` (TimeoutAbortSec, which defaults to TimeoutStopSec). WATCHDOG_USEC=
  in a message changes the period, as in systemd.
* KillMode=control-group: the command runs in a session of its own and its process
  group stands in for the cgroup. Every signal goes to the group, with SIGCONT as
  systemd does (so a SIGSTOPped process dies too). When the main process exits, the
  rest of the group (announcer's keeper) gets SIGTERM and `stop_timeout` to go away,
  then SIGKILL; only then is the service restarted. Unlike a cgroup, a process that
  calls setsid() escapes this.
* Restart=on-failure with RestartSec and RestartPreventExitStatus: a clean exit (0, or
  death by SIGHUP, SIGINT, SIGTERM or SIGPIPE, systemd's clean signals) is not
  restarted, nor is an exit status in `restart_prevent_exit_status`; any other exit,
  a watchdog abort or a start timeout is. No start rate limit (the unit sets
  StartLimitIntervalSec=0).
* STOPPING=1: the service is deactivating; it must exit within `stop_timeout` or it
  is SIGKILLed. RELOADING=1 ... READY=1 is a reload. EXTEND_TIMEOUT_USEC= extends the
  start or stop deadline.
* `stop()` is `systemctl stop`: SIGTERM to the group, `stop_timeout`, SIGKILL; never
  restarted. `reload()` is ExecReload=kill -HUP $MAINPID.

Not emulated: the sandboxing and credentials of the unit, ExecStartPre/ExecStop,
StartLimit*, and the exact sub-states (`state` is a simplified ActiveState).

Usage::

    with Supervisor(argv, env, watchdog_sec=2, restart_sec=0.5, log_path=p) as sup:
        sup.start()
        sup.wait_ready(30)
        os.kill(sup.main_pid, signal.SIGKILL)
        sup.wait_restarts(1, timeout=10)
        sup.wait_ready(30)
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
_WRAPPER = 'ulimit -c 0; WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"'
_TICK = 0.02  # how often the monitor thread looks at the child and the clocks

State = Literal["inactive", "activating", "active", "reloading", "deactivating", "failed"]
Result = Literal["success", "exit-code", "signal", "watchdog", "timeout"]


class SupervisorError(Exception):
    """The supervised service did not do what a wait_* call expected."""


@dataclass(frozen=True)
class Notification:
    """One datagram received on NOTIFY_SOCKET."""

    time: float  # time.monotonic()
    pid: int  # the sender (SCM_CREDENTIALS)
    fields: tuple[tuple[str, str], ...]
    accepted: bool  # from the main PID (NotifyAccess=main)

    def get(self, key: str) -> str | None:
        """The value of `key` in this message (the last one if repeated), or None."""
        value = None
        for k, v in self.fields:
            if k == key:
                value = v
        return value


@dataclass(frozen=True)
class Exit:
    """How one main process ended."""

    time: float  # time.monotonic() when the whole group was gone (the service stopped)
    pid: int
    returncode: int  # Popen's: negative is "killed by that signal"
    result: Result  # systemd's Result= for this run
    restarted: bool  # whether Restart= started it again


class Supervisor:
    """Run one command the way systemd runs announcer.service; see the module docstring."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        watchdog_sec: float | None = None,
        restart_sec: float = 0.1,
        log_path: Path,
        netns: str | None = None,
        restart: Literal["no", "on-failure", "always"] = "on-failure",
        restart_prevent_exit_status: Collection[int] = (78,),
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        abort_timeout: float | None = None,
        watchdog_signal: int = signal.SIGABRT,
    ) -> None:
        if not argv:
            raise ValueError("empty argv")
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(key, None)
        self.watchdog_sec = watchdog_sec
        self.restart_sec = restart_sec
        self.log_path = log_path
        self.netns = netns
        self.restart = restart
        self.restart_prevent_exit_status = frozenset(restart_prevent_exit_status)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.abort_timeout = stop_timeout if abort_timeout is None else abort_timeout
        self.watchdog_signal = watchdog_signal

        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._dir: Path | None = None
        self._sock: socket.socket | None = None
        self._log: list[tuple[float, str]] = []
        self._messages: list[Notification] = []
        self._exits: list[Exit] = []
        self._restarts = 0
        self._state: State = "inactive"
        # The current run, all guarded by _cond:
        self._popen: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self._stop_requested = False
        self._result: Result = "success"
        self._start_deadline: float | None = None
        self._watchdog_deadline: float | None = None
        self._watchdog_period = watchdog_sec
        self._kill_deadline: float | None = None  # SIGKILL the group at this time
        self._leftovers_since: float | None = None  # main exited, waiting for the group
        self._restart_at: float | None = None

    # ------------------------------------------------------------ public API

    def start(self) -> Supervisor:
        """Start the service (like `systemctl start`); returns at once, see wait_ready()."""
        with self._cond:
            if self._closing:
                raise SupervisorError("supervisor is closed")
            if self._state not in ("inactive", "failed"):
                raise SupervisorError(f"cannot start: service is {self._state}")
            if self._sock is None:
                self._open_socket()
            self._stop_requested = False
            self._spawn()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"supervisor-{Path(self.argv[0]).name}", daemon=True
                )
                self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> Exit | None:
        """`systemctl stop`: SIGTERM the group, SIGKILL after stop_timeout; the last Exit."""
        with self._cond:
            self._stop_requested = True
            self._restart_at = None
            if self._popen is not None and self._popen.poll() is None and self._thread is not None:
                if self._state not in ("deactivating",) or self._kill_deadline is None:
                    self._set_state("deactivating", "stop requested")
                    self._signal_group(signal.SIGTERM)
                    self._kill_deadline = time.monotonic() + self.stop_timeout
                    self._watchdog_deadline = None
                    self._start_deadline = None
            elif self._popen is None and self._state != "failed":
                self._set_state("inactive", "stop requested")
            limit = (self.stop_timeout * 2 + 5.0) if timeout is None else timeout
            self._wait_locked(
                lambda: self._popen is None and self._state in ("inactive", "failed"),
                limit,
                "service to stop",
            )
            return self._exits[-1] if self._exits else None

    def close(self) -> None:
        """Stop the service, end the monitor thread and remove the socket directory."""
        try:
            self.stop()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                thread = self._thread
            if thread is not None:
                thread.join(timeout=5.0)
            with self._cond:
                self._thread = None
                if self._popen is not None:  # stop() timed out: never leave it running
                    self._signal_group(signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._popen.wait(timeout=5.0)
                    self._popen = None
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                if self._dir is not None:
                    shutil.rmtree(self._dir, ignore_errors=True)
                    self._dir = None

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def signal(self, sig: int) -> None:
        """Send `sig` to the main process only (SIGHUP, SIGKILL for a crash, SIGSTOP...)."""
        with self._cond:
            if self._popen is None or self._popen.poll() is not None:
                raise SupervisorError(f"no main process to signal (service is {self._state})")
            self._note(f"sending {signal.Signals(sig).name} to main pid {self._popen.pid}")
            os.kill(self._popen.pid, sig)

    def reload(self) -> None:
        """ExecReload=/bin/kill -HUP $MAINPID."""
        self.signal(signal.SIGHUP)

    def wait_ready(self, timeout: float) -> Notification:
        """Wait until the current main process has sent READY=1; its message."""

        def ready() -> bool:
            if self._state in ("failed", "inactive"):
                raise SupervisorError(f"service is {self._state} before READY=1\n{self.log_tail()}")
            return self._state == "active" and self._ready_message() is not None

        with self._cond:
            self._wait_locked(ready, timeout, "READY=1")
            msg = self._ready_message()
            assert msg is not None
            return msg

    def wait_restarts(self, count: int, timeout: float) -> None:
        """Wait until the service has been restarted `count` times in all."""
        with self._cond:
            self._wait_locked(lambda: self._restarts >= count, timeout, f"{count} restart(s)")

    def wait_state(self, *states: State, timeout: float) -> State:
        """Wait until the service is in one of `states`; returns it."""
        with self._cond:
            self._wait_locked(lambda: self._state in states, timeout, f"state in {states}")
            return self._state

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until `predicate()` (called with the supervisor's lock held) is true."""
        with self._cond:
            self._wait_locked(predicate, timeout, what)

    @property
    def state(self) -> State:
        """inactive, activating, active, reloading, deactivating or failed."""
        with self._cond:
            return self._state

    @property
    def main_pid(self) -> int | None:
        """The running main process's PID (the command's own, even through ip netns exec)."""
        with self._cond:
            if self._popen is None or self._popen.returncode is not None:
                return None
            return self._popen.pid

    @property
    def messages(self) -> list[Notification]:
        """Every notification received so far, accepted or not, oldest first."""
        with self._cond:
            return list(self._messages)

    def values(self, key: str) -> list[str]:
        """The values of `key` in accepted messages, oldest first (e.g. values("STATUS"))."""
        with self._cond:
            return [v for m in self._messages if m.accepted for k, v in m.fields if k == key]

    @property
    def exits(self) -> list[Exit]:
        """How each main process ended, oldest first."""
        with self._cond:
            return list(self._exits)

    @property
    def restarts(self) -> int:
        """How many times Restart= started the service again."""
        with self._cond:
            return self._restarts

    @property
    def events(self) -> list[tuple[float, str]]:
        """The supervisor's own log (also appended to log_path), oldest first."""
        with self._cond:
            return list(self._log)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of log_path: the command's output and our events."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------ internals (lock held)

    def _open_socket(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="announcer-sup-"))
        # Traversable by anyone: the command may run as another user.
        self._dir.chmod(0o755)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self._dir / "notify"))
        (self._dir / "notify").chmod(0o777)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self._sock = sock

    def _command(self) -> list[str]:
        argv = list(self.argv)
        if self.watchdog_sec is not None:
            argv = ["/bin/sh", "-c", _WRAPPER, "supervised", *argv]
        else:
            argv = ["/bin/sh", "-c", 'ulimit -c 0; exec "$@"', "supervised", *argv]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def _spawn(self) -> None:
        assert self._dir is not None
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = str(self._dir / "notify")
        if self.watchdog_sec is not None:
            env["WATCHDOG_USEC"] = str(round(self.watchdog_sec * 1e6))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self._command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session and process group: our stand-in for the cgroup.
                start_new_session=True,
            )
        self._pgid = self._popen.pid
        self._result = "success"
        self._watchdog_period = self.watchdog_sec
        self._watchdog_deadline = None
        self._kill_deadline = None
        self._leftovers_since = None
        self._restart_at = None
        self._start_deadline = time.monotonic() + self.start_timeout
        self._set_state("activating", f"started main pid {self._popen.pid}: {' '.join(self.argv)}")

    def _note(self, text: str) -> None:
        now = time.monotonic()
        self._log.append((now, text))
        with contextlib.suppress(OSError), open(self.log_path, "a") as f:
            f.write(f"--- supervisor {time.strftime('%H:%M:%S')}: {text}\n")

    def _set_state(self, state: State, why: str) -> None:
        if state != self._state:
            self._note(f"{self._state} -> {state}: {why}")
        self._state = state
        self._cond.notify_all()

    def _ready_message(self) -> Notification | None:
        pid = self._popen.pid if self._popen is not None else None
        for m in reversed(self._messages):
            if m.accepted and m.pid == pid and m.get("READY") == "1":
                return m
        return None

    def _wait_locked(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self._closing:
                raise SupervisorError(
                    f"timed out after {timeout}s waiting for {what}; service is {self._state}"
                    f"\n{self.log_tail()}"
                )
            self._cond.wait(min(left, 0.1))

    def _signal_group(self, sig: int) -> None:
        """Like systemd's cgroup kill: `sig` to every process of the group, plus SIGCONT."""
        if self._pgid is None:
            return
        # Noted first: the output it provokes (a traceback) should follow, not split, it.
        self._note(f"sending {signal.Signals(sig).name} to process group {self._pgid}")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)
            if sig != signal.SIGKILL:
                os.killpg(self._pgid, signal.SIGCONT)

    def _group_alive(self) -> bool:
        """True while a live (non-zombie) process is left in the group."""
        if self._pgid is None:
            return False
        try:
            os.killpg(self._pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        # killpg also succeeds for zombies, which an orphaned child becomes when the
        # container's PID 1 does not reap: look at /proc for a live member.
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2 :].split()
                if fields[0] != "Z" and int(fields[2]) == self._pgid:
                    return True
        return False

    # ------------------------------------------------------------ the monitor thread

    def _run(self) -> None:
        while True:
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError, ValueError):
                    select.select([sock], [], [], _TICK)
            else:
                time.sleep(_TICK)
            with self._cond:
                if self._closing:
                    return
                self._receive()
                self._tick(time.monotonic())

    def _receive(self) -> None:
        if self._sock is None:
            return
        while True:
            try:
                data, anc, _flags, _addr = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self._handle(pid, data)

    def _handle(self, pid: int, data: bytes) -> None:
        lines = data.decode(errors="replace").split("\n")
        fields = tuple((k, v) for k, sep, v in (line.partition("=") for line in lines) if sep)
        now = time.monotonic()
        main = self._popen.pid if self._popen is not None else None
        accepted = pid == main and main is not None
        msg = Notification(time=now, pid=pid, fields=fields, accepted=accepted)
        self._messages.append(msg)
        if not accepted:
            self._note(f"rejected notification from pid {pid} (main pid {main}): {fields}")
            self._cond.notify_all()
            return
        stopping = self._state in ("deactivating", "inactive", "failed")
        if (usec := msg.get("WATCHDOG_USEC")) is not None and usec.isdigit():
            self._watchdog_period = int(usec) / 1e6 if int(usec) > 0 else None
            if not stopping:
                self._arm_watchdog(now)
        if msg.get("READY") == "1" and self._state in ("activating", "reloading"):
            self._start_deadline = None
            self._set_state("active", "READY=1")
            self._arm_watchdog(now)
        if msg.get("RELOADING") == "1" and self._state == "active":
            self._set_state("reloading", "RELOADING=1")
        if msg.get("STOPPING") == "1" and not stopping:
            self._set_state("deactivating", "STOPPING=1")
            self._watchdog_deadline = None
            self._start_deadline = None
            self._kill_deadline = now + self.stop_timeout
        if (extend := msg.get("EXTEND_TIMEOUT_USEC")) is not None and extend.isdigit():
            until = now + int(extend) / 1e6
            if self._start_deadline is not None:
                self._start_deadline = max(self._start_deadline, until)
            if self._kill_deadline is not None and self._state == "deactivating":
                self._kill_deadline = max(self._kill_deadline, until)
        watchdog = msg.get("WATCHDOG")
        if watchdog == "1" and not stopping:
            self._arm_watchdog(now)
        elif watchdog == "trigger" and not stopping:
            self._watchdog_expired("WATCHDOG=trigger")
        self._cond.notify_all()

    def _arm_watchdog(self, now: float) -> None:
        if self._watchdog_period is not None:
            self._watchdog_deadline = now + self._watchdog_period

    def _watchdog_expired(self, why: str) -> None:
        self._note(f"watchdog: {why}")
        self._result = "watchdog"
        self._watchdog_deadline = None
        self._start_deadline = None
        self._set_state("deactivating", why)
        self._signal_group(self.watchdog_signal)
        self._kill_deadline = time.monotonic() + self.abort_timeout

    def _tick(self, now: float) -> None:
        popen = self._popen
        if popen is not None and popen.returncode is None and popen.poll() is not None:
            self._main_exited(popen, now)
        if self._watchdog_deadline is not None and now >= self._watchdog_deadline:
            self._watchdog_expired(f"no WATCHDOG=1 for {self._watchdog_period}s")
        if self._start_deadline is not None and now >= self._start_deadline:
            self._note(f"start timed out after {self.start_timeout}s")
            self._result = "timeout"
            self._start_deadline = None
            self._set_state("deactivating", "start timeout")
            self._signal_group(signal.SIGTERM)
            self._kill_deadline = now + self.stop_timeout
        if self._kill_deadline is not None and now >= self._kill_deadline:
            self._kill_deadline = None
            if self._result == "success":
                self._result = "timeout"
            self._signal_group(signal.SIGKILL)
        if self._leftovers_since is not None and not self._group_alive():
            self._leftovers_since = None
            self._kill_deadline = None
            self._finish(time.monotonic())
        if self._restart_at is not None and now >= self._restart_at and not self._stop_requested:
            self._restart_at = None
            self._restarts += 1
            self._note(f"restart #{self._restarts}")
            self._spawn()

    def _main_exited(self, popen: subprocess.Popen[bytes], now: float) -> None:
        rc = popen.returncode
        assert rc is not None
        if self._result == "success":
            if rc > 0:
                self._result = "exit-code"
            elif rc < 0 and -rc not in CLEAN_SIGNALS:
                self._result = "signal"
        how = f"exit status {rc}" if rc >= 0 else f"signal {signal.Signals(-rc).name}"
        self._note(f"main pid {popen.pid} ended ({how}), result {self._result}")
        self._watchdog_deadline = None
        self._start_deadline = None
        if self._state != "deactivating":
            self._set_state("deactivating", "main process exited")
        # control-group: what is left of the group (the keeper) gets SIGTERM and a
        # fresh stop timeout, then SIGKILL, before anything is restarted.
        self._leftovers_since = now
        if self._group_alive():
            self._signal_group(signal.SIGTERM)
            self._kill_deadline = now + self.stop_timeout
        else:
            self._kill_deadline = None

    def _finish(self, now: float) -> None:
        popen = self._popen
        assert popen is not None and popen.returncode is not None
        rc = popen.returncode
        restart = (
            not self._stop_requested
            and not (rc >= 0 and rc in self.restart_prevent_exit_status)
            and (
                self.restart == "always"
                or (self.restart == "on-failure" and self._result != "success")
            )
        )
        self._exits.append(Exit(now, popen.pid, rc, self._result, restart))
        self._popen = None
        self._pgid = None
        if restart:
            self._restart_at = now + self.restart_sec
            self._set_state("activating", f"auto-restart in {self.restart_sec}s")
        elif self._result == "success":
            self._set_state("inactive", "result success")
        else:
            self._set_state("failed", f"result {self._result}, exit {rc}")
