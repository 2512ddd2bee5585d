"""announcer under a real systemd: the .deb, the units and lb.sh on booted Debian 12 and 13.

tests/integration/machines.py boots the netns lab's topology as systemd-nspawn machines
(systemd as PID 1): r1 and r2 with Debian's frr and tests/integration/frr/rN.conf, lb1 and
lb2 provisioned by scripts/provision/lb.sh (the Vagrant provisioning) with announcer
installed from the .deb that scripts/build-deb makes from this checkout, gobgpd and HAProxy
from Debian as units. Every scenario acts through systemd (systemctl, signals to the unit)
and asserts on what the routers' BGP tables show, as the netns lab does.

The tests of one suite run in order on one lab (module-scoped): each leaves lb1 as it
found it (announcer active, every VIP at both routers), which `settled` checks first.
Measured times go to .cache/systemd-lab/SUITE.json (quoted in docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.lab import REPO, list_netns, wait_until
from tests.integration.machines import (
    EXIT_REBOOT,
    Machine,
    SystemdLab,
    build_deb,
)
from tests.integration.stack import PASSWORD

pytestmark = pytest.mark.lab

SUITES = ["bookworm", "trixie"]
V4 = {"192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32"}
V6 = {"2001:db8:0:1::10/128"}
VIPS = V4 | V6  # what each LB announces (192.0.2.200 is outside allowed_prefixes)
LB1 = {"v4": "198.51.100.11", "v6": "2001:db8:ff::11"}
LB2 = {"v4": "198.51.100.12", "v6": "2001:db8:ff::12"}
CONFIG = "/etc/announcer/announcer.yaml"
TIMINGS = REPO / ".cache" / "systemd-lab"
GSHUT = "graceful-shutdown"  # FRR's name for 65535:0


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module", params=SUITES)
def lab(request: pytest.FixtureRequest, deb: Path) -> Iterator[SystemdLab]:
    with SystemdLab(request.param, deb) as lab:
        lab.timings["boot per machine (max)"] = max(m.boots[0] for m in lab.machines.values())
        yield lab
        TIMINGS.mkdir(parents=True, exist_ok=True)
        path = TIMINGS / f"{lab.suite}.json"
        path.write_text(json.dumps({k: round(v, 2) for k, v in lab.timings.items()}, indent=1))
    # Nothing of it is left on the host: namespaces, machines' cgroups, mounts, files.
    assert not [n for n in list_netns() if n.startswith(lab.prefix)]
    assert not [m for m in lab.machines.values() if any(cg.exists() for cg in m.cgroups)]
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(lab.tmp) not in mounts and not lab.tmp.exists()


# ---------------------------------------------------------------- what the routers see


def from_lb(lab: SystemdLab, router: str, lb: dict[str, str]) -> set[str]:
    """Prefixes `router` has a path for from `lb` (either of its sessions)."""
    peers = set(lb.values())
    return {
        prefix
        for prefix, paths in lab.routes(router).items()
        if any(p.get("peerId") in peers for p in paths)
    }


def lb1_path(lab: SystemdLab, router: str, prefix: str) -> dict[str, Any] | None:
    """lb1's path for `prefix` at `router` with its attributes, or None."""
    paths: list[dict[str, Any]] = lab.detail(router, prefix).get("paths", [])
    return next((p for p in paths if p.get("peer", {}).get("peerId") in LB1.values()), None)


def lb1_communities(lab: SystemdLab, router: str, prefix: str = "192.0.2.10/32") -> str:
    return communities(lb1_path(lab, router, prefix))


def communities(path: dict[str, Any] | None) -> str:
    return "" if path is None else str(path.get("community", {}).get("string", ""))


def wait_announced(lab: SystemdLab, lb: dict[str, str], want: set[str], timeout: float) -> float:
    """Wait until both routers have exactly `want` from `lb`; the seconds it took."""
    t0 = time.monotonic()
    for r in ("r1", "r2"):
        wait_until(
            functools.partial(from_lb, lab, r, lb),
            timeout,
            0.1,
            check=lambda got: got == want,
            what=f"{r}: routes from {lb['v4']} == {sorted(want)}",
        )
    return time.monotonic() - t0


class Watch:
    """Polls `probe` in a thread (as fast as vtysh answers) and keeps (time, value)."""

    def __init__(self, probe: Callable[[], Any]) -> None:
        self.probe = probe
        self.seen: list[tuple[float, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append((time.monotonic(), self.probe()))
            except Exception as e:  # a vtysh hiccup is not a route change
                self.errors.append(str(e))
            time.sleep(0.05)

    def __enter__(self) -> Watch:
        """Start polling; return once the first value is in (the state before the act)."""
        self._thread.start()
        wait_until(lambda: self.seen, 10, 0.02, what="first observation")
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop polling, then observe once more: the last value is the state after the act.

        (A probe the thread had begun before the act's end may finish after it; without
        this final look the list could end on a state older than the caller's own wait.)
        """
        self._stop.set()
        self._thread.join(10)
        if exc[0] is None:
            last = wait_until(self.probe, 10, 0.1, check=lambda _: True, what="last look")
            self.seen.append((time.monotonic(), last))

    def values(self) -> list[Any]:
        return [v for _, v in self.seen]


def unit(m: Machine, name: str = "announcer") -> dict[str, str]:
    return m.show(
        name,
        "ActiveState",
        "SubState",
        "Result",
        "MainPID",
        "NRestarts",
        "ExecMainStatus",
        "StatusText",
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
    )


def active(m: Machine) -> dict[str, str]:
    return wait_until(
        lambda: unit(m),
        60,
        0.2,
        check=lambda u: u["ActiveState"] == "active" and u["SubState"] == "running",
        what=f"{m.name}: announcer.service active",
    )


def restarted(m: Machine, before: dict[str, str]) -> dict[str, str]:
    """Wait for systemd's automatic restart of announcer after `before` (one more)."""
    return wait_until(
        lambda: unit(m),
        30,
        0.2,
        check=lambda u: int(u["NRestarts"]) == int(before["NRestarts"]) + 1,
        what=f"{m.name}: announcer restarted by systemd",
    )


def ready_seconds(u: dict[str, str]) -> float:
    """Start of the main process -> READY=1 (the unit went active)."""
    start, ready = (
        int(u["ExecMainStartTimestampMonotonic"]),
        int(u["ActiveEnterTimestampMonotonic"]),
    )
    return (ready - start) / 1e6


@pytest.fixture
def settled(lab: SystemdLab) -> SystemdLab:
    """lb1 and lb2 active and every VIP at both routers from both (each test leaves it so;
    after a failed one announcer is started again, so that one failure stays one)."""
    for lb in ("lb1", "lb2"):
        m = lab.machines[lb]
        if unit(m)["ActiveState"] in ("inactive", "failed"):
            m.exec(["systemctl", "reset-failed", "announcer"], check=False)
            m.exec(["systemctl", "start", "announcer"], check=False)
        active(m)
    wait_announced(lab, LB1, VIPS, 60)
    wait_announced(lab, LB2, VIPS, 60)
    return lab


def edit_config(m: Machine, change: Callable[[dict[str, Any]], None]) -> str:
    """Apply `change` to lb's installed config; return the original text."""
    original = m.read(CONFIG)
    doc = yaml.safe_load(original)
    change(doc)
    m.write(CONFIG, yaml.safe_dump(doc, sort_keys=False))
    return original


def status_json(m: Machine) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(m.exec(["announcer", "status", "--json"]).stdout)
    return data


# ---------------------------------------------------------------- scenarios


def test_boot_ready_after_first_sync(settled: SystemdLab) -> None:
    lab = settled
    for name in ("lb1", "lb2"):
        m = lab.machines[name]
        u = unit(m)
        assert u["NRestarts"] == "0", u
        assert u["StatusText"] == "4 VIPs, 4 healthy, 4 routes in gobgpd", u
        # READY=1 only after the first sync: the start-up line (every verdict in gobgpd)
        # is logged before systemd calls the unit started.
        journal = m.journal("announcer")
        # announcer's own time stamp on that line (taken before it sends READY=1), not
        # journald's, which is when the line arrived and may come after systemd's.
        done = re.search(
            r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: start-up done after [\d.]+s: "
            r"4 VIPs UP.*4 routes",
            journal,
        )
        assert done, journal[-3000:]
        # Debian's python3-uvloop is installed (the package's Recommends, in lb.packages),
        # but with Debian's grpcio 1.51 it would freeze at a command check's fork
        # (eventloop.py): auto keeps asyncio's loop and says why.
        assert re.search(
            r"INFO \S+: event loop: asyncio \(uvloop is installed, but grpcio 1\.51\.\d+ "
            r"would freeze",
            journal,
        ), journal[:3000]
        logged = dt.datetime.strptime(done.group(1) + "000", "%Y-%m-%d %H:%M:%S,%f")
        shown = m.exec(
            ["systemctl", "show", "--timestamp=us+utc", "-p", "ActiveEnterTimestamp", "announcer"]
        ).stdout.strip()  # ActiveEnterTimestamp=Mon 2026-11-30 19:21:30.123456 UTC
        ready = dt.datetime.strptime(shown.split("=", 1)[1], "%a %Y-%m-%d %H:%M:%S.%f %Z")
        assert logged <= ready, (done.group(0), shown)
        lab.timings[f"{name}: start -> READY"] = ready_seconds(u)
        # Nothing to warn about but the lab's deliberate VIP outside the allow-list.
        expected = "VIP 192.0.2.200 (frontends fe_outside) is outside allowed_prefixes"
        for line in journal.splitlines():
            if expected not in line:
                assert not re.search(r"WARNING|ERROR|CRITICAL|Traceback", line), line
        # systemctl status: active, no failed unit anywhere on the machine.
        assert (
            m.exec(
                ["systemctl", "status", "announcer", "gobgpd", "haproxy"], check=False
            ).returncode
            == 0
        )
        assert m.exec(["systemctl", "is-system-running"], check=False).stdout.strip() == "running"
        assert m.exec(["systemctl", "--failed", "--no-legend"]).stdout.strip() == ""
        assert (
            m.exec(["systemctl", "is-enabled", "announcer", "gobgpd", "haproxy"]).stdout.split()
            == ["enabled"] * 3
        )
    for r in ("r1", "r2"):
        assert "192.0.2.200/32" not in lab.routes(r)  # outside allowed_prefixes


def test_password_only_through_credential(settled: SystemdLab) -> None:
    m = settled.machines["lb1"]
    password = PASSWORD
    main = unit(m)["MainPID"]
    pids = [main, *m.exec(["pgrep", "-P", main]).stdout.split()]  # + the keeper
    assert len(pids) == 2, pids
    for pid in pids:
        environ = m.exec(["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
        assert not [e for e in environ if password in e], pid
        assert "CREDENTIALS_DIRECTORY=/run/credentials/announcer.service" in environ or pid != main
        assert password not in m.exec(["cat", f"/proc/{pid}/cmdline"]).stdout
    # Nowhere in the unit's properties (Environment=, command lines), the config or the log.
    assert password not in m.exec(["systemctl", "show", "announcer"]).stdout
    assert password not in m.exec(["systemctl", "cat", "announcer"]).stdout
    config = m.read(CONFIG)
    assert password not in config and "password_file: dataplaneapi-password" in config
    assert password not in m.exec(["journalctl", "--no-pager", "-b"]).stdout
    # The credential: the service sees it; the file behind it is root's alone.
    assert (
        m.exec(["cat", "/run/credentials/announcer.service/dataplaneapi-password"]).stdout.strip()
        == password
    )
    assert m.exec(
        ["stat", "-c", "%a %U", "/etc/announcer/dataplaneapi.password"]
    ).stdout.split() == [
        "600",
        "root",
    ]
    other = m.exec(
        ["systemd-run", "--quiet", "--wait", "--pipe", "-p", "DynamicUser=yes",
         "cat", "/etc/announcer/dataplaneapi.password"],
        check=False,
    )  # fmt: skip
    assert other.returncode != 0 and password not in other.stdout
    # And it worked: discovery authenticated (every VIP known and UP).
    assert {v["address"]: v["state"] for v in status_json(m)["vips"]} == {
        "192.0.2.10": "UP", "192.0.2.11": "UP", "192.0.2.12": "UP", "2001:db8:0:1::10": "UP",
    }  # fmt: skip


def test_control_socket_for_root_and_the_service_only(settled: SystemdLab) -> None:
    m = settled.machines["lb1"]
    # Numbers: a dynamic user's name resolves only through nss-systemd.
    service_uid = m.exec(["ps", "-o", "uid=", "-p", unit(m)["MainPID"]]).stdout.strip()
    assert m.exec(["stat", "-c", "%a %u", "/run/announcer"]).stdout.split() == [
        "700",
        service_uid,
    ]
    assert status_json(m)["vips"]  # root: through
    # Any other user (a dynamic one here): refused at the directory, nothing drained.
    other = m.exec(
        ["systemd-run", "--quiet", "--wait", "--pipe", "-p", "DynamicUser=yes",
         "announcer", "drain", "--all"],
        check=False,
    )  # fmt: skip
    assert other.returncode != 0 and "ermission denied" in other.stdout + other.stderr, other
    assert {v["drain"] for v in status_json(m)["vips"]} == {"none"}, status_json(m)["vips"]


def test_http_tcp_and_command_checks_under_the_hardening(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    before = unit(m)

    def overrides(doc: dict[str, Any]) -> None:
        doc["overrides"] = [
            {"frontends": ["fe_api"], "health": {"type": "tcp"}},
            {
                "vips": ["192.0.2.12"],
                "health": {
                    "type": "command",
                    "command": "curl --fail --silent --max-time 1 -o /dev/null http://%s/healthz",
                },
            },
        ]

    original = edit_config(m, overrides)
    try:
        with Watch(lambda: from_lb(lab, "r1", LB1)) as watch:
            m.exec(["systemctl", "reload", "announcer"])

            def kinds() -> dict[str, tuple[str, bool]]:
                return {
                    v["address"]: (c["kind"], c["ok"])
                    for v in status_json(m)["vips"]
                    for c in v["checks"]
                }

            got = wait_until(
                kinds,
                20,
                0.2,
                check=lambda k: (
                    k.get("192.0.2.11") == ("tcp", True)
                    and k.get("192.0.2.12") == ("command", True)
                    and k.get("192.0.2.10") == ("http", True)
                ),
                what="lb1: http, tcp and command checks passing",
            )
            time.sleep(2)  # several rounds of each check
        assert got["2001:db8:0:1::10"] == ("http", True)
        assert {v["state"] for v in status_json(m)["vips"]} == {"UP"}
        assert all(v == VIPS for v in watch.values()), watch.values()
        assert unit(m)["MainPID"] == before["MainPID"]
    finally:
        m.write(CONFIG, original)
        m.exec(["systemctl", "reload", "announcer"])


def test_reload_with_a_changed_community_withdraws_nothing(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    before = unit(m)
    reloads = m.journal("announcer").count("configuration reloaded")
    original = edit_config(m, lambda d: d["bgp"].update(communities=["65512:42"]))
    try:
        with Watch(lambda: (from_lb(lab, "r1", LB1), from_lb(lab, "r2", LB1))) as watch:
            m.exec(["systemctl", "reload", "announcer"])
            for r in ("r1", "r2"):
                wait_until(
                    functools.partial(lb1_communities, lab, r),
                    20,
                    0.1,
                    check=lambda c: "65512:42" in c,
                    what=f"{r}: 65512:42 on lb1's 192.0.2.10/32",
                )
        assert watch.seen and all(v == (VIPS, VIPS) for v in watch.values()), watch.values()
        after = unit(m)
        assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"])
        assert m.journal("announcer").count("configuration reloaded") == reloads + 1
    finally:
        m.write(CONFIG, original)
        m.exec(["systemctl", "reload", "announcer"])
    wait_until(
        lambda: communities(lb1_path(lab, "r1", "192.0.2.10/32")),
        20,
        0.1,
        check=lambda c: "65512:42" not in c,
        what="r1: 65512:42 gone again",
    )


def test_stop_drains_then_withdraws(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    with Watch(lambda: lb1_path(lab, "r1", "192.0.2.10/32")) as watch:
        t0 = time.monotonic()
        m.exec(["systemctl", "stop", "announcer"])
        stopped = time.monotonic() - t0
        gone = wait_announced(lab, LB1, set(), 20) + stopped
    states = [
        ("absent" if p is None else "drained" if GSHUT in communities(p) else "up")
        for p in watch.values()
    ]
    # up ... drained (65535:0, for drain.delay) ... absent, in that order and nothing else.
    squeezed = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert squeezed == ["up", "drained", "absent"], squeezed
    assert unit(m)["Result"] == "success"
    # A clean stop has withdrawn already: the backstop leaves the peers alone.
    journal = m.journal("announcer", "-n", "30")
    assert "peers-down: the service stopped cleanly; peers left as they are" in journal, journal
    lab.timings["systemctl stop -> routes gone at both routers"] = gone
    # lb2 untouched; lb1 back with a start.
    assert from_lb(lab, "r1", LB2) == VIPS
    t0 = time.monotonic()
    m.exec(["systemctl", "start", "announcer"])
    wait_announced(lab, LB1, VIPS, 30)
    lab.timings["systemctl start -> routes at both routers"] = time.monotonic() - t0
    lab.timings["systemctl start -> READY"] = ready_seconds(unit(m))


def test_frozen_main_loop_watchdog_abort_and_restart(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    before = unit(m)
    t0 = time.monotonic()
    m.exec(["kill", "-STOP", before["MainPID"]])
    # The watchdog (WatchdogSec=10) aborts it; the keeper then disables the peers, so the
    # routes leave; Restart= brings announcer and the routes back.
    gone = wait_announced(lab, LB1, set(), 30)
    after = restarted(m, before)
    wait_announced(lab, LB1, VIPS, 60)
    journal = m.journal("announcer")
    assert "Watchdog timeout (limit 10s)!" in journal, journal[-3000:]
    assert "Killing process " in journal and "SIGABRT" in journal, journal[-3000:]
    assert after["MainPID"] != before["MainPID"]
    assert from_lb(lab, "r1", LB2) == VIPS  # lb2 untouched
    lab.timings["SIGSTOP -> routes gone (watchdog 10 s)"] = gone
    lab.timings["SIGSTOP -> routes back"] = time.monotonic() - t0


def test_sigkill_of_the_whole_unit_peers_down_then_back(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    before = unit(m)
    t0 = time.monotonic()
    m.exec(["systemctl", "kill", "-s", "KILL", "announcer"])
    gone = wait_announced(lab, LB1, set(), 30)
    # The backstop: ExecStopPost= on bookworm; on trixie systemd 257 kills that with
    # the cgroup, and announcer-peers-down.service (OnFailure=) does it.
    wait_until(
        lambda: m.journal("announcer", "-u", "announcer-peers-down", "-n", "60"),
        20,
        0.2,
        check=lambda j: (
            re.search(r"peers-down: .*disabled 4 gobgpd peers \(service result: signal\)", j)
            is not None
        ),
        what="lb1: ExecStopPost= peers-down after SIGKILL",
    )
    restarted(m, before)
    wait_announced(lab, LB1, VIPS, 60)
    assert "Failed to kill" not in m.journal("announcer")  # one cgroup per machine
    assert from_lb(lab, "r1", LB2) == VIPS
    lab.timings["systemctl kill -s KILL -> routes gone"] = gone
    lab.timings["systemctl kill -s KILL -> routes back"] = time.monotonic() - t0


def test_gobgpd_restart_brings_back_the_complete_set(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    pid = unit(m)["MainPID"]
    with Watch(lambda: (from_lb(lab, "r1", LB1), from_lb(lab, "r2", LB1))) as watch:
        t0 = time.monotonic()
        m.exec(["systemctl", "restart", "gobgpd"])
        wait_announced(lab, LB1, VIPS, 60)
        back = time.monotonic() - t0
    # Per address family and router, never part of the set: all or (while down) none.
    for r1, r2 in watch.values():
        for got in (r1, r2):
            assert got & V4 in (set(), V4), watch.values()
    assert unit(m)["MainPID"] == pid  # announcer re-synced; it was not restarted
    assert "re-sync" in m.journal("announcer", "-n", "60")
    lab.timings["systemctl restart gobgpd -> routes back"] = back


def test_gobgpd_crash_is_restarted_and_brings_back_the_complete_set(settled: SystemdLab) -> None:
    """A crashed gobgpd (SIGKILL: no NOTIFICATION) comes back by the drop-in's Restart=,
    announcer re-injects the complete set and enables the peers: never a partial set."""
    lab = settled
    m = lab.machines["lb1"]
    pid = unit(m)["MainPID"]
    before = unit(m, "gobgpd")
    with Watch(lambda: (from_lb(lab, "r1", LB1), from_lb(lab, "r2", LB1))) as watch:
        t0 = time.monotonic()
        m.exec(["systemctl", "kill", "-s", "KILL", "gobgpd"])
        after = wait_until(
            lambda: unit(m, "gobgpd"),
            30,
            0.1,
            check=lambda u: (
                int(u["NRestarts"]) == int(before["NRestarts"]) + 1 and u["ActiveState"] == "active"
            ),
            what="lb1: gobgpd restarted by systemd (Restart=on-failure)",
        )
        wait_announced(lab, LB1, VIPS, 60)
        back = time.monotonic() - t0
    assert after["MainPID"] != before["MainPID"]
    seen = [v for _, v in watch.seen]
    assert any(not r1 and not r2 for r1, r2 in seen), "the routes never left: no crash seen"
    for r1, r2 in seen:
        for got in (r1, r2):
            assert got & V4 in (set(), V4), watch.values()
    assert unit(m)["MainPID"] == pid  # announcer re-synced; it was not restarted
    lab.timings["systemctl kill -s KILL gobgpd -> routes back"] = back


def test_haproxy_stop_takes_the_vips_away(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    m.exec(["systemctl", "stop", "haproxy"])
    try:
        gone = wait_announced(lab, LB1, set(), 30)
        assert from_lb(lab, "r1", LB2) == VIPS
        # The client still reaches every VIP, through lb2.
        assert lab.client_fetch("http://192.0.2.10/") == "lb2 web"
        lab.timings["systemctl stop haproxy -> routes gone"] = gone
    finally:
        m.exec(["systemctl", "start", "haproxy"])
    wait_announced(lab, LB1, VIPS, 30)


def test_reboot_drains_before_gobgpd_stops_and_comes_back(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]

    def probe() -> tuple[str, str]:
        path = lb1_path(lab, "r1", "192.0.2.10/32")
        route = "absent" if path is None else "drained" if GSHUT in communities(path) else "up"
        return route, lab.sessions("r1").get(LB1["v4"], "?")

    with Watch(probe) as watch:
        t0 = time.monotonic()
        m.exec(["systemctl", "reboot", "--no-block"])
        status = m.wait_exit(90)
        down = time.monotonic() - t0
        assert status == EXIT_REBOOT, status
        m.boot()
        wait_announced(lab, LB1, VIPS, 90)
    seen = watch.values()
    squeezed = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    # The shutdown order: drained, withdrawn while the session is still up (announcer
    # stops before gobgpd), then the session goes; after the boot everything returns.
    routes_while_established = [r for r, sess in squeezed if sess == "Established"]
    assert routes_while_established[:3] == ["up", "drained", "absent"], squeezed
    assert ("absent", "Established") in squeezed and squeezed[-1] == ("up", "Established"), squeezed
    lab.timings["systemctl reboot -> container down"] = down
    lab.timings["systemctl reboot -> routes back"] = time.monotonic() - t0
    lab.timings["boot after reboot"] = m.boots[-1]
    for name in ("announcer", "gobgpd", "haproxy"):
        assert unit(m, name)["ActiveState"] == "active", name


def test_invalid_config_fails_with_78_and_is_not_restarted(settled: SystemdLab) -> None:
    lab = settled
    m = lab.machines["lb1"]
    original = edit_config(m, lambda d: d["health"].update(rise=0))
    try:
        restart = m.exec(["systemctl", "restart", "announcer"], check=False)
        assert restart.returncode != 0
        failed = unit(m)
        assert (failed["ActiveState"], failed["Result"], failed["ExecMainStatus"]) == (
            "failed",
            "exit-code",
            "78",
        ), failed
        time.sleep(7)  # RestartSec=2: a restart would have happened by now, three times over
        later = unit(m)
        assert later["NRestarts"] == failed["NRestarts"] and later["ActiveState"] == "failed"
        assert "health.rise" in m.journal("announcer", "-n", "20")
        assert from_lb(lab, "r1", LB1) == set()
        # The failure started the backstop, which cannot read the config either and says so.
        backstop = wait_until(
            lambda: unit(m, "announcer-peers-down"),
            20,
            0.2,
            check=lambda u: u["ActiveState"] == "failed",
            what="lb1: announcer-peers-down ran",
        )
        assert backstop["ExecMainStatus"] == "78", backstop
        assert "health.rise" in m.journal("announcer-peers-down", "-n", "20")
    finally:
        m.write(CONFIG, original)
        m.exec(["systemctl", "reset-failed", "announcer", "announcer-peers-down"], check=False)
        m.exec(["systemctl", "start", "announcer"])
    wait_announced(lab, LB1, VIPS, 30)
