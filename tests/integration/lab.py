"""Network-namespace lab: two FRR core routers, two gobgpd load balancers, one client.

Stdlib only. Used by the integration tests (`with Lab() as lab: ...`) and by hand:

    python tests/integration/lab.py up       # build, start the LB stacks, leave running
    python tests/integration/lab.py up --bare  # only routers + gobgpd (add routes by hand)
    python tests/integration/lab.py status   # what is running, what the routers have
    python tests/integration/lab.py down     # tear down (by recorded PIDs, then namespaces)

Topology (every address is from a documentation range; nothing leaves the namespaces)::

                            +--------------------+
                            |       client       |  routes to the VIPs 192.0.2.0/24 and
                            | edge: 203.0.113.10 |  2001:db8:0:1::/64: multipath via
                            |   2001:db8:fe::10  |  r1 and r2 (L4 hash)
                            +---------+----------+
                                      | edge
              +-----------------------+----------------------+
              |  sw: bridge "edge"  203.0.113.0/24           |  client LAN
              |                     2001:db8:fe::/64         |
              +--------------+---------------+--------------+
                        edge | .1 ::1        | .2 ::2 edge
                       +-----+-----+   +-----+-----+
                       |    r1     |   |    r2     |   FRR zebra + bgpd, AS 65530
                       | AS 65530  |   | AS 65530  |   in: /32 in 192.0.2.0/24,
                       +-----+-----+   +-----+-----+       /128 in 2001:db8:0:1::/64
                        rack | .1 ::1   rack | .2 ::2  out: nothing; maximum-paths 8
                             |               |
              +--------------+---------------+--------------+
              |  sw: bridge "rack"  198.51.100.0/24          |  rack LAN
              |                     2001:db8:ff::/64         |
              +--------------+---------------+--------------+
                        rack | .11 ::11      | .12 ::12 rack
                       +-----+-----+   +-----+-----+
                       |    lb1    |   |    lb2    |   gobgpd AS 65512, API on a unix socket
                       | lo: VIPs  |   | lo: VIPs  |   (<tmp>/lbN/gobgpd/api.sock, pprof off);
                       |           |   |           |   HAProxy, announcer
                       +-----------+   +-----------+   route back: 203.0.113.0/24 and
                                                       2001:db8:fe::/64 via r1 + r2

    VIPs: 192.0.2.0/24 (v4), 2001:db8:0:1::/64 (v6), bound to `lo` of an LB.
    Both bridges live in one namespace `sw`; every other node has one veth per LAN.

Why shared LANs rather than a veth per (LB, router) pair: a gobgpd path has one next
hop for all peers. With point-to-point links lb1's address toward r1 would not be
on-link for r2, so an explicit v6 next hop (which gobgpd sends unchanged) could only
be right for one router. On the rack LAN each LB has one v4 and one v6 address that
both routers can use. The client side is a LAN for the return path: with a /30 per
router, a reply that lb1 hashes to r2 for r1's client address was dropped (r2 had no
route to it), which needed static routes on the routers; on one LAN both routers
reach the client directly.

BGP sessions: each LB has four, v4 to r1 and r2 (ipv4-unicast only) and v6 to r1 and
r2 (ipv6-unicast only). gobgpd turns next hop "self" for a v6 path on a v4 session
into an IPv4-mapped address, which FRR cannot use. On a v6 session both "self" and
the explicit rack address 2001:db8:ff::1x work (the smoke test checks both).

Traps hit (or headed off) while building this, each handled below:

* FRR pathspace. `-N NAME` moves sockets to /var/run/frr/NAME and configs to
  /etc/frr/NAME, outside our temp dir, where a killed run leaves litter. We pass
  `--vty_socket DIR` (vty sockets), `-z DIR/zserv.api` (zebra<->bgpd) and
  `-i DIR/x.pid` instead, and `vtysh --vty_socket DIR`. Unix sockets are reached
  by path, not through the network namespace, so vtysh needs no `ip netns exec`.
* FRR as root fails: `privs_init: user(root) is not part of vty group specified
  (frrvty)`. The daemons run as the Debian default user `frr`, so the run dir is
  chowned to frr and every parent must be traversable (mkdtemp makes 0700 dirs:
  we chmod the lab root to 0755).
* FRR runs in the foreground (no `-d`), so the PID we started is the daemon. `ip
  netns exec` execs the command (no fork), so the same holds for every process.
* The integrated config (tests/integration/frr/rN.conf, what a VM would have as
  /etc/frr/frr.conf and apply with `vtysh -b`) is read by bgpd itself (`-f`):
  applied through `vtysh -f` it put bgpd's peers in a "config-pending hold" for
  about 4 s. bgpd logs "No such command" for zebra's two `ip[v6] forwarding` lines
  (tolerated; the lab sets those sysctls), and any other rejected line fails the
  lab. zebra starts with an empty config; the lab needs nothing else from it.
* gobgpd waits 5-10 s before each outgoing connect (hard-coded minimum) and a
  connection collision costs another 5 s of Idle, so gobgpd is `passive-mode` and
  the routers dial (FRR `timers connect 1`). gobgpd starts first, so FRR's first
  connect finds it listening: sessions are up about 1 s after bgpd starts.
* `bgp ebgp-requires-policy` (default on in FRR 8.4): an eBGP session without route
  maps accepts and sends nothing. The router configs have explicit in/out route-maps.
* IPv6 DAD: a tentative address cannot be bound, and gobgpd binds its
  `local-address-list` at start. Addresses get `nodad` and accept_dad=0.
* gobgpd stays Idle for a hard-coded 5 s after a session drop (30 s after
  `neighbor reset` unless idle-hold-time-after-reset is set, 1 s in our configs).
* rp_filter may be inherited from the host namespace; asymmetric paths (client ->
  r1 -> lb1 -> r2 -> client) are normal here, so it is 0 everywhere.
* FRR logs "Interface: rack does not have a v6 LL address" while v6 sessions come
  up; harmless (it is computing a next hop for updates it never sends).
* bfdd (`Lab(bfdd=True)`, for the `rN-bfd.conf` variants) would put its control
  socket in /var/run/frr/bfdd.sock, shared by both routers and every run: it gets
  `--bfdctl DIR/bfdd.sock`. It reads only the `bfd` block of the integrated config
  (what `vtysh -b` would send it); bgpd, reading the whole file, reports exactly
  those lines as unknown and the lab tolerates them like zebra's. The block comes
  last in the file, where FRR's `show running-config` puts it too: bgpd takes its
  `exit` lines for its own. bgpd's BFD sessions reach bfdd through zebra, so bfdd
  starts between zebra and bgpd.
* gobgpd's API is a unix socket, as in production (systemd/gobgpd.service.d): the
  lab plays systemd's part. Before each gobgpd start, `Lab.start` makes a fresh
  `<tmp>/lbN/gobgpd/` (RuntimeDirectory=, mode 0750, group LAB_API_GID) and starts
  gobgpd with that group and umask 0007 (Group=, UMask=), so api.sock is 0770: root
  and members of the group connect, other users get EACCES. A fresh directory is
  also what makes a restart after SIGKILL work: gobgpd never removes a stale socket
  file (3.10 exits, 4.8 runs on without any API). LAB_API_GID names no group, so the
  lab never edits /etc/group; the kernel only compares numbers. Unix sockets are
  reached by path, so the gobgp CLI needs no `ip netns exec`: `gobgp --target
  unix://<tmp>/lb1/gobgpd/api.sock global rib`.
* PID 1 of a container may not reap orphans: daemons left by `lab.py up` show as
  zombies after `down` until something reaps them. Tests own their processes
  (Popen) and reap them.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import functools
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
FRR_CONFIG_DIR = Path(__file__).resolve().parent / "frr"
GOBGP_CONFIG_DIR = REPO / "gobgp"
FRR_BIN = Path("/usr/lib/frr")
FRR_USER = "frr"
# gobgpd's API socket: <lab tmp>/<lb>/GOBGP_API_DIR/GOBGP_API_SOCKET (see the traps above).
GOBGP_API_DIR = "gobgpd"
GOBGP_API_SOCKET = "api.sock"
GOBGP_API_DIR_MODE = 0o750  # RuntimeDirectoryMode= of the production drop-in
GOBGPD_UMASK = 0o007  # UMask= of the production drop-in: api.sock becomes 0770
# The group of the API socket (announcer-gobgp in production). A number below the
# dynamic-user range that names no group here, so nothing is added to /etc/group.
LAB_API_GID = 60999
# gobgpd per major version: (gobgpd, gobgp CLI, flags). 3 is bookworm's 3.10 on PATH,
# 4 is sid's 4.8.0 that scripts/fetch-gobgp4 unpacks under .cache/gobgp4 (not
# installed; the same table as tests/support/gobgpd_proc.py, which this stdlib-only file
# cannot import). 4.x serves Prometheus metrics on localhost:6060 even with
# --pprof-disable unless the metrics path is empty.
GOBGP4_BIN = Path(os.environ.get("GOBGP4_ROOT", REPO / ".cache" / "gobgp4" / "root")) / "usr/bin"
GOBGPD_VERSIONS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    3: ("gobgpd", "gobgp", ("--pprof-disable",)),
    4: (
        str(GOBGP4_BIN / "gobgpd"),
        str(GOBGP4_BIN / "gobgp"),
        ("--pprof-disable", "--metrics-path="),
    ),
}
STATE_DIR = Path("/run/announcer-lab")
PREFIX_RE = re.compile(r"^an[0-9a-f]{6}-$")

ROUTER_AS = 65530
LB_AS = 65512

VIP_V4 = ipaddress.ip_network("192.0.2.0/24")
VIP_V6 = ipaddress.ip_network("2001:db8:0:1::/64")
RACK_V4 = ipaddress.ip_network("198.51.100.0/24")
RACK_V6 = ipaddress.ip_network("2001:db8:ff::/64")
CLIENT_V4 = ipaddress.ip_network("203.0.113.0/24")
CLIENT_V6 = ipaddress.ip_network("2001:db8:fe::/64")

ROUTERS = ("r1", "r2")
LBS = ("lb1", "lb2")
SWITCH = "sw"
CLIENT = "client"
NODES = (SWITCH, *ROUTERS, *LBS, CLIENT)

# Rack LAN addresses (without prefix length) of each node.
RACK_ADDR: dict[str, tuple[str, str]] = {
    "r1": ("198.51.100.1", "2001:db8:ff::1"),
    "r2": ("198.51.100.2", "2001:db8:ff::2"),
    "lb1": ("198.51.100.11", "2001:db8:ff::11"),
    "lb2": ("198.51.100.12", "2001:db8:ff::12"),
}
# Client LAN ("edge") addresses of each node.
EDGE_ADDR: dict[str, tuple[str, str]] = {
    "r1": ("203.0.113.1", "2001:db8:fe::1"),
    "r2": ("203.0.113.2", "2001:db8:fe::2"),
    "client": ("203.0.113.10", "2001:db8:fe::10"),
}

DEFAULT_TIMEOUT = 30.0
# Lines of the integrated FRR config that bgpd reports as unknown and may ignore.
ZEBRA_ONLY = re.compile(r"config line \d+: (ip|ipv6) forwarding$")
CONFIG_LINE = re.compile(r"config line (\d+):")


class LabError(Exception):
    """Something in the lab (a command, a daemon, the topology) did not work."""


class WaitTimeout(LabError):
    """`wait_until` gave up; the message carries the last observed value."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


# --------------------------------------------------------------------------- basics


def new_prefix() -> str:
    """A run-unique name prefix such as `an3f2a1c-` (4 hex of the PID, 2 random), not
    used by any namespace now: two labs of one process (a module's lab and a test's
    own) drew the same one in CI once."""
    taken = {n.split("-", 1)[0] + "-" for n in list_netns() if n.startswith("an")}
    while True:
        prefix = f"an{os.getpid() & 0xFFFF:04x}{secrets.randbelow(256):02x}-"
        if prefix not in taken:
            return prefix


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; with `check`, raise LabError naming it and its output."""
    try:
        cp = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout}s") from e
    if check and cp.returncode != 0:
        raise LabError(
            f"{' '.join(argv)}: exit {cp.returncode}: {(cp.stderr or cp.stdout).strip()}"
        )
    return cp


def wait_until(
    probe: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.2,
    *,
    check: Callable[[T], bool] | None = None,
    what: str = "condition",
) -> T:
    """Poll `probe` until `check(value)` (default: truthiness) holds; return that value.

    Exceptions from the probe count as "not yet". On timeout raise WaitTimeout with the
    last value (or chain the last exception), so a failing test says what it saw.
    """
    ok = check if check is not None else bool
    deadline = time.monotonic() + timeout
    while True:
        last_exc: BaseException | None = None
        try:
            value = probe()
            if ok(value):
                return value
            last: object = value
        except Exception as e:
            last, last_exc = f"<{type(e).__name__}: {e}>", e
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"{what}: still not true after {timeout:.1f}s; last observed: {last!r}", last
            ) from last_exc
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


def proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), None if the PID is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished; only its parent can reap it
        return None
    return int(fields[19])


def pid_alive(pid: int, starttime: int | None = None) -> bool:
    """True if `pid` runs and (when given) is the same process that had `starttime`."""
    st = proc_starttime(pid)
    return st is not None and (starttime is None or st == starttime)


def stop_pids(
    procs: Iterable[tuple[int, int | None, subprocess.Popen[bytes] | None]],
    timeout: float = 5.0,
) -> list[int]:
    """SIGTERM all, wait until `timeout`, SIGKILL the rest; return the PIDs that needed KILL.

    Each entry is (pid, starttime, popen-or-None): the start time guards against
    killing a recycled PID, and a Popen is reaped so no zombie is left behind.
    """
    todo = [p for p in procs if pid_alive(p[0], p[1])]
    for pid, _, _ in todo:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    killed: list[int] = []
    for sig, wait in ((None, timeout), (signal.SIGKILL, 5.0)):
        if sig is not None:
            for pid, st, _ in todo:
                if pid_alive(pid, st):
                    killed.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        for pid, st, popen in todo:
            while pid_alive(pid, st) and time.monotonic() < deadline:
                if popen is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        popen.wait(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
                else:
                    time.sleep(0.05)
    for _, _, popen in todo:
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1.0)
    return killed


@dataclass
class Proc:
    """A process we started inside a namespace; its PID is the real daemon's PID."""

    name: str
    netns: str
    argv: list[str]
    pid: int
    starttime: int | None
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        """True while the process runs."""
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return pid_alive(self.pid, self.starttime)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its stdout+stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "netns": self.netns,
            "argv": self.argv,
            "pid": self.pid,
            "starttime": self.starttime,
            "log": str(self.log_path),
        }


class ProcessRegistry:
    """Start processes in namespaces, remember them by name, stop them by PID."""

    def __init__(self) -> None:
        self.procs: dict[str, Proc] = {}
        self.history: list[Proc] = []  # every process ever started, for hygiene checks

    def start(
        self,
        netns: str,
        argv: Sequence[str],
        name: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        umask: int = -1,
        group: int | None = None,
    ) -> Proc:
        """Run `ip netns exec NETNS argv...` in the background, output to `log_path`.

        `umask` and `group` (a gid for the process, like systemd's UMask= and Group=)
        are set before the exec; the defaults keep ours.
        """
        self.check_free(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a ^C in the terminal reaches us, not the daemons, so
                # teardown stops them in order instead of racing with them.
                start_new_session=True,
                env=env,
                umask=umask,
                group=group,
            )
        proc = Proc(
            name=name,
            netns=netns,
            argv=list(argv),
            pid=popen.pid,
            starttime=proc_starttime(popen.pid),
            log_path=log_path,
            popen=popen,
        )
        self.procs[name] = proc
        self.history.append(proc)
        return proc

    def check_free(self, name: str) -> None:
        """LabError if a process of that name is running."""
        if name in self.procs and self.procs[name].alive():
            raise LabError(f"a process named {name!r} is already running")

    def get(self, name: str) -> Proc:
        try:
            return self.procs[name]
        except KeyError:
            raise LabError(f"no process named {name!r} (have: {sorted(self.procs)})") from None

    def signal(self, name: str, sig: int) -> None:
        """Send `sig` to the named process (e.g. SIGUSR2 to reload an HAProxy master)."""
        proc = self.get(name)
        if not proc.alive():
            raise LabError(f"{name} (pid {proc.pid}) is not running:\n{proc.log_tail()}")
        os.kill(proc.pid, sig)

    def stop(self, name: str, timeout: float = 5.0) -> None:
        """SIGTERM the named process, SIGKILL it after `timeout`, reap it, forget it."""
        proc = self.get(name)
        stop_pids([(proc.pid, proc.starttime, proc.popen)], timeout)
        del self.procs[name]

    def stop_all(self, timeout: float = 5.0) -> list[str]:
        """Stop every process at once (SIGTERM all, one shared deadline, then SIGKILL),
        also any earlier one of the run that is somehow still alive, and reap them all
        (a Popen collected while its process runs is a ResourceWarning, which pytest
        turns into a failure of whatever test happens to run then). Returns the names
        of those earlier ones: they should have been gone."""
        current = {id(p) for p in self.procs.values()}
        leaked = [p for p in self.history if id(p) not in current and p.alive()]
        everyone = [*self.procs.values(), *leaked]
        stop_pids([(p.pid, p.starttime, p.popen) for p in everyone], timeout)
        for p in self.history:
            if p.popen is not None:
                p.popen.poll()
        self.procs.clear()
        return [f"{p.name} (pid {p.pid})" for p in leaked]


# --------------------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class Netns:
    """One network namespace, addressed by its full name (run prefix + node name)."""

    name: str

    def add(self) -> None:
        """Create it (fails if the name exists: never adopt someone else's namespace)."""
        run(["ip", "netns", "add", self.name])

    def prepare(self) -> None:
        """`lo` up and the sysctls every node in this lab wants."""
        self.ip("link", "set", "lo", "up")
        # Before any interface exists, so that `default` applies to each new one.
        for key in ("all", "default"):
            self.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
            self.sysctl(f"net.ipv6.conf.{key}.accept_dad", "0")

    def delete(self) -> None:
        run(["ip", "netns", "delete", self.name], check=False)

    def exists(self) -> bool:
        return self.name in list_netns()

    def exec(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return run(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n NAME ...`"""
        return run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.exec(["sysctl", "-q", "-w", f"{key}={value}"])

    def link_up(self, dev: str) -> None:
        self.ip("link", "set", dev, "up")

    def add_addr(self, dev: str, cidr: str) -> None:
        """Add an address; IPv6 ones skip DAD so they can be bound at once."""
        iface = ipaddress.ip_interface(cidr)
        extra = ["nodad"] if iface.version == 6 else []
        self.ip("-" + str(iface.version), "addr", "add", cidr, "dev", dev, *extra)

    def del_addr(self, dev: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        self.ip("-" + str(iface.version), "addr", "del", cidr, "dev", dev)

    def add_route(self, dst: str, *gateways: str) -> None:
        """A static route; several gateways make it one multipath (ECMP) route."""
        version = ipaddress.ip_network(dst).version
        if len(gateways) == 1:
            self.ip(f"-{version}", "route", "replace", dst, "via", gateways[0])
            return
        hops: list[str] = []
        for gw in gateways:
            hops += ["nexthop", "via", gw]
        self.ip(f"-{version}", "route", "replace", dst, *hops)

    def pids(self) -> list[int]:
        """PIDs of every process whose network namespace is this one."""
        cp = run(["ip", "netns", "pids", self.name], check=False)
        return [int(x) for x in cp.stdout.split() if x.isdigit()]


def tcp_listening(pid: int, address: str, port: int) -> bool:
    """True if a TCP socket listens on address:port in the network namespace of `pid`.

    /proc/PID/net/tcp shows the sockets of that process's namespace, so this needs
    no helper process inside the namespace.
    """
    ip = ipaddress.ip_address(address)
    table = "tcp" if ip.version == 4 else "tcp6"
    if ip.version == 4:
        want = f"{int.from_bytes(ip.packed, 'little'):08X}:{port:04X}"
    else:
        words = [ip.packed[i : i + 4] for i in range(0, 16, 4)]
        want = "".join(f"{int.from_bytes(w, 'little'):08X}" for w in words) + f":{port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == want and f[3] == "0A" for f in (ln.split() for ln in lines))


def remove_namespaces(created: list[Netns]) -> list[str]:
    """Delete the namespaces a lab created (and empty the list); what went wrong.

    Anything still running in them (e.g. HAProxy workers, a CLI call that hung) is ours
    by construction: it is stopped by PID before the namespace goes.
    """
    errors: list[str] = []
    for ns in created:
        try:
            leftovers = [(pid, proc_starttime(pid), None) for pid in ns.pids()]
            stop_pids(leftovers, timeout=2.0)
        except Exception as e:
            errors.append(f"{ns.name}: stopping leftover processes: {e}")
        ns.delete()
        if ns.exists():
            errors.append(f"{ns.name}: still listed after delete")
    created.clear()
    return errors


def list_netns() -> list[str]:
    """Names from `ip netns list` (which prints `name (id: N)`)."""
    cp = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def add_veth(a: Netns, a_dev: str, b: Netns, b_dev: str) -> None:
    """A veth pair with one end in each namespace; never touches the host namespace."""
    a.ip("link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)
    a.link_up(a_dev)
    b.link_up(b_dev)


def kernel_routes(netns: Netns | str, family: int = 4) -> list[dict[str, Any]]:
    """The main table of a namespace as parsed `ip -j -4|-6 route` entries."""
    name = netns.name if isinstance(netns, Netns) else netns
    cp = run(["ip", "-n", name, "-j", f"-{family}", "route", "show", "table", "main"])
    routes: list[dict[str, Any]] = json.loads(cp.stdout or "[]")
    return routes


def route_gateways(route: dict[str, Any]) -> set[str]:
    """Gateways of one `ip -j route` entry, whether single path or multipath."""
    if "nexthops" in route:
        return {nh["gateway"] for nh in route["nexthops"] if "gateway" in nh}
    return {route["gateway"]} if "gateway" in route else set()


def kernel_route(netns: Netns | str, prefix: str) -> dict[str, Any] | None:
    """The kernel route for exactly `prefix` (e.g. 192.0.2.10/32), or None."""
    net = ipaddress.ip_network(prefix)
    for r in kernel_routes(netns, net.version):
        dst = r.get("dst", "")
        if dst == "default":
            continue
        if ipaddress.ip_network(dst) == net:
            return r
    return None


# --------------------------------------------------------------------------- FRR


@dataclass(frozen=True)
class FrrRouter:
    """An FRR instance (zebra + bgpd) in a namespace, with its sockets under `run_dir`."""

    node: str
    netns: Netns
    run_dir: Path
    config: Path

    def vtysh_argv(self, *commands: str) -> list[str]:
        argv = ["vtysh", "--vty_socket", str(self.run_dir)]
        for c in commands:
            argv += ["-c", c]
        return argv


def vtysh(router: FrrRouter, *commands: str, timeout: float = 10.0) -> str:
    """Run vtysh commands against one router; raise LabError on a `%` error line."""
    cp = run(router.vtysh_argv(*commands), timeout=timeout, check=False)
    out = cp.stdout
    bad = [ln for ln in out.splitlines() if ln.startswith("% ")]
    if cp.returncode != 0 or bad:
        raise LabError(
            f"{router.node}: vtysh {list(commands)}: exit {cp.returncode}: "
            f"{(cp.stderr + out).strip()[:2000]}"
        )
    return out


def vtysh_json(router: FrrRouter, command: str) -> Any:
    """Run one `... json` show command and parse it (e.g. `show ip route json`)."""
    if not command.rstrip().endswith("json"):
        command += " json"
    out = vtysh(router, command)
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise LabError(f"{router.node}: {command}: not JSON: {out[:500]!r}") from e


def spawn_frr_daemon(procs: ProcessRegistry, router: FrrRouter, daemon: str) -> Proc:
    """Start one FRR daemon of `router` in its namespace, its files in its run dir."""
    # Why bgpd reads the integrated file itself instead of `vtysh -f` (which is
    # what `vtysh -b` does at boot in a VM): config applied through vtysh puts
    # bgpd's peers in a "config-pending hold" that costs about 4 s before the
    # first connect. bgpd reading the file at startup starts them at once and
    # only logs "No such command" for zebra's `ip[v6] forwarding` lines, which
    # the lab sets as sysctls anyway. zebra needs nothing from the file here.
    d = router.run_dir
    config = {"bgpd": router.config, "bfdd": d / "bfdd.conf"}.get(daemon, d / "empty.conf")
    argv = [
        str(FRR_BIN / daemon),
        "--vty_socket", str(d),
        "-z", str(d / "zserv.api"),  # zebra <-> bgpd, not in /var/run/frr
        "-i", str(d / f"{daemon}.pid"),
        "-P", "0",  # no vty TCP port
        "-f", str(config),
        "--log", "stdout", "--log-level", "info",  # our log file, from line one
    ]  # fmt: skip
    if daemon == "bfdd":
        argv += ["--bfdctl", str(d / "bfdd.sock")]  # not /var/run/frr/bfdd.sock
    return procs.start(router.netns.name, argv, f"{router.node}-{daemon}", d / f"{daemon}.log")


def wait_frr_daemon(router: FrrRouter, daemon: str, proc: Proc, timeout: float) -> None:
    """Wait until `daemon` answers (bgpd: has read its config); LabError on a rejected line."""
    argv = ["vtysh", "--vty_socket", str(router.run_dir), "-d", daemon, "-c"]

    def ready() -> bool:
        if not proc.alive():
            raise LabError(f"{proc.name} exited:\n{proc.log_tail()}")
        if not (router.run_dir / f"{daemon}.vty").exists():
            return False
        if daemon != "bgpd":
            return run([*argv, "show version"], check=False, timeout=5).returncode == 0
        # The vty socket opens before the config file is read (in one event, so a
        # `router bgp` in the running config means the whole file was read).
        cp = run([*argv, "show running-config"], check=False, timeout=5)
        return cp.returncode == 0 and "\nrouter bgp " in cp.stdout

    what = f"{router.node}: {daemon} answers on its vty socket"
    try:
        wait_until(ready, timeout=timeout, interval=0.05, what=what)
    except WaitTimeout as e:
        raise LabError(f"{e}\n{proc.name} log:\n{proc.log_tail()}") from e
    log = proc.log_tail(10_000).splitlines()
    # bgpd reads the integrated file: zebra's and bfdd's lines are not its own.
    others = {n for n, _ in bfd_block(router.config.read_text())} if daemon == "bgpd" else set()

    def foreign(line: str) -> bool:
        m = CONFIG_LINE.search(line)
        return bool(ZEBRA_ONLY.search(line)) or (m is not None and int(m[1]) in others)

    bad = [ln for ln in log if "config line" in ln and not foreign(ln)]
    if bad:
        raise LabError(f"{router.node}: {daemon} rejected config lines:\n" + "\n".join(bad))


def frr_route_nexthops(router: FrrRouter, prefix: str) -> set[str]:
    """Next hops zebra has installed (fib) for exactly `prefix`; empty if none."""
    net = ipaddress.ip_network(prefix)
    cmd = f"show {'ip' if net.version == 4 else 'ipv6'} route {net} json"
    data = vtysh_json(router, cmd)
    hops: set[str] = set()
    for entry in data.get(str(net), []):
        if entry.get("protocol") != "bgp" or not entry.get("installed"):
            continue
        for nh in entry.get("nexthops", []):
            if nh.get("fib") and "ip" in nh:
                hops.add(nh["ip"])
    return hops


def bfd_block(config: str) -> list[tuple[int, str]]:
    """The lines (number, text) of the top-level `bfd` node of an integrated FRR config.

    What `vtysh -b` sends to bfdd: from a line `bfd` to the next line that starts
    in column 0 other than `!` (or `exit`, which closes the node and is included).
    """
    out: list[tuple[int, str]] = []
    inside = False
    for n, line in enumerate(config.splitlines(keepends=True), start=1):
        if line.rstrip() == "bfd":
            inside = True
        elif inside and line[:1] not in (" ", "!", "\n"):
            if line.rstrip() == "exit":
                out.append((n, line))
            inside = False
            continue
        if inside:
            out.append((n, line))
    return out


def bgp_prefixes(router: FrrRouter, family: int = 4) -> set[str]:
    """Prefixes in the router's BGP table (after its import policy)."""
    afi = "ipv4" if family == 4 else "ipv6"
    return set(vtysh_json(router, f"show bgp {afi} unicast json").get("routes", {}))


def bgp_received(router: FrrRouter, neighbor: str) -> set[str]:
    """Prefixes a neighbor sent, before the import policy (soft-reconfiguration inbound)."""
    afi = "ipv4" if ipaddress.ip_address(neighbor).version == 4 else "ipv6"
    cmd = f"show bgp {afi} unicast neighbors {neighbor} received-routes json"
    return set(vtysh_json(router, cmd).get("receivedRoutes", {}))


def bgp_advertised(router: FrrRouter, neighbor: str) -> set[str]:
    """Prefixes the router sends to a neighbor (after its export policy)."""
    afi = "ipv4" if ipaddress.ip_address(neighbor).version == 4 else "ipv6"
    cmd = f"show bgp {afi} unicast neighbors {neighbor} advertised-routes json"
    return set(vtysh_json(router, cmd).get("advertisedRoutes", {}))


def bgp_sessions(router: FrrRouter) -> dict[str, str]:
    """Neighbor address -> BGP state, over both address families."""
    data = vtysh_json(router, "show bgp summary json")
    states: dict[str, str] = {}
    for fam in ("ipv4Unicast", "ipv6Unicast"):
        for addr, peer in data.get(fam, {}).get("peers", {}).items():
            states[addr] = peer.get("state", "?")
    return states


# --------------------------------------------------------------------------- the lab


def wire(nodes: dict[str, Netns], *, addressed: Iterable[str] = NODES) -> None:
    """The LANs between the nodes' namespaces: two bridges in `sw`, one veth per node and
    LAN (named after the LAN inside the node), forwarding and ECMP hashing on the routers
    and the client, the client's and the LBs' static routes. Nodes not in `addressed`
    get their veths only: something inside them (scripts/provision/lb.sh in the systemd
    lab) configures their addresses and routes.
    """
    configure = set(addressed)
    sw = nodes[SWITCH]
    # The switch only bridges frames; no IPv6 of its own so it stays silent.
    sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    sw.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    for lan, members, v4net, v6net in (
        ("rack", RACK_ADDR, RACK_V4, RACK_V6),
        ("edge", EDGE_ADDR, CLIENT_V4, CLIENT_V6),
    ):
        sw.ip(
            "link", "add", lan, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
        )  # fmt: skip
        sw.link_up(lan)
        for node, (v4, v6) in members.items():
            ns = nodes[node]
            port = f"{lan}-{node}"  # the switch side, e.g. rack-lb1
            add_veth(ns, lan, sw, port)
            sw.ip("link", "set", port, "master", lan)
            if node in configure:
                ns.add_addr(lan, f"{v4}/{v4net.prefixlen}")
                ns.add_addr(lan, f"{v6}/{v6net.prefixlen}")
    for r in ROUTERS:
        nodes[r].sysctl("net.ipv4.ip_forward", "1")
        nodes[r].sysctl("net.ipv6.conf.all.forwarding", "1")
    # Hash on the 5-tuple so different connections take different paths (ECMP).
    for node in (*ROUTERS, CLIENT):
        nodes[node].sysctl("net.ipv4.fib_multipath_hash_policy", "1")
        nodes[node].sysctl("net.ipv6.fib_multipath_hash_policy", "1")
    # The client reaches the VIP ranges through both routers.
    client = nodes[CLIENT]
    client.add_route(str(VIP_V4), *(EDGE_ADDR[r][0] for r in ROUTERS))
    client.add_route(str(VIP_V6), *(EDGE_ADDR[r][1] for r in ROUTERS))
    # The LBs get no routes over BGP (the routers export nothing), so they reach
    # the clients through a static multipath route via both routers.
    for lb in configure.intersection(LBS):
        ns = nodes[lb]
        ns.add_route(str(CLIENT_V4), *(RACK_ADDR[r][0] for r in ROUTERS))
        ns.add_route(str(CLIENT_V6), *(RACK_ADDR[r][1] for r in ROUTERS))


class Topology(abc.ABC):
    """A context manager over `build()` and `teardown()`: leaving the block (also by an
    exception, also when building failed halfway) tears down what was built; teardown
    problems are raised, or noted on the error that ended the block."""

    @abc.abstractmethod
    def build(self) -> None:
        """Create everything; on an exception `__enter__` tears down what was made."""

    @abc.abstractmethod
    def teardown(self) -> list[str]:
        """Remove everything built; return what could not be removed."""

    def __enter__(self: TopologyT) -> TopologyT:
        try:
            self.build()
        except BaseException as e:
            errors = self.teardown()
            if errors:
                e.add_note("teardown incomplete: " + "; ".join(errors))
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors = self.teardown()
        if errors:
            message = "teardown incomplete: " + "; ".join(errors)
            if exc is None:
                raise LabError(message)
            exc.add_note(message)  # do not hide the error that ended the block


TopologyT = TypeVar("TopologyT", bound=Topology)


class Lab(Topology):
    """The whole topology; a context manager that always tears down what it built.

    `with Lab() as lab:` builds namespaces and links, starts FRR on r1/r2 and gobgpd on
    lb1/lb2, and waits until every BGP session is Established. Leaving the block (also
    by an exception, also when building failed halfway) stops every process by PID,
    deletes the namespaces and removes the temp dir and state file.

    Variants: `gobgp_config="{node}-bfd.toml"` / `frr_config="{node}-gr.conf"` pick
    other files of the config directories (`{node}` is lb1, r2, ...), and `bfdd=True`
    also runs FRR's bfdd on the routers.
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        frr_config_dir: Path = FRR_CONFIG_DIR,
        gobgp_config_dir: Path = GOBGP_CONFIG_DIR,
        wait_established: bool = True,
        enable_peers: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        gobgpd_version: int = 3,
        gobgp_config: str = "{node}.toml",
        frr_config: str = "{node}.conf",
        bfdd: bool = False,
    ) -> None:
        if gobgpd_version not in GOBGPD_VERSIONS:
            raise LabError(f"gobgpd_version {gobgpd_version}: not one of {sorted(GOBGPD_VERSIONS)}")
        self.prefix = prefix or new_prefix()
        self.gobgpd_version = gobgpd_version  # which gobgpd both LBs run
        self.frr_config_dir = frr_config_dir
        self.gobgp_config_dir = gobgp_config_dir
        # File names inside those directories, `{node}` = lb1, r2, ...: a variant such
        # as gobgp/lb1-bfd.toml is gobgp_config="{node}-bfd.toml".
        self.gobgp_config = gobgp_config
        self.frr_config = frr_config
        # Also run FRR's bfdd on the routers (for `neighbor ... bfd` in the config).
        self.bfdd = bfdd
        self.wait_established = wait_established
        # gobgp/lbN.toml configures every neighbor admin-down (fate-sharing: announcer
        # enables them once its full set is in). A lab without announcer enables them
        # itself; a lab running announcer passes False and leaves that to it.
        self.enable_peers = enable_peers
        self.timeout = timeout
        self.nodes: dict[str, Netns] = {n: Netns(self.prefix + n) for n in NODES}
        self.created: list[Netns] = []
        self.procs = ProcessRegistry()
        self.routers: dict[str, FrrRouter] = {}
        self.tmp: Path | None = None
        self.state_path = STATE_DIR / f"{self.prefix}.json"
        self.owner = "python"

    # ---- lifecycle

    def build(self) -> None:
        """Create namespaces, links, addresses and routes; start FRR and gobgpd."""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}lab-"))
        # FRR drops to user frr and must reach its run dir below this one.
        self.tmp.chmod(0o755)
        self._write_state()
        taken = [n for n in list_netns() if n.startswith(self.prefix)]
        if taken:
            raise LabError(f"prefix {self.prefix} in use by {taken}")
        for node in NODES:
            ns = self.nodes[node]
            ns.add()
            self.created.append(ns)  # ours from here on, to delete in teardown
            ns.prepare()
        self._wire()
        # gobgpd first: it is passive (its own connect retry is 5-10 s whatever the
        # config says, minConnectRetryInterval in fsm.go), so the fast way up is FRR
        # dialling a gobgpd that already listens.
        self._start_gobgpd()
        self._start_frr()
        if self.wait_established:
            self.wait_sessions()

    def teardown(self) -> list[str]:
        """Stop processes, delete namespaces, remove files; return what went wrong."""
        errors: list[str] = []
        try:
            leaked = self.procs.stop_all()
            if leaked:  # stopped now; say so, a test or helper forgot them
                print(f"lab {self.prefix}: still running at teardown: {leaked}", file=sys.stderr)
        except Exception as e:
            errors.append(f"stopping processes: {e}")
        errors += remove_namespaces(self.created)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.tmp.exists():
                errors.append(f"{self.tmp}: not removed")
        self.state_path.unlink(missing_ok=True)
        return errors

    # ---- topology

    def ns(self, node: str) -> Netns:
        """The namespace of a node (`r1`, `lb2`, `client`, `sw`)."""
        try:
            return self.nodes[node]
        except KeyError:
            raise LabError(f"unknown node {node!r} (nodes: {', '.join(NODES)})") from None

    def _wire(self) -> None:
        wire(self.nodes)

    # ---- FRR

    def _start_frr(self) -> None:
        """Start zebra on both routers, wait, then (bfdd and) bgpd on both, wait."""
        assert self.tmp is not None
        for node in ROUTERS:
            source = self.frr_config_dir / self.frr_config.format(node=node)
            if not source.is_file():
                raise LabError(f"{node}: FRR config {source} not found")
            run_dir = self.tmp / node
            run_dir.mkdir(exist_ok=True)
            # A copy inside the run dir: the daemons read it as user frr, which may
            # not be able to reach a checkout under a private home directory.
            config = run_dir / "frr.conf"
            shutil.copyfile(source, config)
            (run_dir / "empty.conf").write_text("")
            files = [run_dir, config, run_dir / "empty.conf"]
            if self.bfdd:  # bfdd gets only the `bfd` block, as `vtysh -b` would send it
                bfdd_conf = run_dir / "bfdd.conf"
                bfdd_conf.write_text("".join(line for _, line in bfd_block(config.read_text())))
                files.append(bfdd_conf)
            for p in files:
                shutil.chown(p, FRR_USER, FRR_USER)
            self.routers[node] = FrrRouter(node, self.nodes[node], run_dir, config)
        # zebra first: bfdd and bgpd connect to zebra's zserv socket at start, and
        # bgpd's BFD sessions reach bfdd through zebra.
        for daemon in ("zebra", "bfdd", "bgpd") if self.bfdd else ("zebra", "bgpd"):
            procs = [self._spawn_frr_daemon(self.routers[r], daemon) for r in ROUTERS]
            for router, proc in zip(self.routers.values(), procs, strict=True):
                self._wait_frr_daemon(router, daemon, proc)

    def _spawn_frr_daemon(self, router: FrrRouter, daemon: str) -> Proc:
        proc = spawn_frr_daemon(self.procs, router, daemon)
        self._write_state()
        return proc

    def _wait_frr_daemon(self, router: FrrRouter, daemon: str, proc: Proc) -> None:
        wait_frr_daemon(router, daemon, proc, self.timeout)

    # ---- gobgpd

    def _start_gobgpd(self) -> None:
        """Start gobgpd on both LBs and wait until their APIs listen."""
        procs: list[Proc] = []
        gobgpd, _, flags = GOBGPD_VERSIONS[self.gobgpd_version]
        if self.gobgpd_version != 3 and not Path(gobgpd).is_file():
            raise LabError(f"{gobgpd} missing: run scripts/fetch-gobgp4")
        for node in LBS:
            config = self.gobgp_config_dir / self.gobgp_config.format(node=node)
            if not config.is_file():
                raise LabError(f"{node}: gobgpd config {config} not found")
            argv = [
                gobgpd, "-t", "toml", "-f", str(config),
                "--api-hosts", f"unix://{self.api_socket(node)}",  # see Lab.start
                *flags, "-p",
            ]  # fmt: skip
            procs.append(self.start(node, argv, name=f"{node}-gobgpd"))
        for node, proc in zip(LBS, procs, strict=True):

            def ready(proc: Proc = proc, node: str = node) -> bool:
                if not proc.alive():
                    raise LabError(f"{proc.name} exited:\n{proc.log_tail()}")
                # Not the gobgp CLI: it waits a full second when nothing listens yet.
                return unix_listening(self.api_socket(node))

            wait_until(ready, timeout=self.timeout, interval=0.05, what=f"{node}: gobgpd API")
            self.gobgp(node, "global")
            if self.enable_peers:
                for r in ROUTERS:
                    for address in RACK_ADDR[r]:
                        self.gobgp(node, "neighbor", address, "enable")

    def gobgp(
        self, lb: str, *args: str, check: bool = True, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the gobgp CLI (as root) against the gobgpd of `lb` (e.g. `global rib -a ipv6`)."""
        return run([*self.gobgp_argv(lb), *args], check=check, timeout=timeout)

    def gobgp_argv(self, lb: str) -> list[str]:
        """`gobgp --target unix://...` for the gobgpd of `lb`; append the command."""
        cli = GOBGPD_VERSIONS[self.gobgpd_version][1]
        return [cli, "--target", f"unix://{self.api_socket(lb)}"]

    def api_socket(self, lb: str) -> Path:
        """The unix socket gobgpd of `lb` serves its API on."""
        assert self.tmp is not None, "lab not built"
        return api_socket(self.tmp, lb)

    def _fresh_api_dir(self, argv: Sequence[str]) -> dict[str, int]:
        """What systemd does for the production gobgpd: a new RuntimeDirectory, Group=, UMask=.

        For an argv serving the API on a unix socket (gobgpd, also when a test starts
        it again with the recorded argv): the socket's directory is removed with what
        a killed gobgpd left in it and made anew, root:LAB_API_GID 0750. Returns the
        Popen settings for the process (group LAB_API_GID, umask 0007), else {}.
        """
        argv = list(argv)
        if "--api-hosts" not in argv:
            return {}
        target = argv[argv.index("--api-hosts") + 1]
        if not target.startswith("unix://"):
            return {}
        directory = Path(target.removeprefix("unix://")).parent
        assert self.tmp is not None and directory.is_relative_to(self.tmp), directory
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        os.chown(directory, 0, LAB_API_GID)
        directory.chmod(GOBGP_API_DIR_MODE)
        return {"group": LAB_API_GID, "umask": GOBGPD_UMASK}

    def gobgp_json(self, lb: str, *args: str) -> Any:
        """`gobgp -j ...` parsed."""
        return json.loads(self.gobgp(lb, "-j", *args).stdout or "null")

    # ---- BGP state

    def wait_sessions(self, timeout: float | None = None) -> None:
        """Wait until r1 and r2 each have all four LB sessions (v4 + v6) Established."""
        want = {a for lb in LBS for a in RACK_ADDR[lb]}
        for r in ROUTERS:
            wait_until(
                functools.partial(bgp_sessions, self.routers[r]),
                timeout=timeout or self.timeout,
                check=lambda s: set(s) >= want and all(s[a] == "Established" for a in want),
                what=f"{r}: BGP sessions to lb1/lb2 Established",
            )

    def vtysh(self, router: str, *commands: str) -> str:
        return vtysh(self.router(router), *commands)

    def vtysh_json(self, router: str, command: str) -> Any:
        return vtysh_json(self.router(router), command)

    def router(self, node: str) -> FrrRouter:
        try:
            return self.routers[node]
        except KeyError:
            raise LabError(f"{node!r} is not a running FRR router") from None

    def frr_nexthops(self, router: str, prefix: str) -> set[str]:
        """Next hops of `prefix` in the router's zebra RIB (installed in the FIB)."""
        return frr_route_nexthops(self.router(router), prefix)

    def kernel_routes(self, node: str, family: int = 4) -> list[dict[str, Any]]:
        return kernel_routes(self.ns(node), family)

    def kernel_nexthops(self, node: str, prefix: str) -> set[str]:
        """Gateways of the kernel route for exactly `prefix` in a node; empty if none."""
        route = kernel_route(self.ns(node), prefix)
        return route_gateways(route) if route else set()

    # ---- generic process control, VIPs, commands (for HAProxy, announcer, ...)

    def start(
        self,
        node: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start `argv` inside a node's namespace in the background; its PID is tracked.

        Output goes to `<tmp>/<node>/<name>.log`. Run daemons in the foreground
        (HAProxy `-W -db` or `-db`), so the PID is theirs and `stop` works.
        """
        assert self.tmp is not None, "lab not built"
        name = name or f"{node}-{Path(argv[0]).name}"
        log = self.tmp / node / f"{name}.log"
        self.procs.check_free(name)  # before a running gobgpd's socket is touched
        settings = self._fresh_api_dir(argv)
        proc = self.procs.start(self.ns(node).name, argv, name, log, env=env, **settings)
        self._write_state()
        return proc

    def stop(self, name: str, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to `timeout`, SIGKILL; by PID."""
        self.procs.stop(name, timeout)
        self._write_state()

    def signal(self, name: str, sig: int) -> None:
        """Send a signal (e.g. signal.SIGUSR2 to reload an HAProxy master)."""
        self.procs.signal(name, sig)

    def proc(self, name: str) -> Proc:
        return self.procs.get(name)

    def exec(
        self, node: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside a node's namespace."""
        return self.ns(node).exec(argv, check=check, timeout=timeout)

    def add_vip(self, lb: str, cidr: str) -> None:
        """Put a VIP (`192.0.2.10/32`, `2001:db8:0:1::10/128`) on `lo` of a node."""
        self.ns(lb).add_addr("lo", cidr)

    def del_vip(self, lb: str, cidr: str) -> None:
        self.ns(lb).del_addr("lo", cidr)

    # ---- state file (lets `lab.py down` find a lab after its creator exited)

    def state(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "owner": self.owner,
            "owner_pid": os.getpid(),
            "owner_starttime": proc_starttime(os.getpid()),
            "tmp": str(self.tmp) if self.tmp else None,
            "namespaces": {n: ns.name for n, ns in self.nodes.items()},
            "vty_sockets": {n: str(r.run_dir) for n, r in self.routers.items()},
            "gobgp_api": {lb: str(api_socket(self.tmp, lb)) for lb in LBS} if self.tmp else {},
            "processes": [p.to_state() for p in self.procs.procs.values()],
        }

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        tmp.replace(self.state_path)

    def commands(self) -> str:
        """Commands to inspect this lab by hand (with the LB stacks' when they run)."""
        if self.routers and any(p.endswith("-announcer") for p in self.procs.procs):
            return lab_commands(self.state())
        n = {k: v.name for k, v in self.nodes.items()}
        r1 = self.routers["r1"].run_dir if "r1" in self.routers else "<tmp>/r1"
        return inspection_commands(n, str(r1), str(self.api_socket("lb1")))


def api_socket(tmp: Path, lb: str) -> Path:
    """gobgpd's API socket of `lb` in the lab whose temp dir is `tmp`."""
    return tmp / lb / GOBGP_API_DIR / GOBGP_API_SOCKET


def unix_listening(path: Path) -> bool:
    """True if something accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        return s.connect_ex(str(path)) == 0


def gobgp_command(api: str) -> str:
    """The gobgp CLI as an operator (root) types it for the API socket `api`."""
    return f"gobgp --target unix://{api}"


def inspection_commands(ns: dict[str, str], r1_vty: str, lb1_api: str) -> str:
    gobgp = gobgp_command(lb1_api)
    vty = f"vtysh --vty_socket {r1_vty}"
    return "\n".join(
        [
            f"{gobgp} neighbor",
            f"{gobgp} global rib add 192.0.2.10/32 origin igp",
            f"{gobgp} global rib -a ipv6 add 2001:db8:0:1::10/128"
            " nexthop 2001:db8:ff::11 origin igp",
            f"{gobgp} global rib; {gobgp} global rib -a ipv6",
            f"{vty} -c 'show bgp summary'     # r2: same with {r1_vty[:-2]}r2",
            f"{vty} -c 'show ip bgp' -c 'show bgp ipv6 unicast'",
            f"{vty} -c 'show bgp ipv4 unicast neighbors 198.51.100.11 received-routes'",
            f"ip netns exec {ns['r1']} vtysh --vty_socket {r1_vty}   # interactive",
            f"ip -n {ns['r1']} route; ip -n {ns['r1']} -6 route",
            f"ip netns exec {ns['lb1']} ip addr add 192.0.2.10/32 dev lo",
            f"ip netns exec {ns['client']} curl -sS http://192.0.2.10/",
        ]
    )


def lab_commands(state: dict[str, Any]) -> str:
    """Commands to inspect a full lab (LB stacks running), from its state file's content."""
    ns: dict[str, str] = state["namespaces"]
    vty: dict[str, str] = state["vty_sockets"]
    procs = {p["name"]: p for p in state.get("processes", [])}

    def at(node: str) -> str:
        return f"ip netns exec {ns[node]}"

    def show(router: str, *commands: str) -> str:
        return f"{at(router)} vtysh --vty_socket {vty[router]} " + " ".join(
            f"-c '{c}'" for c in commands
        )

    api = state.get("gobgp_api") or {"lb1": str(api_socket(Path(state["tmp"]), "lb1"))}
    gobgp = gobgp_command(api["lb1"])
    lines = [
        "# gobgpd on lb1 (what announcer injected; lb2: the same with lb2's socket)",
        f"{gobgp} global rib",
        f"{gobgp} global rib -a ipv6",
        f"{gobgp} neighbor",
        "# FRR on r1 and r2 (BGP table, then the routes zebra installed)",
        *(show(r, "show ip bgp", "show bgp ipv6 unicast") for r in ROUTERS),
        show("r1", "show ip route bgp", "show ipv6 route bgp"),
        f"{at('r1')} vtysh --vty_socket {vty['r1']}   # interactive",
        "# the routers' kernel tables: one route per VIP, two next hops",
        *(f"{at(r)} ip route; {at(r)} ip -6 route" for r in ROUTERS),
        "# the client, through the routers (answers say which LB served)",
        f"{at('client')} curl -s http://192.0.2.10/",
        f"{at('client')} curl -s 'http://[2001:db8:0:1::10]/'",
    ]
    for lb in LBS:
        if f"{lb}-announcer" in procs:
            lines.append(f"# announcer's log on {lb}")
            lines.append(f"tail -f {procs[f'{lb}-announcer']['log']}")
    backend = procs.get("lb1-backend-api")
    if backend:
        lines += [
            "# fail fe_api (192.0.2.11) on lb1 by freezing its backend, watch r1, thaw it",
            f"kill -STOP {backend['pid']}; sleep 3; {show('r1', 'show ip route 192.0.2.11/32')}",
            f"kill -CONT {backend['pid']}",
        ]
    return "\n".join(lines)


def vip_table(state: dict[str, Any]) -> str:
    """Per VIP, the next hops each router has in its RIB (* = also in its kernel table)."""
    from tests.integration.stack import VIPS  # stack imports this module

    names = {a: lb for lb in LBS for a in RACK_ADDR[lb]}
    lines = []
    for vip in VIPS:
        cells = []
        for r in ROUTERS:
            ns = Netns(state["namespaces"][r])
            router = FrrRouter(r, ns, Path(state["vty_sockets"][r]), Path())
            try:
                rib = frr_route_nexthops(router, vip)
                route = kernel_route(ns, vip)
            except LabError as e:
                cells.append(f"{r}: {e}")
                continue
            kernel = route_gateways(route) if route else set()
            hops = [names.get(h, h) + ("*" if h in kernel else "") for h in sorted(rib)]
            cells.append(f"{r}: {' '.join(hops) or '-':<12}")
        lines.append((f"{vip:<22} " + "   ".join(cells)).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- stale runs


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def cleanup_stale(prefix: str) -> list[str]:
    """Remove what a run with `prefix` left behind; return a line per thing removed.

    Uses the state file if there is one (recorded PIDs, checked against their start
    time), then every namespace named `prefix*`: processes still inside it are ours
    by construction and are stopped by PID before the namespace is deleted.
    """
    if not PREFIX_RE.match(prefix):
        raise LabError(f"{prefix!r} is not a lab run prefix (like an3f2a1c-)")
    done: list[str] = []
    state_path = STATE_DIR / f"{prefix}.json"
    state = _read_state(state_path)
    if state:
        recorded = [(int(p["pid"]), p.get("starttime"), None) for p in state["processes"]]
        alive = [pid for pid, st, _ in recorded if pid_alive(pid, st)]
        stop_pids(recorded)
        done += [f"stopped pid {pid}" for pid in alive]
    for name in list_netns():
        if not name.startswith(prefix):
            continue
        ns = Netns(name)
        pids = ns.pids()
        stop_pids([(pid, proc_starttime(pid), None) for pid in pids], timeout=3.0)
        done += [f"stopped pid {pid} in {name}" for pid in pids]
        ns.delete()
        done.append(f"deleted netns {name}")
    if state and state.get("tmp"):
        tmp = Path(state["tmp"])
        if tmp.name.startswith(prefix) and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(f"removed {tmp}")
    for tmp in Path(tempfile.gettempdir()).glob(f"{prefix}lab-*"):
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed {tmp}")
    if state_path.exists():
        state_path.unlink()
        done.append(f"removed {state_path}")
    return done


def known_prefixes() -> list[str]:
    """Run prefixes with a state file or a namespace still present."""
    found = {p.stem for p in STATE_DIR.glob("an*-.json")}
    found |= {m.group(0) for n in list_netns() if (m := re.match(r"an[0-9a-f]{6}-", n))}
    return sorted(found)


def _owner_alive(state: dict[str, Any]) -> bool:
    return state.get("owner") != "cli" and pid_alive(
        int(state.get("owner_pid", 0)) or -1, state.get("owner_starttime")
    )


# --------------------------------------------------------------------------- CLI


def _start_stacks(lab: Lab) -> None:
    """HAProxy, backends, DataPlaneAPI emulator and announcer on both LBs; wait for ECMP."""
    from tests.integration.stack import LbStack, wait_vips_at_routers  # it imports us

    stacks = [LbStack(lab, lb).start() for lb in LBS]
    try:
        wait_vips_at_routers(lab, timeout=lab.timeout)
    except WaitTimeout as e:
        for s in stacks:
            e.add_note(f"{s.lb} announcer log:\n{lab.proc(s.name('announcer')).log_tail()}")
        raise


def _cmd_up(args: argparse.Namespace) -> int:
    # With the LB stacks, announcer enables gobgpd's admin-down peers once its set is
    # in (fate-sharing), as in production; a bare lab enables them itself.
    lab = Lab(enable_peers=args.bare, wait_established=args.bare)
    lab.owner = "cli"  # nobody will tear it down but `lab.py down`
    t0 = time.monotonic()
    lab.__enter__()  # tears down itself if building fails
    if not args.bare:
        try:
            _start_stacks(lab)
        except BaseException as e:
            errors = lab.teardown()
            if errors:
                e.add_note("teardown incomplete: " + "; ".join(errors))
            raise
    lab._write_state()
    # Detach: the daemons keep running after we exit; `down` stops them by PID.
    for p in lab.procs.procs.values():
        p.popen = None
    what = "routers and gobgpd" if args.bare else "routers, gobgpd and both LB stacks"
    print(f"lab {lab.prefix} up in {time.monotonic() - t0:.1f}s ({what})")
    print(f"state: {lab.state_path}   logs: {lab.tmp}/<node>/")
    print("namespaces: " + " ".join(ns.name for ns in lab.nodes.values()))
    state = lab.state()
    if not args.bare:
        print("\nEvery VIP at both routers, next hops in FRR's RIB (* = in the kernel too);")
        print("192.0.2.200 is bound by HAProxy but outside announcer's allowed_prefixes:")
        print("  " + vip_table(state).replace("\n", "\n  "))
    print("\nProcesses (detached; stopped by PID on `make lab-down`):")
    for p in state["processes"]:
        print(f"  {p['name']:<18} pid {p['pid']:<8} log {p['log']}")
    print("\nInspect it:")
    print("  " + lab.commands().replace("\n", "\n  "))
    print(f"\nStatus: {sys.executable} {Path(__file__)} status")
    print(f"Tear down: make lab-down  (or {sys.executable} {Path(__file__)} down {lab.prefix})")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    prefixes = [args.prefix] if args.prefix else known_prefixes()
    for prefix in prefixes:
        state = _read_state(STATE_DIR / f"{prefix}.json")
        if not args.prefix and not args.force and state and _owner_alive(state):
            print(f"{prefix}: skipped, owned by running pid {state['owner_pid']} (use --force)")
            continue
        for line in cleanup_stale(prefix):
            print(f"{prefix}: {line}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    prefixes = [args.prefix] if args.prefix else known_prefixes()
    if not prefixes:
        print("no lab")
    present = set(list_netns())
    for prefix in prefixes:
        state = _read_state(STATE_DIR / f"{prefix}.json") or {}
        print(f"{prefix}: owner {state.get('owner', '?')} pid {state.get('owner_pid', '?')}")
        for n in sorted(x for x in present if x.startswith(prefix)):
            print(f"  netns {n}")
        for p in state.get("processes", []):
            alive = "running" if pid_alive(int(p["pid"]), p.get("starttime")) else "gone"
            print(f"  {p['name']:<18} pid {p['pid']:<8} {alive:<8} log {p['log']}")
        for node, vty in state.get("vty_sockets", {}).items():
            r = FrrRouter(node, Netns(prefix + node), Path(vty), Path())
            try:
                sessions = bgp_sessions(r)
            except LabError as e:
                print(f"  {node}: {e}")
                continue
            print(f"  {node} BGP: " + ", ".join(f"{a} {s}" for a, s in sorted(sessions.items())))
        names = {p["name"] for p in state.get("processes", [])}
        routers_up = set(ROUTERS) <= set(state.get("vty_sockets", {}))
        if routers_up and "lb1-announcer" in names:
            print("  VIP next hops (* = in the kernel too):")
            print("    " + vip_table(state).replace("\n", "\n    "))
            print("  " + lab_commands(state).replace("\n", "\n  "))
        elif state.get("namespaces") and state.get("vty_sockets", {}).get("r1"):
            lb1_api = state.get("gobgp_api", {}).get("lb1", "<tmp>/lb1/gobgpd/api.sock")
            print("  " + inspection_commands(state["namespaces"], state["vty_sockets"]["r1"],
                                             lb1_api).replace("\n", "\n  "))  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`lab.py up|down|status`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the lab and leave it running")
    up.add_argument(
        "--bare", action="store_true", help="only routers and gobgpd: no HAProxy, no announcer"
    )
    down = sub.add_parser("down", help="tear down labs (all without a live owner by default)")
    down.add_argument("prefix", nargs="?", help="run prefix, e.g. an3f2a1c-")
    down.add_argument("--force", action="store_true", help="also labs of running test sessions")
    status = sub.add_parser("status", help="show running labs")
    status.add_argument("prefix", nargs="?")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("lab.py needs root (network namespaces)", file=sys.stderr)
        return 77
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.cmd]
    return handler(args)


if __name__ == "__main__":
    # Run the CLI from the package module, not from `__main__`: stack.py imports
    # tests.integration.lab, and both must share one Lab class and its registry.
    sys.path.insert(0, str(REPO))
    from tests.integration import lab as _lab

    sys.exit(_lab.main())
