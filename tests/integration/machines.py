"""Debian machines with systemd as PID 1: systemd-nspawn containers in the lab's topology.

The systemd lab (tests/integration/test_systemd_lab.py) is the network-namespace lab's
topology (lab.py: the picture, the addresses, the same config files) with every node but
the switch and the client a booted Debian: r1 and r2 run Debian's frr with
tests/integration/frr/rN.conf, lb1 and lb2 are provisioned by scripts/provision/lb.sh (the
Vagrant provisioning) with announcer installed from the .deb built from the checkout.
Stdlib only, like lab.py.

How a machine runs (each trap found on this host, which has no systemd as PID 1 and
hybrid cgroups):

* Root file system: `scripts/build-image SUITE` (mmdebstrap, cached under .cache/images/),
  used read-only as the lower layer of an overlayfs per machine. The upper layer lives
  as long as the lab, so a reboot keeps what the provisioning installed.
* Network: the node's own namespace, made and wired by the test (lab.wire) before the
  machine boots and kept across its reboots, so addresses and veths survive them.
  systemd-nspawn joins it (`--network-namespace-path=`) and is also *started* inside it
  (`nsenter --net`) with a read-only sysfs of that namespace mounted over /sys: nspawn
  mounts the container's /sys from the namespace it runs in, and with the host's sysfs
  lb.sh would find the host's NICs by MAC. A writable sysfs makes nspawn wait for udev.
* /proc/sys/net writable and CAP_NET_ADMIN (SYSTEMD_NSPAWN_API_VFS_WRITABLE=network,
  --capability=): what nspawn gives a container of its own network; with a namespace
  path it gives neither, and the lab's boot script sets sysctls and addresses.
* cgroups: without systemd on the host every nspawn would put its container in the
  cgroup it was started from, so two containers' announcer.service would be one cgroup
  (and `systemctl kill` fails with EIO). Each machine starts from a cgroup of its own,
  in every hierarchy that tracks processes, and gets the unified hierarchy
  (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1): trixie's systemd 257 no longer boots on cgroup v1.
* The launcher is one exec chain (unshare -> nsenter -> sh -> systemd-nspawn), so the
  PID the test started is nspawn's: SIGTERM halts the container cleanly, its exit status
  says why it ended (133: the container asked for a reboot).
* Commands run inside with nsenter into all of the container's namespaces, with a clean
  environment; their processes stay in the test's cgroup, outside the container's units.

Teardown removes, even after a failure: the machines (halted, or killed through their
cgroup), the cgroups, the overlay mounts, the namespaces (lab.Lab-style by prefix) and
the temporary directory.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.integration.lab import (
    CLIENT,
    LBS,
    NODES,
    RACK_ADDR,
    REPO,
    ROUTERS,
    SWITCH,
    LabError,
    Netns,
    Topology,
    list_netns,
    new_prefix,
    proc_starttime,
    remove_namespaces,
    run,
    stop_pids,
    wait_until,
    wire,
)

# The Vagrantfile's MAC of each LB's rack NIC: lb.sh finds the NIC by it.
LB_RACK_MAC = {"lb1": "02:00:00:00:64:0b", "lb2": "02:00:00:00:64:0c"}
# The environment lb.sh gets from the Vagrantfile, per LB (scripts/provision/lb.sh).
EXIT_REBOOT = 133  # systemd-nspawn's exit status when the container rebooted
BOOT_TIMEOUT = 60.0
CGROUP_FS = Path("/sys/fs/cgroup")
FRR_DIR = Path(__file__).resolve().parent / "frr"


def build_image(suite: str) -> Path:
    """The cached root file system of `suite` (scripts/build-image; built on first use)."""
    cp = run([str(REPO / "scripts" / "build-image"), suite], timeout=900)
    root = Path(cp.stdout.strip().splitlines()[-1])
    if (
        not (root / "usr/lib/systemd/systemd").exists()
        and not (root / "lib/systemd/systemd").exists()
    ):
        raise LabError(f"{root}: no systemd in the image of {suite}")
    return root


def build_deb(outdir: Path) -> Path:
    """announcer_<version>_all.deb built from this checkout by scripts/build-deb."""
    cp = run([str(REPO / "scripts" / "build-deb"), str(outdir)], timeout=900)
    deb = Path(cp.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise LabError(f"scripts/build-deb printed {deb}, which is not a file")
    return deb


def cgroup_hierarchies() -> list[Path]:
    """The mounted hierarchies that track processes: the unified one (cgroup2) and, on a
    hybrid host, systemd's named v1 hierarchy."""
    if run(["stat", "-f", "-c", "%T", str(CGROUP_FS)]).stdout.strip() == "cgroup2fs":
        return [CGROUP_FS]
    found = [p for p in (CGROUP_FS / "unified", CGROUP_FS / "systemd") if p.is_dir()]
    if not found:
        raise LabError(f"no cgroup2 or name=systemd hierarchy under {CGROUP_FS}")
    return found


# Runs as `sh -c LAUNCH sh CGROUPS STASH -- NSPAWN-ARGS...` inside the node's network
# namespace and a private mount namespace; see the module docstring for each step.
LAUNCH = r"""
set -e
cgroups=$1 stash=$2
shift 3
for cg in $cgroups; do mkdir -p "$cg"; echo $$ > "$cg/cgroup.procs"; done
mkdir -p "$stash"
mount --rbind /sys/fs/cgroup "$stash"
mount -t sysfs -o ro sysfs /sys
mount --rbind "$stash" /sys/fs/cgroup
exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 SYSTEMD_NSPAWN_API_VFS_WRITABLE=network \
    systemd-nspawn "$@"
"""

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "cat"}


class Machine:
    """One booted Debian (systemd-nspawn -b) in the network namespace `netns`."""

    def __init__(self, name: str, netns: Netns, image: Path, workdir: Path, unit: str) -> None:
        self.name = name  # the node: lb1, r2, ...
        self.netns = netns
        self.image = image
        self.dir = workdir / name
        self.root = self.dir / "root"
        self.log = self.dir / "console.log"
        # nspawn's machine name: unique on the host (it keeps a lock and a directory
        # per name under /run/systemd/nspawn).
        self.unit = unit
        self.cgroups = [h / "announcer-lab" / unit for h in cgroup_hierarchies()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots: list[float] = []  # seconds from start to `running`, per boot
        self._leader: int | None = None
        self._mounted = False

    # ---- lifecycle

    def prepare(self) -> None:
        """The overlay root and the machine's identity (its host name)."""
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        lower, upper, work = self.image, self.dir / "upper", self.dir / "work"
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={upper},workdir={work}", str(self.root)])  # fmt: skip
        self._mounted = True
        (self.root / "etc/hostname").write_text(self.name + "\n")

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start the container and wait until systemd says the system is running."""
        if self.proc is not None and self.proc.poll() is None:
            raise LabError(f"{self.name}: already running")
        if not self._mounted:
            self.prepare()
        t0 = time.monotonic()
        argv = [
            "unshare", "--mount", "--propagation", "private",
            "nsenter", f"--net=/run/netns/{self.netns.name}",
            "sh", "-c", LAUNCH, "sh",
            " ".join(map(str, self.cgroups)), str(self.dir / "cgroup-stash"), "--",
            "--quiet", "--boot", f"--directory={self.root}", f"--machine={self.unit}",
            "--register=no", "--keep-unit", "--console=read-only",
            f"--network-namespace-path=/run/netns/{self.netns.name}",
            "--capability=CAP_NET_ADMIN",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._leader = None
        state = wait_until(
            lambda: self._system_state(),
            timeout,
            0.2,
            check=lambda s: s in ("running", "degraded"),
            what=f"{self.name}: systemd up",
        )
        self.boots.append(time.monotonic() - t0)
        if state == "degraded":
            failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise LabError(f"{self.name}: booted degraded: {failed.strip()}")

    def _system_state(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise LabError(f"{self.name}: systemd-nspawn exited ({self.exit_status()}): {tail}")
        return self.exec(["systemctl", "is-system-running"], check=False, timeout=5).stdout.strip()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout: float) -> int:
        """Wait for nspawn to end; its exit status (133 after a reboot inside)."""
        if self.proc is None:
            raise LabError(f"{self.name}: never started")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.name}: still running after {timeout:.0f}s") from None

    def halt(self, timeout: float = 60.0) -> int:
        """A clean poweroff: SIGTERM to nspawn makes the container's systemd shut down."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def destroy(self) -> list[str]:
        """Stop it however it is (halt, else kill its cgroup), unmount, remove its files."""
        errors: list[str] = []
        if self.running():
            try:
                self.halt(30.0)
            except Exception as e:
                errors.append(f"{self.name}: no clean halt: {e}")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        errors += self._remove_cgroups()
        if self._mounted:
            cp = run(["umount", str(self.root)], check=False)
            if cp.returncode != 0:
                run(["umount", "--lazy", str(self.root)], check=False)
                errors.append(f"{self.name}: overlay busy, lazily unmounted: {cp.stderr.strip()}")
            self._mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(Path("/run/systemd/nspawn/propagate") / self.unit, ignore_errors=True)
        return errors

    def _remove_cgroups(self) -> list[str]:
        errors: list[str] = []
        for cg in self.cgroups:
            if not cg.exists():
                continue
            kill = cg / "cgroup.kill"  # cgroup2: the whole subtree at once
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
            pids = []
            for procs in cg.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in procs.read_text().split()]
            stop_pids([(pid, proc_starttime(pid), None) for pid in pids], timeout=2.0)
            for d in [*sorted((p for p in cg.rglob("*") if p.is_dir()), reverse=True), cg]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            if cg.exists():
                errors.append(f"{self.name}: cgroup {cg} not removed")
            with contextlib.suppress(OSError):
                cg.parent.rmdir()  # announcer-lab, once the last machine is gone
        return errors

    # ---- inside

    def leader(self) -> int:
        """PID of the container's PID 1 (the child of systemd-nspawn)."""
        if self._leader is not None and proc_starttime(self._leader) is not None:
            return self._leader
        assert self.proc is not None
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        children = kids.read_text().split() if kids.exists() else []
        if not children:
            raise LabError(f"{self.name}: no container process yet")
        self._leader = int(children[0])
        return self._leader

    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside every namespace of the container, clean environment."""
        env = [f"{k}={v}" for k, v in ENV.items()]
        cmd = ["nsenter", "-t", str(self.leader()), "-m", "-u", "-i", "-n", "-p", "-C", "--",
               "env", "-i", *env, *argv]  # fmt: skip
        cp = run(cmd, check=False, timeout=timeout, input=input)
        if check and cp.returncode != 0:
            raise LabError(
                f"{self.name}: {' '.join(argv)}: exit {cp.returncode}: "
                f"{(cp.stderr + cp.stdout).strip()[-3000:]}"
            )
        return cp

    def sh(self, script: str, *, check: bool = True, timeout: float = 60.0) -> str:
        return self.exec(
            ["bash", "-euo", "pipefail", "-c", script], check=check, timeout=timeout
        ).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show UNIT -p A -p B` as a dict."""
        argv = ["systemctl", "show", unit]
        for p in props:
            argv += ["-p", p]
        out = self.exec(argv).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, *extra: str) -> str:
        return self.exec(
            ["journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit, *extra]
        ).stdout

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside (through the overlay's merged view)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def read(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()


def vtysh(router: Machine, *commands: str) -> str:
    argv = ["vtysh"]
    for c in commands:
        argv += ["-c", c]
    out = router.exec(argv, timeout=15).stdout
    bad = [ln for ln in out.splitlines() if ln.startswith("% ")]
    if bad:
        raise LabError(f"{router.name}: vtysh {list(commands)}: {bad}")
    return out


def vtysh_json(router: Machine, command: str) -> Any:
    out = vtysh(router, command)
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise LabError(f"{router.name}: {command}: not JSON: {out[:300]!r}") from e


class SystemdLab(Topology):
    """lab.py's topology with booted Debian machines; a context manager that always tears
    down what it built (machines, cgroups, mounts, namespaces, files).

    `with SystemdLab("trixie", deb) as lab:` wires the namespaces, boots r1 and r2 and
    configures their frr, boots lb1 and lb2 and runs lb.sh in each, and waits until every
    BGP session is Established and both LBs' announcer.service is active.
    """

    def __init__(self, suite: str, deb: Path, image: Path | None = None) -> None:
        self.suite = suite
        self.deb = deb
        self.image = image or build_image(suite)
        self.prefix = new_prefix()
        self.nodes = {n: Netns(self.prefix + n) for n in NODES}
        self.created: list[Netns] = []
        self.machines: dict[str, Machine] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}systemd-"))
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.timings[what] = time.monotonic() - t0

    def build(self) -> None:
        taken = [n for n in list_netns() if n.startswith(self.prefix)]
        if taken:
            raise LabError(f"prefix {self.prefix} in use by {taken}")
        with self.timed("network"):
            for ns in self.nodes.values():
                ns.add()
                self.created.append(ns)
                ns.prepare()
            wire(self.nodes, addressed=(SWITCH, *ROUTERS, CLIENT))
            for lb, mac in LB_RACK_MAC.items():
                self.nodes[lb].ip("link", "set", "rack", "address", mac)
        for node in (*ROUTERS, *LBS):
            self.machines[node] = Machine(
                node, self.nodes[node], self.image, self.tmp, f"{self.prefix}{node}"
            )
        with self.timed("boot r1 r2 lb1 lb2"):
            for m in self.machines.values():
                m.boot()
        with self.timed("routers: frr"):
            for r in ROUTERS:
                self.provision_router(self.machines[r])
        with self.timed("lb1 lb2: lb.sh"):
            for lb in LBS:
                self.provision_lb(self.machines[lb])
        with self.timed("sessions established"):
            self.wait_sessions()

    def provision_router(self, m: Machine) -> None:
        """Debian's frr with the netns lab's config: bgpd on, the integrated config."""
        m.write("/etc/frr/frr.conf", (FRR_DIR / f"{m.name}.conf").read_text(), 0o640)
        m.sh(
            "chown frr:frr /etc/frr/frr.conf\n"
            "sed -i 's/^bgpd=no/bgpd=yes/' /etc/frr/daemons\n"
            "systemctl enable --quiet frr\n"
            "systemctl restart frr\n"
        )

    def lb_env(self, lb: str) -> dict[str, str]:
        """What the Vagrantfile gives lb.sh, with the .deb inside the machine."""
        v4, v6 = RACK_ADDR[lb]
        return {
            "REPO": "/srv/announcer-src",
            "LAB_NODE": lb,
            "RACK_MAC": LB_RACK_MAC[lb],
            "RACK_V4": f"{v4}/24",
            "RACK_V6": f"{v6}/64",
            "ROUTERS_V4": " ".join(RACK_ADDR[r][0] for r in ROUTERS),
            "ROUTERS_V6": " ".join(RACK_ADDR[r][1] for r in ROUTERS),
            "EDGE_V4": "203.0.113.0/24",
            "EDGE_V6": "2001:db8:fe::/64",
            "GOBGP_CONFIG": f"gobgp/{lb}.toml",
            "ANNOUNCER_CONFIG": f"tests/integration/announcer/{lb}.yaml",
            "ANNOUNCER_DEB": f"/srv/{self.deb.name}",
        }

    def provision_lb(self, m: Machine) -> None:
        """scripts/provision/lb.sh as Vagrant runs it, on a copy of the checkout's files."""
        src = m.root / "srv/announcer-src"
        for rel in ("scripts/provision", "systemd", "gobgp", "tests/integration/announcer",
                    "tests/integration/haproxy", "tests/support/dpapi_emulator.py"):  # fmt: skip
            dst = src / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / rel).is_dir():
                shutil.copytree(REPO / rel, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(REPO / rel, dst)
        shutil.copy2(self.deb, m.root / "srv" / self.deb.name)
        env = [f"{k}={v}" for k, v in self.lb_env(m.name).items()]
        cp = m.exec(["env", *env, "bash", "/srv/announcer-src/scripts/provision/lb.sh"],
                    check=False, timeout=300)  # fmt: skip
        (self.tmp / f"provision-{m.name}.log").write_text(cp.stdout + cp.stderr)
        if cp.returncode != 0:
            raise LabError(
                f"{m.name}: lb.sh exit {cp.returncode}: {(cp.stdout + cp.stderr)[-4000:]}"
            )

    def wait_sessions(self, timeout: float = 60.0) -> None:
        want = {a for lb in LBS for a in RACK_ADDR[lb]}
        for r in ROUTERS:
            wait_until(
                functools.partial(self.sessions, r),
                timeout,
                0.5,
                check=lambda s: all(s.get(a) == "Established" for a in want),
                what=f"{r}: sessions to lb1 and lb2 Established",
            )

    def teardown(self) -> list[str]:
        errors: list[str] = []
        for m in reversed(list(self.machines.values())):
            try:
                errors += m.destroy()
            except Exception as e:
                errors.append(f"{m.name}: {e}")
        errors += remove_namespaces(self.created)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return errors

    # ---- what the routers see

    def sessions(self, router: str) -> dict[str, str]:
        data = vtysh_json(self.machines[router], "show bgp summary json")
        return {
            addr: peer.get("state", "?")
            for fam in ("ipv4Unicast", "ipv6Unicast")
            for addr, peer in data.get(fam, {}).get("peers", {}).items()
        }

    def routes(self, router: str) -> dict[str, list[dict[str, Any]]]:
        """prefix -> its paths (`show bgp ipv4/ipv6 unicast json` with attributes)."""
        m = self.machines[router]
        out: dict[str, list[dict[str, Any]]] = {}
        for afi in ("ipv4", "ipv6"):
            data = vtysh_json(m, f"show bgp {afi} unicast json")
            out.update(data.get("routes", {}))
        return out

    def detail(self, router: str, prefix: str) -> dict[str, Any]:
        """`show bgp ... PREFIX json`: paths with communities and AS paths."""
        afi = "ipv4" if ipaddress.ip_network(prefix).version == 4 else "ipv6"
        data: dict[str, Any] = vtysh_json(
            self.machines[router], f"show bgp {afi} unicast {prefix} json"
        )
        return data

    def client_fetch(self, url: str, local_port: int | None = None) -> str:
        argv = ["curl", "-s", "--max-time", "3"]
        if local_port:
            argv += ["--local-port", str(local_port)]
        cp = self.nodes[CLIENT].exec([*argv, url], check=False, timeout=10)
        return cp.stdout.strip()


__all__ = [
    "EXIT_REBOOT",
    "Machine",
    "SystemdLab",
    "build_deb",
    "build_image",
]
