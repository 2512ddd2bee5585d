"""Who may steer the routers: gobgpd's API only for root and the API group (issue 11).

gobgpd's gRPC API has no authentication: whoever reaches it can put a default route
into the RIB or disable every neighbor. Production serves it on a unix socket in a
directory only the group announcer-gobgp may enter (systemd/gobgpd.service.d); the lab
does the same with LAB_API_GID (tests/integration/lab.py, "traps"). Here, in the
running lab with announcer on both LBs, on gobgpd 3.10 and 4.8:

* an unprivileged user (uid/gid 65534, no groups) is refused by the gobgp CLI (add
  0.0.0.0/0, disable a neighbor) and by a raw connect and a raw gRPC call, and the
  routers see no change;
* root and a member of the group can use the API;
* a gobgpd killed with SIGKILL leaves its socket file behind, which gobgpd itself
  never removes; a fresh runtime directory (what systemd's RuntimeDirectory= does at
  every start) brings the API back, with the same modes.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab import (
    GOBGP_API_DIR_MODE,
    LAB_API_GID,
    LBS,
    RACK_ADDR,
    ROUTERS,
    Lab,
    bgp_sessions,
    run,
    unix_listening,
    wait_until,
)
from tests.integration.stack import ANNOUNCED_VIPS, LbStack, lb_nexthops, wait_vips_at_routers
from tests.support.gobgpd_proc import VERSIONS, GobgpdProc

pytestmark = pytest.mark.lab

NOBODY = 65534
# setpriv as the kernel sees an unprivileged local user: no supplementary groups.
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
# The same user, made a member of the API group (what `usermod -aG announcer-gobgp`
# does for an operator; announcer.service gets it from SupplementaryGroups=).
AS_MEMBER = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={LAB_API_GID}"]
DEFAULT = "0.0.0.0/0"
# Debian's python3 (python3-grpcio, as on the LBs): the venv's interpreter may live
# where uid 65534 cannot read it.
SYSTEM_PYTHON = "/usr/bin/python3"
# A connect and one GetBgp call, without the gobgp CLI: what any local program could do.
RAW_CLIENT = """
import errno, socket, sys
import grpc
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
    print("connect ok")
except OSError as e:
    print("connect", errno.errorcode[e.errno])
with grpc.insecure_channel("unix://" + path) as channel:
    for method in ("/apipb.GobgpApi/GetBgp", "/api.GoBgpService/GetBgp"):
        try:
            channel.unary_unary(method)(b"", timeout=5)
            print("grpc ok")
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                print("grpc", e.code().name, e.details())
                break
"""


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"gobgpd{v}")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    assert Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON} missing (python3-grpcio)"
    # As in production: the peers stay admin-down until announcer has its set in.
    with Lab(gobgpd_version=request.param, enable_peers=False, wait_established=False) as lab:
        stacks = [LbStack(lab, lb).start() for lb in LBS]
        try:
            wait_vips_at_routers(lab, timeout=30)
        except Exception:
            for s in stacks:
                print(s.announcer_log())
            raise
        yield lab


def gobgp_as(lab: Lab, who: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The gobgp CLI on lb1's socket as another user; never raises on failure."""
    return run([*who, *lab.gobgp_argv("lb1"), *args], check=False, timeout=30)


def raw_client_as(lab: Lab, who: list[str]) -> str:
    cp = run(
        [*who, SYSTEM_PYTHON, "-c", RAW_CLIENT, str(lab.api_socket("lb1"))],
        check=False,
        timeout=30,
    )
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def assert_refused(lab: Lab, cp: subprocess.CompletedProcess[str]) -> None:
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out
    if lab.gobgpd_version == 3:
        # The 3.10 CLI dials blocking with a 1 s deadline and hides why it failed.
        assert "context deadline exceeded" in out, out
    else:
        assert "permission denied" in out, out


def lb1_unchanged(lab: Lab) -> None:
    """No default route anywhere, every VIP still at both routers via both LBs, and
    lb1's sessions up."""
    for r in ROUTERS:
        assert lab.frr_nexthops(r, DEFAULT) == set(), r
        assert lab.kernel_nexthops(r, DEFAULT) == set(), r
        for vip in ANNOUNCED_VIPS:
            assert lab.frr_nexthops(r, vip) == lb_nexthops(vip), (r, vip)
        sessions = bgp_sessions(lab.router(r))
        assert all(sessions.get(a) == "Established" for a in RACK_ADDR["lb1"]), sessions
    rib = lab.gobgp_json("lb1", "global", "rib") or {}
    assert DEFAULT not in rib
    assert {v for v in ANNOUNCED_VIPS if ":" not in v} <= set(rib)


def test_socket_and_directory_let_only_the_group_in(lab: Lab) -> None:
    for lb in LBS:
        sock = lab.api_socket(lb)
        d = sock.parent.stat()
        assert stat.S_IMODE(d.st_mode) == GOBGP_API_DIR_MODE == 0o750
        assert d.st_gid == LAB_API_GID
        s = sock.stat()
        assert stat.S_ISSOCK(s.st_mode)
        # gobgpd made it with umask 0007 and group LAB_API_GID (UMask=, Group=).
        assert stat.S_IMODE(s.st_mode) == 0o770 and s.st_gid == LAB_API_GID


def test_unprivileged_user_cannot_steer_the_routers(lab: Lab) -> None:
    router = RACK_ADDR["r1"][0]
    add = gobgp_as(lab, AS_NOBODY, "global", "rib", "add", DEFAULT, "origin", "igp")
    assert_refused(lab, add)
    disable = gobgp_as(lab, AS_NOBODY, "neighbor", router, "disable")
    assert_refused(lab, disable)
    # Without the CLI: the kernel refuses the connect itself (no search permission on
    # the directory), so no gRPC byte reaches gobgpd.
    out = raw_client_as(lab, AS_NOBODY)
    assert "connect EACCES" in out and "Permission denied" in out, out
    listing = run([*AS_NOBODY, "ls", str(lab.api_socket("lb1").parent)], check=False)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    lb1_unchanged(lab)


def test_root_and_group_members_can_use_the_api(lab: Lab) -> None:
    v4_vips = {v for v in ANNOUNCED_VIPS if ":" not in v}
    assert v4_vips <= set(lab.gobgp_json("lb1", "global", "rib"))  # root (the lab runs as root)
    member = gobgp_as(lab, AS_MEMBER, "global", "rib", "-j")
    assert member.returncode == 0, member.stderr
    assert all(v in member.stdout for v in v4_vips), member.stdout
    assert raw_client_as(lab, AS_MEMBER).split("\n")[:2] == ["connect ok", "grpc ok"]
    neighbors = gobgp_as(lab, AS_MEMBER, "neighbor")
    assert neighbors.returncode == 0 and RACK_ADDR["r1"][0] in neighbors.stdout


def test_gobgpd_killed_and_started_again_serves_the_socket(lab: Lab) -> None:
    sock = lab.api_socket("lb1")
    argv = lab.proc("lb1-gobgpd").argv
    lab.signal("lb1-gobgpd", signal.SIGKILL)
    popen = lab.proc("lb1-gobgpd").popen
    assert popen is not None
    popen.wait(timeout=10)
    lab.stop("lb1-gobgpd")
    # The dead gobgpd's socket file stays; nobody listens on it.
    assert stat.S_ISSOCK(os.lstat(sock).st_mode) and not unix_listening(sock)
    # Started the way tests restart it (recorded argv): the lab, like systemd, gives
    # it a fresh runtime directory.
    proc = lab.start("lb1", argv, name="lb1-gobgpd")
    wait_until(lambda: proc.alive() and unix_listening(sock), timeout=15, what="lb1 API back")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o770 and sock.stat().st_gid == LAB_API_GID
    # announcer notices the restart, re-injects and enables the peers again.
    wait_vips_at_routers(lab, timeout=30)
    assert_refused(lab, gobgp_as(lab, AS_NOBODY, "global", "rib", "add", DEFAULT))
    lb1_unchanged(lab)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"gobgpd{v}")
def test_gobgpd_itself_does_not_remove_a_stale_socket(tmp_path: Path, version: int) -> None:
    # Why the production drop-in has RuntimeDirectory= (removed at every stop) and
    # the lab a fresh directory per start: a gobgpd started next to a dead one's
    # socket file never serves its API. 3.10 exits; 4.8 runs on without an API.
    proc = GobgpdProc(tmp_path / "g", api_socket=tmp_path / "api.sock", version=version)
    proc.start()
    proc.stop()  # SIGKILL
    assert (tmp_path / "api.sock").exists()
    with pytest.raises((RuntimeError, TimeoutError)) as failed:
        proc.start(timeout=3)
    assert "address already in use" in str(failed.value)
    expected = RuntimeError if version == 3 else TimeoutError
    assert failed.type is expected, failed.value
