"""A private libvirt for one test: libvirtd and virtlogd in namespaces the test made.

Stdlib only, like lab.py. `virt.start()` starts virtlogd and
libvirtd inside a new network namespace and a private mount namespace, and
`virt.run([...])` runs a command (vagrant, virsh) inside both, where it sees that
libvirt and reaches the VMs' networks. `virt.stop()` stops everything by PID and
deletes the namespace: libvirt's own children (qemu, dnsmasq) included.

Why the namespaces, and the traps met on the way:

* The network namespace: every bridge libvirt makes (the management network, the lab
  LANs) and every address on it exist only there. Debian's packaged `default` network
  (192.168.122.0/24) is never defined: /etc/libvirt/qemu is a private empty directory.
* The mount namespace: libvirt's state (/etc/libvirt/qemu, /etc/libvirt/storage,
  /var/lib/libvirt with the storage pool that holds the box's volume, /var/cache/libvirt,
  /var/log/libvirt, /run/libvirt) is bound from directories under the test's temp dir,
  so a killed run leaves no domain, network, pool or volume on the host, and a libvirt
  the host may run is untouched. (A missing mount point, such as /etc/libvirt/storage
  before libvirt ever ran, is created empty on the host: the one trace left.)
* The host has no systemd: libvirtd and virtlogd run in the foreground as the test's
  children. `ip netns exec` would remount /sys without /sys/fs/cgroup, where
  libvirtd puts each qemu in a cgroup; here the namespace's own sysfs is mounted (libvirt
  must see the namespace's bridges and taps) and the host's cgroup tree bound back.
* A /dev/kvm that boots no Debian kernel (this machine's is PVM's: no vmx/svm flags)
  cost about 130 s per `vagrant up`: libvirtd started in 12 s instead of 4, and on
  defining and on starting the domain it spent about 50 s each spawning short-lived
  QEMU processes (capability probes). Where the CPU has no vmx/svm the Vagrantfile picks
  QEMU's emulation, and here /dev/kvm is covered by an unreadable file in the mount
  namespace, so libvirt sees KVM as unusable, as it is. libvirt would carry that mount
  into each VM's private /dev and fails to, so the private libvirtd's qemu.conf (a copy
  of Debian's) also turns the per-VM mount namespace off.
* The qemu processes run as Debian's `libvirt-qemu` user: libvirt hands them the disk,
  kernel and initrd, but every directory above those must be searchable by that user.
  `mkdtemp` makes 0700 directories: the temp root is chmod 0755.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.integration.lab import (
    LabError,
    Netns,
    pid_alive,
    proc_starttime,
    stop_pids,
    wait_until,
)

# Host directory -> name of the private directory bound over it.
PRIVATE_DIRS = {
    "/etc/libvirt/qemu": "etc-qemu",
    "/etc/libvirt/storage": "etc-storage",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
    "/run/libvirt": "run",
}
DAEMONS = ("virtlogd", "libvirtd")


def hardware_virtualization() -> bool:
    """The CPU offers vmx or svm (the Vagrantfile's test for choosing KVM)."""
    flags = Path("/proc/cpuinfo").read_text()
    return any(f" {flag}" in flags for flag in ("vmx", "svm"))


class Libvirt:
    """libvirtd + virtlogd in a network namespace and a mount namespace of their own."""

    def __init__(self, tmp: Path, prefix: str, timeout: float = 60.0) -> None:
        self.root = tmp / "libvirt"
        self.netns = Netns(f"{prefix}virt")
        self.timeout = timeout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: dict[str, tuple[int, int | None]] = {}

    def start(self) -> None:
        """Create the namespaces and start the daemons; return when libvirtd answers."""
        for tool in ("unshare", "nsenter", "virtlogd", "libvirtd", "virsh"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed (scripts/deps)")
        self.netns.add()
        self.netns.prepare()
        self.root.mkdir(parents=True)
        for name in PRIVATE_DIRS.values():
            (self.root / name).mkdir()
        (self.root / "cgroup").mkdir()
        hide_kvm = ""
        if Path("/dev/kvm").exists() and not hardware_virtualization():
            (self.root / "no-kvm").touch(mode=0o600)
            # libvirt would carry that mount into each VM's own /dev and fails to
            # ("Unable to move ... mount to /dev/kvm"): no per-VM mount namespace.
            qemu_conf = self.root / "qemu.conf"
            shutil.copyfile("/etc/libvirt/qemu.conf", qemu_conf)
            with qemu_conf.open("a") as f:
                f.write("\n# tests/integration/virt.py: /dev/kvm is covered\nnamespaces = []\n")
            hide_kvm = (
                f" && mount --bind {self.root / 'no-kvm'} /dev/kvm"
                f" && mount --bind {qemu_conf} /etc/libvirt/qemu.conf"
            )
        binds = " && ".join(
            f"mkdir -p {host} && mount --bind {self.root / name} {host}"
            for host, name in PRIVATE_DIRS.items()
        )
        mounts = (
            f"mount --rbind /sys/fs/cgroup {self.root / 'cgroup'} && "
            "mount -t sysfs sysfs /sys && "
            f"mount --rbind {self.root / 'cgroup'} /sys/fs/cgroup && {binds}{hide_kvm}"
        )
        # In the foreground, as our children, so that stop() reaps them (daemonized, they
        # would become zombies of a PID 1 that may not reap). `unshare` and `nsenter`
        # exec (neither forks for these namespaces): each PID is the daemon's.
        self._spawn(
            "virtlogd",
            [
                "unshare", "--mount", "--propagation", "private", "--",
                "nsenter", f"--net=/run/netns/{self.netns.name}", "--",
                "sh", "-c", f"{mounts} && exec virtlogd --pid-file {self.root / 'virtlogd.pid'}",
                "virtlogd",
            ],
        )  # fmt: skip
        wait_until(
            lambda: (self.root / "run" / "virtlogd-sock").exists() or not self._alive("virtlogd"),
            timeout=self.timeout,
            what="virtlogd listens",
        )
        pid_file = self.root / "libvirtd.pid"  # not /run/libvirtd.pid, the host's
        self._spawn(
            "libvirtd", [*self.nsenter("virtlogd"), "libvirtd", "--pid-file", str(pid_file)]
        )
        wait_until(
            lambda: (
                self.run(["virsh", "-c", "qemu:///system", "version"], check=False).returncode == 0
            ),
            timeout=self.timeout,
            interval=0.5,
            what="libvirtd answers",
        )

    def _spawn(self, daemon: str, argv: Sequence[str]) -> None:
        with open(self.root / f"{daemon}.log", "ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[daemon] = popen
        self.pids[daemon] = (popen.pid, proc_starttime(popen.pid))

    def _alive(self, daemon: str) -> bool:
        return pid_alive(*self.pids[daemon])

    def nsenter(self, daemon: str = "libvirtd") -> list[str]:
        """The prefix that runs a command in the daemons' network and mount namespaces."""
        if daemon not in self.pids:
            raise LabError(f"{daemon} was not started")
        pid, starttime = self.pids[daemon]
        if not pid_alive(pid, starttime):
            log = (self.root / f"{daemon}.log").read_text(errors="replace")[-2000:]
            raise LabError(f"{daemon} (pid {pid}) is not running:\n{log}")
        return ["nsenter", f"--target={pid}", "--mount", "--net", "--"]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespaces. With `log`, its output (stdout and stderr)
        is appended there as it comes, and returned as stdout."""
        # setns() into a mount namespace moves the cwd to its root: nsenter's --wd.
        wd = [f"--wd={cwd}"] if cwd is not None else []
        full = [*self.nsenter()[:-1], *wd, "--", *argv]
        if log is None:
            try:
                cp = subprocess.run(
                    full,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as e:
                raise LabError(f"{' '.join(argv)}: timed out after {timeout}s") from e
            out = cp.stdout
        else:
            with log.open("a") as f:
                f.write(f"$ {' '.join(argv)}\n")
                start = f.tell()
            t0 = time.monotonic()
            with log.open("a") as f:
                try:
                    cp = subprocess.run(
                        full,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        text=True,
                        timeout=timeout,
                        env=env,
                        stdin=subprocess.DEVNULL,
                    )
                except subprocess.TimeoutExpired as e:
                    tail = log.read_text(errors="replace")[start:][-3000:]
                    raise LabError(f"{' '.join(argv)}: timed out after {timeout}s:\n{tail}") from e
            with log.open("r", errors="replace") as f:
                f.seek(start)
                out = f.read()
            with log.open("a") as f:
                f.write(f"(exit {cp.returncode} after {time.monotonic() - t0:.1f} s)\n")
            cp.stdout, cp.stderr = out, ""
        if check and cp.returncode != 0:
            # Without the frames of a Ruby backtrace, which would push the message out.
            text = "\n".join(
                ln for ln in (out + (cp.stderr or "")).splitlines() if not ln.startswith("\tfrom ")
            )
            raise LabError(f"{' '.join(argv)}: exit {cp.returncode}:\n{text[-4000:]}")
        return cp

    def virsh(self, *args: str) -> str:
        return self.run(["virsh", "-c", "qemu:///system", *args]).stdout

    def stop(self) -> list[str]:
        """Stop the daemons, then whatever they left in the namespace (qemu, dnsmasq),
        by PID; delete the namespace. Returns what needed SIGKILL, for the report."""
        notes: list[str] = []
        # libvirtd first: it may still want to log through virtlogd.
        daemons = [(*self.pids[d], self.procs.get(d)) for d in reversed(DAEMONS) if d in self.pids]
        killed = stop_pids(daemons, timeout=10.0)
        notes += [f"pid {pid} needed SIGKILL" for pid in killed]
        if self.netns.exists():
            # Only processes inside our namespace: libvirt's qemu and dnsmasq children.
            left = [(pid, proc_starttime(pid), None) for pid in self.netns.pids()]
            if left:
                notes.append(f"left in {self.netns.name}: {[p for p, _, _ in left]}")
                stop_pids(left, timeout=10.0)
            self.netns.delete()
        self.pids.clear()
        self.procs.clear()
        if self.root.exists():
            # Volumes and domains of the storage pool are plain files under the root.
            os.chmod(self.root, 0o755)
        return notes
