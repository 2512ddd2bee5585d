"""The Vagrant lab boots: `vagrant up lb1` with the libvirt provider, for real.

What runs: Debian's Vagrant and vagrant-libvirt against a libvirtd of the test's own
(tests/integration/virt.py: its network and mount namespaces, so nothing of it
outlives the test), the repository's own Vagrantfile in a copy of the checkout, the
box scripts/build-box makes from Debian's packages, and scripts/provision/lb.sh
installing announcer from the .deb scripts/build-deb makes of this checkout. The core
routers are the netns lab's: FRR's zebra and bgpd with tests/integration/frr/rN.conf in
namespaces the test made, each with a veth on the bridge of the libvirt network that
is lb1's rack LAN. Assertions are on state, with generous deadlines (where KVM is
unusable QEMU emulates the CPU, 5-10x slower than the namespace lab):

* announcer.service (from the package: /usr/bin/announcer) and gobgpd.service are
  active under the VM's systemd;
* every VIP lb1 serves is at both routers, installed with lb1's rack address as next
  hop; 192.0.2.200 (HAProxy binds it, announcer must not announce it) is not.

`vagrant up --no-provision` first, then the routers are wired to the rack bridge
(vagrant-libvirt names the bridge when it creates the network), then `vagrant
provision`: lb.sh ends by waiting for its four BGP sessions, which are then up at once.
Teardown, also after a failure: `vagrant destroy`, the routers and libvirt stopped by
PID, the namespaces and the temp dir (the box registration lives in its VAGRANT_HOME)
removed. The phases' durations are printed (`pytest -s`) and recorded in
docs/operations.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.lab import (
    FRR_USER,
    RACK_ADDR,
    ROUTERS,
    FrrRouter,
    LabError,
    Netns,
    ProcessRegistry,
    add_veth,
    bgp_sessions,
    frr_route_nexthops,
    list_netns,
    new_prefix,
    spawn_frr_daemon,
    wait_frr_daemon,
    wait_until,
)
from tests.integration.machines import build_deb
from tests.integration.virt import Libvirt

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
FRR_CONFIGS = REPO / "tests/integration/frr"
HAPROXY_CFG = REPO / "tests/integration/haproxy/lb.cfg"
LB = "lb1"
BOX_NAME = "announcer/bookworm"  # the Vagrantfile's LIBVIRT_BOX
RACK_NETWORK = "announcer-rack"  # the Vagrantfile's RACK[:name]
NOT_ANNOUNCED = "192.0.2.200/32"  # bound by HAProxy, not in announcer's config
# Deadlines: generous, for QEMU's software emulation on a busy 2-core runner.
UP_TIMEOUT = 1200.0
PROVISION_TIMEOUT = 1200.0
STATE_TIMEOUT = 300.0


def need(tool: str) -> None:
    """Fail (never skip) when a tool is missing: scripts/deps installs it."""
    assert shutil.which(tool), f"{tool} is not installed (scripts/deps installs it)"


def vips() -> set[str]:
    """The VIPs announcer serves in the lab: HAProxy's literal binds but 192.0.2.200."""
    found = re.findall(
        r"^\s*bind\s+\[?([0-9a-fA-F.:]*[0-9a-fA-F])\]?:\d+", HAPROXY_CFG.read_text(), re.M
    )
    nets = {str(ipaddress.ip_network(a)) for a in found}
    assert NOT_ANNOUNCED in nets, f"{HAPROXY_CFG}: no {NOT_ANNOUNCED} bind: update this test"
    return nets - {NOT_ANNOUNCED}


@dataclass
class VagrantLab:
    """What the fixture built, for the tests and for teardown."""

    tmp: Path
    prefix: str
    project: Path
    virt: Libvirt
    env: dict[str, str]
    procs: ProcessRegistry = field(default_factory=ProcessRegistry)
    routers: dict[str, FrrRouter] = field(default_factory=dict)
    netns: list[Netns] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    log: Path = Path("/dev/null")

    def vagrant(self, *args: str, timeout: float = 300.0) -> str:
        """`vagrant ARGS` in the project copy, inside libvirt's namespaces; LabError
        with the output's tail and the VM's serial console when it fails."""
        try:
            cp = self.virt.run(
                ["vagrant", "--timestamp", *args],
                env=self.env,
                cwd=self.project,
                timeout=timeout,
                log=self.log,
            )
        except LabError as e:
            raise LabError(f"{e}\n--- serial console of {LB}:\n{self.serial_tail()}") from e
        return cp.stdout

    def ssh(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command as root on the LB, over the ssh configuration Vagrant uses."""
        return self.virt.run(
            ["ssh", "-F", str(self.tmp / "ssh_config"), LB, "sudo", "sh", "-c", f"'{command}'"],
            check=check,
            timeout=60.0,
        )

    def serial_tail(self, lines: int = 40) -> str:
        path = self.project / ".vagrant" / f"{LB}-serial.log"
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            return f"<{path}: {e}>"
        return "\n".join(text.splitlines()[-lines:])

    def phase(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 1)


def copy_checkout(dest: Path) -> None:
    """The files git has (tracked, or new and not ignored), as they are in the worktree:
    the Vagrant project directory, so that the rsync to /vagrant is small and the .deb
    goes into the copy's dist/, not the checkout's."""
    cp = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in cp.stdout.decode().split("\0"):
        src = REPO / name
        if name and src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)


def start_routers(lab: VagrantLab, bridge: str) -> None:
    """r1 and r2 (FRR, the netns lab's configs) on lb1's rack LAN: a veth each, the
    other end in the rack network's bridge."""
    for node in ROUTERS:
        ns = Netns(f"{lab.prefix}{node}")
        ns.add()
        lab.netns.append(ns)
        ns.prepare()
        for key in ("ipv4.ip_forward", "ipv6.conf.all.forwarding"):
            ns.sysctl(f"net.{key}", "1")
        port = f"{node}-rack"
        add_veth(lab.virt.netns, port, ns, "rack")
        lab.virt.netns.ip("link", "set", port, "master", bridge)
        for cidr in (f"{RACK_ADDR[node][0]}/24", f"{RACK_ADDR[node][1]}/64"):
            ns.add_addr("rack", cidr)
        run_dir = lab.tmp / node
        run_dir.mkdir()
        config = run_dir / "frr.conf"
        shutil.copyfile(FRR_CONFIGS / f"{node}.conf", config)
        (run_dir / "empty.conf").write_text("")
        for p in (run_dir, config, run_dir / "empty.conf"):
            shutil.chown(p, FRR_USER, FRR_USER)
        lab.routers[node] = FrrRouter(node, ns, run_dir, config)
    for daemon in ("zebra", "bgpd"):
        procs = [spawn_frr_daemon(lab.procs, r, daemon) for r in lab.routers.values()]
        for router, proc in zip(lab.routers.values(), procs, strict=True):
            wait_frr_daemon(router, daemon, proc, 60.0)


def rack_bridge(virt: Libvirt) -> str:
    """The bridge libvirt made for the rack network (vagrant-libvirt chose its name)."""
    m = re.search(r"^Bridge:\s+(\S+)", virt.virsh("net-info", RACK_NETWORK), re.M)
    assert m, f"no bridge in `virsh net-info {RACK_NETWORK}`"
    return m[1]


def diagnostics(lab: VagrantLab) -> str:
    """What the LB's systemd says about the units lb.sh started, for a failure message."""
    command = (
        "sudo systemctl --no-pager status announcer gobgpd haproxy announcer-lab-dpapi; "
        "sudo journalctl --no-pager -n 60 -u announcer -u gobgpd"
    )
    try:
        return lab.vagrant("ssh", LB, "-c", command, timeout=120.0)
    except LabError as e:
        return f"<vagrant ssh failed: {e}>"


def teardown(lab: VagrantLab) -> list[str]:
    """Remove everything, also after a failure; what went wrong on the way."""
    problems: list[str] = []
    if lab.virt.pids.get("libvirtd"):
        try:
            lab.vagrant("destroy", "-f", timeout=300.0)
        except LabError as e:
            problems.append(f"vagrant destroy: {e}")
    lab.procs.stop_all()
    for ns in lab.netns:
        ns.delete()
    problems += lab.virt.stop()  # also what libvirt left running, by PID
    left = [n for n in list_netns() if n.startswith(lab.prefix)]
    if left:
        problems.append(f"namespaces left: {left}")
    return problems


@pytest.fixture(scope="module")
def vagrant_lab() -> Iterator[VagrantLab]:
    for tool in ("vagrant", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img"):
        need(tool)
    cp = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True)
    assert "vagrant-libvirt" in cp.stdout, f"vagrant-libvirt missing: {cp.stdout}{cp.stderr}"
    t_all = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="announcer-vagrant-"))
    os.chmod(tmp, 0o755)  # the qemu user reaches the box's kernel and the volumes below
    prefix = new_prefix()
    project = tmp / "project"
    project.mkdir()
    env = {
        **os.environ,
        "VAGRANT_HOME": str(tmp / "vagrant.d"),  # the box registration dies with tmp
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
    }
    virt = Libvirt(tmp, prefix)
    lab = VagrantLab(tmp, prefix, project, virt, env, log=tmp / "vagrant.log")
    try:
        t0 = time.monotonic()
        box = subprocess.run(
            [str(REPO / "scripts/build-box"), "bookworm"],
            capture_output=True, text=True, check=False, timeout=1200,
        )  # fmt: skip
        assert box.returncode == 0, f"scripts/build-box failed:\n{box.stderr[-3000:]}"
        lab.phase("build-box (cached after the first run)", t0)

        t0 = time.monotonic()
        copy_checkout(project)
        build_deb(project / "dist")  # LabError with the build's output on failure
        assert list((project / "dist").glob("announcer_*_all.deb")), "no .deb in dist/"
        lab.phase("copy checkout + build-deb", t0)

        t0 = time.monotonic()
        virt.start()
        lab.phase("libvirtd up", t0)
        t0 = time.monotonic()
        lab.vagrant("box", "add", "--name", BOX_NAME, box.stdout.strip(), timeout=600.0)
        lab.phase("vagrant box add", t0)
        t0 = time.monotonic()
        lab.vagrant("up", LB, "--provider", "libvirt", "--no-provision", timeout=UP_TIMEOUT)
        lab.phase(f"vagrant up {LB} --no-provision (boot, ssh, rsync)", t0)

        t0 = time.monotonic()
        start_routers(lab, rack_bridge(virt))
        lab.phase("routers r1 r2 (FRR) on the rack bridge", t0)

        t0 = time.monotonic()
        try:
            lab.vagrant("provision", LB, timeout=PROVISION_TIMEOUT)
        except LabError as e:
            raise LabError(f"{e}\n--- in {LB}:\n{diagnostics(lab)}") from e
        lab.phase(f"vagrant provision {LB} (lb.sh, .deb)", t0)
        (tmp / "ssh_config").write_text(lab.vagrant("ssh-config", LB, timeout=120.0))
        lab.timings["total setup"] = round(time.monotonic() - t_all, 1)
        print("\nVagrant lab timings (s):", lab.timings)
        yield lab
    finally:
        t0 = time.monotonic()
        problems = teardown(lab)
        lab.phase("teardown", t0)
        print("\nVagrant lab timings (s):", lab.timings)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not problems, f"teardown: {problems}"


def test_announcer_and_gobgpd_run_under_the_vms_systemd(vagrant_lab: VagrantLab) -> None:
    def states() -> str:
        return vagrant_lab.ssh(
            "systemctl is-active announcer.service gobgpd.service", check=False
        ).stdout

    wait_until(
        states,
        timeout=STATE_TIMEOUT,
        interval=2.0,
        check=lambda out: out.split() == ["active", "active"],
        what=f"{LB}: announcer and gobgpd active",
    )
    # Installed from the package, started as the package's unit (Type=notify: active
    # means READY=1 came after the first sync).
    show = vagrant_lab.ssh(
        'dpkg-query -W -f="\\${Status}\\n" announcer; '
        "systemctl show -p Type -p ExecStart -p NRestarts announcer.service"
    ).stdout
    assert "install ok installed" in show, show
    assert "Type=notify" in show and "path=/usr/bin/announcer " in show, show
    assert "NRestarts=0" in show, show


def test_the_vips_are_at_the_routers_with_lb1s_next_hop(vagrant_lab: VagrantLab) -> None:
    want = vips()
    hop = {4: RACK_ADDR[LB][0], 6: RACK_ADDR[LB][1]}
    for router in vagrant_lab.routers.values():
        wait_until(
            lambda r=router: bgp_sessions(r),
            timeout=STATE_TIMEOUT,
            interval=1.0,
            check=lambda s: s.get(hop[4]) == "Established" and s.get(hop[6]) == "Established",
            what=f"{router.node}: both sessions to {LB} established",
        )
        for prefix in sorted(want):
            nexthop = hop[ipaddress.ip_network(prefix).version]
            wait_until(
                lambda r=router, p=prefix: frr_route_nexthops(r, p),
                timeout=STATE_TIMEOUT,
                interval=1.0,
                check=lambda hops, n=nexthop: hops == {n},
                what=f"{router.node}: {prefix} installed via {nexthop}",
            )
        assert frr_route_nexthops(router, NOT_ANNOUNCED) == set()
