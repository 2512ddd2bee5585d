"""The benchmark lab: one FRR router, one load balancer, and the measuring tools.

Built from the pieces of tests/integration/lab.py (namespaces, processes tracked by
PID, FRR started the lab's way, teardown that leaves nothing behind), but smaller:
two namespaces joined by one veth pair, because the scale numbers are about one
LB and one router, and every extra daemon would take CPU from a 2-core machine.

    r1 (FRR zebra + bgpd, AS 65530)  rack 2001:db8:ff::1/64
       |  veth "rack"
    lb1 (gobgpd AS 65512, HAProxy, DataPlaneAPI emulator, announcer or ExaBGP)
         rack 2001:db8:ff::11/64, VIPs 2001:db8:be::/64 on lo

Also here: `RouteWatch` (the router's kernel routes as timestamped events, from
routewatch.py running in r1), `ProcStat` (CPU and memory of processes from /proc),
and `HaproxyRuntime` (HAProxy's stats socket: fail a VIP, count requests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.integration.lab import (
    FrrRouter,
    Lab,
    LabError,
    Netns,
    Proc,
    add_veth,
    bgp_sessions,
    list_netns,
    unix_listening,
    wait_until,
)

HERE = Path(__file__).resolve().parent
ROUTER, LB = "r1", "lb1"
ROUTER_ADDR = "2001:db8:ff::1"
LB_ADDR = "2001:db8:ff::11"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchLab(Lab):
    """r1 and lb1 only; gobgpd on lb1 and FRR on r1 run once the lab is entered."""

    def __init__(self, prefix: str | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(prefix, frr_config_dir=HERE, gobgp_config_dir=HERE, timeout=timeout)
        self.nodes = {n: Netns(self.prefix + n) for n in (ROUTER, LB)}

    @property
    def gobgpd_argv(self) -> list[str]:
        """gobgpd on lb1, its API on the lab's group-only socket (see lab.py, traps)."""
        return [
            "gobgpd", "-t", "toml", "-f", str(HERE / "gobgpd-lb1.toml"),
            "--api-hosts", f"unix://{self.api_socket(LB)}", "--pprof-disable", "-p",
        ]  # fmt: skip

    def __enter__(self) -> BenchLab:
        super().__enter__()
        return self

    def build(self) -> None:
        """Namespaces, the veth, addresses; gobgpd, then FRR.

        gobgpd's neighbor is admin-down (fate-sharing), so the session comes up only
        once announcer has injected its set and enabled it.
        """
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}lab-"))
        self.tmp.chmod(0o755)  # FRR runs as user frr below it
        self._write_state()
        taken = [n for n in list_netns() if n.startswith(self.prefix)]
        if taken:
            raise LabError(f"prefix {self.prefix} in use by {taken}")
        for ns in self.nodes.values():
            ns.add()
            self.created.append(ns)
            ns.prepare()
        r1, lb1 = self.nodes[ROUTER], self.nodes[LB]
        add_veth(r1, "rack", lb1, "rack")
        r1.add_addr("rack", f"{ROUTER_ADDR}/64")
        lb1.add_addr("rack", f"{LB_ADDR}/64")
        r1.sysctl("net.ipv6.conf.all.forwarding", "1")
        self.start_gobgpd()
        self._start_router()

    def restart_gobgpd(self) -> Proc:
        """A fresh gobgpd: empty RIB, neighbor admin-down."""
        if "lb1-gobgpd" in self.procs.procs:
            self.stop("lb1-gobgpd", timeout=10)
        return self.start_gobgpd()

    def start_gobgpd(self) -> Proc:
        """Start gobgpd on lb1 and wait until its API listens."""
        proc = self.start(LB, self.gobgpd_argv, name="lb1-gobgpd")

        def ready() -> bool:
            if not proc.alive():
                raise LabError(f"gobgpd exited:\n{proc.log_tail()}")
            return unix_listening(self.api_socket(LB))

        wait_until(ready, timeout=self.timeout, interval=0.02, what="lb1: gobgpd API")
        return proc

    def _start_router(self) -> None:
        assert self.tmp is not None
        run_dir = self.tmp / ROUTER
        run_dir.mkdir(exist_ok=True)
        config = run_dir / "frr.conf"
        shutil.copyfile(HERE / "frr-r1.conf", config)
        (run_dir / "empty.conf").write_text("")
        for p in (run_dir, config, run_dir / "empty.conf"):
            shutil.chown(p, "frr", "frr")
        router = FrrRouter(ROUTER, self.nodes[ROUTER], run_dir, config)
        self.routers[ROUTER] = router
        for daemon in ("zebra", "bgpd"):
            self._wait_frr_daemon(router, daemon, self._spawn_frr_daemon(router, daemon))

    def session_state(self) -> str:
        """FRR's state of the session to lb1."""
        return bgp_sessions(self.routers[ROUTER]).get(LB_ADDR, "?")

    def wait_session(self, timeout: float | None = None) -> float:
        """Wait until r1's session to lb1 is Established; returns when it was seen."""
        wait_until(
            self.session_state,
            timeout=timeout or self.timeout,
            interval=0.05,
            check=lambda s: s == "Established",
            what="r1: BGP session to lb1 Established",
        )
        return time.time()

    def local_vips(self, net: str) -> None:
        """Make every address of `net` local to lb1 (AnyIP: one `local` route on `lo`).

        Not 10 000 addresses on `lo`: adding them takes the kernel minutes of CPU
        (every IPv6 address brings its own local route and multicast group), and the
        responder listens on a wildcard anyway (gen.responder_cfg).
        """
        self.ns(LB).ip("-6", "route", "replace", "local", net, "dev", "lo")

    def unlocal_vips(self, net: str) -> None:
        self.ns(LB).ip("-6", "route", "del", "local", net, "dev", "lo", check=False)


# ------------------------------------------------------------------ route events


class RouteWatch:
    """The router's kernel host routes, kept current from routewatch.py's output.

    `present` maps each prefix to the time it was (last) installed; `gone` maps a
    prefix to the time of its last deletion. The router's kernel table is what zebra
    installed from the BGP RIB, so "in the FIB" is the strictest meaning of "the
    router has it".
    """

    def __init__(self, lab: Lab, node: str = ROUTER) -> None:
        self.lab = lab
        self.name = f"{node}-routewatch"
        self.proc = lab.start(
            node, [sys.executable, "-u", str(HERE / "routewatch.py")], name=self.name
        )
        self.present: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.events = 0
        self.overflows = 0
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tail, name="routewatch", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise LabError(f"routewatch did not start:\n{self.proc.log_tail()}")

    def _tail(self) -> None:
        with open(self.proc.log_path, errors="replace") as f:
            buf = ""
            while not self._stop.is_set():
                chunk = f.read()
                if not chunk:
                    time.sleep(0.005)
                    continue
                buf += chunk
                *lines, buf = buf.split("\n")
                with self._cond:
                    for line in lines:
                        self._line(line)
                    self._cond.notify_all()

    def _line(self, line: str) -> None:
        parts = line.split()
        if len(parts) < 2:
            return
        t = float(parts[0])
        if parts[1] == "ready":
            self._ready.set()
        elif parts[1] == "overflow":
            self.overflows += 1
        elif len(parts) == 3 and parts[1] == "+":
            self.events += 1
            self.present.setdefault(parts[2], t)
        elif len(parts) == 3 and parts[1] == "-":
            self.events += 1
            self.present.pop(parts[2], None)
            self.gone[parts[2]] = t

    def count(self, prefixes: set[str] | None = None) -> int:
        with self._cond:
            if prefixes is None:
                return len(self.present)
            return sum(1 for p in prefixes if p in self.present)

    def wait(self, pred: object, timeout: float) -> bool:
        """Wait until `pred()` (called with the lock held) is true; False on timeout."""
        assert callable(pred)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def wait_all(self, prefixes: set[str], timeout: float, since: float = 0.0) -> float | None:
        """Wait until every prefix is installed (at or after `since`, a time.time());
        the time the last one arrived, or None."""

        def installed(p: str) -> bool:
            return p in self.present and self.present[p] >= since

        if not self.wait(lambda: all(installed(p) for p in prefixes), timeout):
            return None
        with self._cond:
            return max((self.present[p] for p in prefixes), default=time.time())

    def wait_none(self, prefixes: set[str], timeout: float) -> float | None:
        """Wait until none of the prefixes is installed; when the last one left, or None."""
        if not self.wait(lambda: not any(p in self.present for p in prefixes), timeout):
            return None
        with self._cond:
            return max((self.gone.get(p, 0.0) for p in prefixes), default=time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(LabError):
            self.lab.stop(self.name, timeout=2)


# ------------------------------------------------------------------ /proc


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    ticks: int  # utime + stime (+ reaped children's, when asked), summed over the PIDs


def cpu_ticks(pid: int, *, children: bool = False) -> int:
    """utime + stime of a process (plus cutime + cstime of its reaped children)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks


def cpu_sample(pids: Iterable[int], *, children: bool = False) -> CpuSample:
    return CpuSample(time.monotonic(), sum(cpu_ticks(p, children=children) for p in pids))


def sys_ticks(pid: int) -> int:
    """stime alone: the kernel's share (connect, send, close of probe sockets)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[12])


def cpu_percent(a: CpuSample, b: CpuSample) -> float:
    """Percent of one core used between two samples."""
    wall = b.at - a.at
    return 100.0 * (b.ticks - a.ticks) / CLK_TCK / wall if wall > 0 else 0.0


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS) in MiB, 0 if the process is gone."""
    return _status_kib(pid, "VmRSS") / 1024


def hwm_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) in MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def pss_mib(pid: int) -> float:
    """Proportional set size in MiB: shared pages divided among their users, so a sum
    over many processes running the same interpreter does not count the shared
    libraries once per process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc/*/stat parent links)."""
    parent: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parent.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parent.get(p, []))
    return out


# ------------------------------------------------------------------ HAProxy


class HaproxyRuntime:
    """The runtime API of one or more HAProxy processes (unix sockets: no namespace needed)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    @staticmethod
    def _command(path: Path, line: str, timeout: float) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def command(self, line: str, timeout: float = 10.0) -> list[str]:
        """Send one command to every process; their answers."""
        return [self._command(p, line, timeout) for p in self.paths]

    def requests(self) -> int:
        """HTTP requests served since start, summed (monitor-uri requests included)."""
        total = 0
        for out in self.command("show info"):
            for line in out.splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "CumReq":
                    total += int(value)
        return total

    def fail(self, acl_file: Path, vip: str) -> None:
        """Make the frontend of `vip` fail its monitor-uri (503) from now on."""
        for out in self.command(f"add acl {acl_file} {vip}"):
            if out.strip():
                raise LabError(f"haproxy: add acl {vip}: {out.strip()}")

    def heal_all(self, acl_file: Path) -> None:
        self.command(f"clear acl {acl_file}")
