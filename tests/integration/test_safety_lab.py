"""Issue 11 in the lab: single faults and local users that used to take lb1 off the network.

Real FRR routers, HAProxy, gobgpd and announcer (test_faults.py's lab and helpers,
tests/support/labfaults.py); each test reproduces the fault and judges by what the
routers see:

* DataPlaneAPI answers a well-formed *empty* list (a half-written config, an impostor
  on its port): announcer holds the loss (dataplaneapi.vip_loss), not one route moves;
* a second `announcer run` beside the running one: it exits 75 touching nothing;
* someone disables one of gobgpd's peers: announcer raises the alarm (log, status);
* the state directory's file system is full: `announcer drain`/`undrain` say the
  change is NOT SAVED (exit 74) instead of printing success;
* the keeper (and so every child) does not inherit the DataPlaneAPI password.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from announcer.gobgp import GobgpClient
from tests.integration.lab import Lab, wait_until
from tests.integration.stack import PASSWORD, REPO
from tests.support import labfaults as tf

pytestmark = pytest.mark.lab

lab = tf.lab  # the module-scoped lab fixture, built afresh for this module
R1 = "198.51.100.1"  # r1's rack address: lb1's IPv4 neighbor


def assert_nothing_moved(sampler: tf.Sampler, at_least: int = 5) -> None:
    assert not sampler.errors, sampler.errors[:3]
    assert len(sampler.samples) >= at_least, len(sampler.samples)
    for t, paths in sampler.samples:
        assert tf.lb_prefixes(paths, "lb1") == tf.want(), t
        assert tf.lb_prefixes(paths, "lb2") == tf.want(), t


def test_an_empty_dataplaneapi_answer_moves_no_route(lab: Lab) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    log_before = len(s.announcer_log())
    tf.emulator_fault(lab, "empty")
    # The configuration version moves too (a restart with a half-written file): the
    # version is what makes announcer read the frontends again.
    original = s.cfg.read_text()
    s.cfg.write_text(original + "\n# touched by the test\n")
    try:
        with tf.Sampler(lab) as sampler:
            wait_until(
                lambda: "lost 4 of 4 VIPs" in s.announcer_log()[log_before:],
                timeout=10,
                interval=0.1,
                what="announcer holds the loss",
            )
            hold = s.control("status")["vip_loss_hold"]
            assert hold is not None and len(hold["vips"]) == 4
            time.sleep(4.0)  # eight polls of an empty answer, sampled
            assert s.control("status")["vip_loss_hold"]["answers"] >= 4
    finally:
        tf.emulator_fault(lab, "none")
        s.cfg.write_text(original)
    assert_nothing_moved(sampler, at_least=20)
    wait_until(
        lambda: "hold released" in s.announcer_log()[log_before:],
        timeout=10,
        interval=0.1,
        what="the VIPs back in the answer release the hold",
    )
    assert s.control("status")["vip_loss_hold"] is None
    line = next(ln for ln in s.announcer_log()[log_before:].splitlines() if "lost 4 of 4" in ln)
    assert " ERROR " in line, line


def test_a_second_announcer_exits_and_touches_nothing(lab: Lab) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    env = f"ANNOUNCER_DPAPI_PASSWORD={PASSWORD}"
    argv = ["env", env, f"PYTHONPATH={REPO}", sys.executable, "-m", "announcer"]
    with tf.Sampler(lab) as sampler:
        started = time.monotonic()
        cp = lab.exec("lb1", [*argv, "run", "-c", str(s.run_cfg)], check=False, timeout=60)
        took = time.monotonic() - started
        time.sleep(2.0)  # what a killed second instance's keeper would have done by now
    assert cp.returncode == 75, (cp.returncode, cp.stdout, cp.stderr)
    first = lab.proc("lb1-announcer").pid
    assert f"another announcer (pid {first})" in cp.stderr, cp.stderr
    assert_nothing_moved(sampler)
    assert s.control("status")["synced"]  # the first one's control socket still answers
    print(f"second announcer refused in {took:.2f}s")


def _gobgp(lab: Lab) -> GobgpClient:
    return GobgpClient(f"unix://{lab.api_socket('lb1')}", timeout=5.0)


def test_a_peer_disabled_behind_announcers_back_raises_the_alarm(lab: Lab) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)
    log_before = len(s.announcer_log())
    client = _gobgp(lab)
    try:
        client.disable_peer(R1)  # what `gobgp neighbor 198.51.100.1 disable` does, as root
        wait_until(
            lambda: f"peer {R1} is admin-down" in s.announcer_log()[log_before:],
            timeout=15,
            interval=0.2,
            what="announcer's alarm",
        )
        peers = {p["address"]: p for p in s.control("status")["peers"]}
        assert peers[R1]["alarm"] == "admin-down"
        line = next(
            ln for ln in s.announcer_log()[log_before:].splitlines() if "is admin-down" in ln
        )
        assert " ERROR " in line and "reenable_peers is false" in line, line
        time.sleep(6)  # another poll: left as the operator set it (reenable_peers: false)
        assert any(p.address == R1 and p.admin_down for p in client.peers())
        assert s.announcer_log()[log_before:].count(f"peer {R1} is admin-down") == 1
    finally:
        client.enable_peer(R1)
        client.close()
    wait_until(
        lambda: f"peer {R1} is up again" in s.announcer_log()[log_before:],
        timeout=20,
        interval=0.2,
        what="the alarm clears",
    )
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS, timeout=30)


@contextlib.contextmanager
def full_filesystem_at(path: Path, pid: int) -> Iterator[None]:
    """A 64 KiB tmpfs mounted over `path` in the mount namespace of process `pid` (`ip
    netns exec` gave announcer its own), filled to the last byte."""
    ns = ["nsenter", "-t", str(pid), "-m", "--"]
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)]
    subprocess.run([*ns, *mount], check=True, timeout=30)
    try:
        fill = f"cat /dev/zero > {path}/filler 2>/dev/null; true"
        subprocess.run([*ns, "sh", "-c", fill], check=True, timeout=30)
        yield
    finally:
        subprocess.run([*ns, "umount", "-l", str(path)], check=False, timeout=30)


def test_drain_on_a_full_disk_says_not_saved(lab: Lab) -> None:
    s = tf.stack(lab)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS)

    def cli(command: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "announcer", command, "--socket", str(s.control_socket)]
        return subprocess.run(
            [*argv, "192.0.2.12"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PYTHONPATH": str(REPO)},
        )

    with full_filesystem_at(s.dir / "state", lab.proc("lb1-announcer").pid):
        cp = cli("drain")
        assert cp.returncode == 74, (cp.stdout, cp.stderr)
        assert "NOT SAVED" in cp.stderr and "No space left" in cp.stderr, cp.stderr
        cp = cli("undrain")
        assert cp.returncode == 74 and "NOT SAVED" in cp.stderr, (cp.stdout, cp.stderr)
    tf.wait_lb1(lab, tf.ANNOUNCED_VIPS, timeout=30)


def test_children_do_not_inherit_the_dataplaneapi_password(lab: Lab) -> None:
    pid = lab.proc("lb1-announcer").pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "no keeper child found"
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert not any(e.startswith(b"ANNOUNCER_DPAPI_PASSWORD=") for e in environ), child
        assert PASSWORD.encode() not in b"\0".join(environ)
