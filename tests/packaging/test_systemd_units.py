"""systemd/: the announcer unit, the gobgpd drop-in and the sysusers.d file, checked
without a running systemd.

Three layers, because no systemd runs on the test host (PID 1 is not systemd):

* `systemd-analyze verify` (works offline) on the unit, with its ExecStart binary
  swapped for a stand-in, and on Debian's gobgpd.service with our drop-in applied.
  verify exits 0 on an unknown directive or an unparsable value (it only warns), so
  any output counts as a failure; deliberately broken copies prove that it does.
* `systemd-analyze security --offline=yes`: the exposure score must stay low.
* Our own reading of the files: the directives announcer relies on are there, and the
  numbers agree with announcer's defaults (drain and stop timeouts, keeper, paths).
* The virtualenv drop-in (announcer.service.d/venv.conf): the unit names the Debian
  package's /usr/bin/announcer, the drop-in swaps only that path for a pip install.
* The API socket's access rule (issue 11): gobgpd's socket, its directory, its group
  and announcer's group agree across the drop-in, the unit, the sysusers.d file and
  etc/announcer.yaml; `systemd-sysusers --root=` creates the group in a temp root.

The unit's seccomp settings are checked for real: SystemCallFilter=,
RestrictAddressFamilies=, MemoryDenyWriteExecute= and SystemCallArchitectures=
become seccomp filters, and a gRPC round trip runs under them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

from announcer.configfile import load_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "announcer.service"
DROPIN = REPO / "systemd" / "gobgpd.service.d" / "announcer.conf"
SYSUSERS = REPO / "systemd" / "sysusers.d" / "announcer.conf"
VENV_DROPIN = REPO / "systemd" / "announcer.service.d" / "venv.conf"
BACKSTOP = REPO / "systemd" / "announcer-peers-down.service"
BACKSTOP_VENV = REPO / "systemd" / "announcer-peers-down.service.d" / "venv.conf"
EXAMPLE_CONFIG = REPO / "etc" / "announcer.yaml"
DEBIAN_GOBGPD = Path("/lib/systemd/system/gobgpd.service")
ANNOUNCER_BIN = "/usr/bin/announcer"  # where the Debian package (debian/) installs it
VENV_BIN = "/opt/announcer/venv/bin/announcer"  # docs/operations.md's pip install
ANALYZE = shutil.which("systemd-analyze")
SYSUSERS_BIN = shutil.which("systemd-sysusers")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
needs_debian_gobgpd = pytest.mark.skipif(
    not DEBIAN_GOBGPD.exists(), reason="Debian's gobgpd package not installed"
)

# ---------------------------------------------------------------- a small unit file reader

Setting = tuple[str, str, str]  # section, key, value


def parse_unit(text: str) -> list[Setting]:
    """(section, key, value) in file order; comments, blank lines and continuations handled."""
    out: list[Setting] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=VALUE line: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def effective(*texts: str) -> dict[tuple[str, str], list[str]]:
    """The merged settings of a unit and its drop-ins: an empty assignment resets a list."""
    merged: dict[tuple[str, str], list[str]] = {}
    for text in texts:
        for section, key, value in parse_unit(text):
            values = merged.setdefault((section, key), [])
            if value == "":
                values.clear()
            else:
                values.append(value)
    return merged


def one(settings: dict[tuple[str, str], list[str]], section: str, key: str) -> str:
    values = settings.get((section, key))
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= set {len(values)} times: {values}"
    return values[0]


def words(settings: dict[tuple[str, str], list[str]], section: str, key: str) -> list[str]:
    return [w for v in settings.get((section, key), []) for w in v.split()]


def seconds(value: str) -> float:
    """A systemd time span of the simple kinds used here: 30, 30s, 2min, 500ms."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min)?", value)
    assert m, f"unsupported time span {value!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "min": 60}[m.group(2)]


UNIT_TEXT = UNIT.read_text()
S = effective(UNIT_TEXT)


def test_parser_handles_continuations_and_resets() -> None:
    text = "[Service]\n# c\nExecStart=/a \\\n  -b\nExecStart=\nExecStart=/c\n; c\nX=1\n"
    assert parse_unit(text) == [
        ("Service", "ExecStart", "/a  -b"),
        ("Service", "ExecStart", ""),
        ("Service", "ExecStart", "/c"),
        ("Service", "X", "1"),
    ]
    assert effective(text)[("Service", "ExecStart")] == ["/c"]


# ---------------------------------------------------------------- what the unit must say


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "10"),
        ("WatchdogSignal", "SIGABRT"),
        ("Restart", "on-failure"),
        ("RestartSec", "2"),
        ("RestartPreventExitStatus", "78"),
        ("ExecStart", f"{ANNOUNCER_BIN} run -c /etc/announcer/announcer.yaml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillMode", "control-group"),
        ("TimeoutStopSec", "30"),
        ("DynamicUser", "yes"),
        ("RuntimeDirectory", "announcer"),
        ("RuntimeDirectoryPreserve", "no"),
        ("StateDirectory", "announcer"),
        ("LoadCredential", "dataplaneapi-password:/etc/announcer/dataplaneapi.password"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("Environment", "PYTHONFAULTHANDLER=1"),
        ("SupplementaryGroups", "announcer-gobgp"),
        ("MemoryHigh", "512M"),
        ("MemoryMax", "1G"),
    ],
)
def test_service_directive(key: str, value: str) -> None:
    assert one(S, "Service", key) == value


def test_no_capabilities_at_all() -> None:
    # Present and empty: an empty bounding set, not "unset" (which means all).
    assert ("Service", "CapabilityBoundingSet", "") in parse_unit(UNIT_TEXT)
    assert S[("Service", "CapabilityBoundingSet")] == []


def test_system_call_filter() -> None:
    assert S[("Service", "SystemCallFilter")][0] == "@system-service"
    assert one(S, "Service", "SystemCallErrorNumber") == "EPERM"


def test_relation_to_gobgpd() -> None:
    assert "gobgpd.service" in words(S, "Unit", "Wants")
    assert "gobgpd.service" in words(S, "Unit", "After")  # so we also stop before it
    # gobgpd is not bound to us, nor we to it: fate-sharing is admin-down + keeper.
    for key in ("Requires", "BindsTo", "PartOf", "Requisite"):
        assert not any("gobgpd" in v for v in S.get(("Unit", key), [])), (
            f"{key}= ties announcer to gobgpd"
        )


def test_relation_to_dataplaneapi() -> None:
    # Ordering only: at boot after DataPlaneAPI, but its restart must not touch us.
    assert "dataplaneapi.service" in words(S, "Unit", "After")
    for key in ("Wants", "Requires", "BindsTo", "PartOf", "Requisite"):
        assert not any("dataplaneapi" in v for v in S.get(("Unit", key), [])), (
            f"{key}= ties announcer to DataPlaneAPI"
        )


def size(value: str) -> int:
    """A systemd byte size of the kinds used here: 512M, 1G, 1048576."""
    m = re.fullmatch(r"(\d+)([KMG]?)", value)
    assert m, f"unsupported size {value!r}"
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def test_memory_limits_leave_headroom() -> None:
    mib = 1 << 20
    # announcer + keeper at 10 000 VIPs: 181 MiB measured before issue 16, 125 after;
    # the headroom is kept for the larger figure.
    normal = 150 * mib + 35 * mib
    high, hard = size(one(S, "Service", "MemoryHigh")), size(one(S, "Service", "MemoryMax"))
    # Throttling must not start in normal operation, and the kill must come well
    # before the 3.1 GB a 200 MB DataPlaneAPI answer once caused.
    assert 2 * normal <= high < hard <= 2 * high
    assert hard < 3100 * 1000 * 1000 // 2


def test_no_exec_start_pre() -> None:
    # RestartPreventExitStatus=78 only applies to the main process: a failing
    # ExecStartPre=check-config would be retried every RestartSec forever.
    assert ("Service", "ExecStartPre") not in S


def test_comment_above_every_directive() -> None:
    for text in (UNIT_TEXT, DROPIN.read_text(), VENV_DROPIN.read_text(), SYSUSERS.read_text()):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if "=" in line and not line.startswith(("#", ";", "[")):
                above = lines[i - 1]
                reset = above == line.split("=")[0] + "="  # KEY= then KEY=value
                assert above.startswith("#") or reset, f"{line!r} has no comment saying why"
    sysusers = SYSUSERS.read_text().splitlines()
    for i, line in enumerate(sysusers):
        if line.strip() and not line.startswith("#"):
            assert sysusers[i - 1].startswith("#"), f"{line!r} has no comment saying why"


def test_numbers_agree_with_announcer_defaults() -> None:
    from announcer.config import DrainConfig, ServiceConfig
    from announcer.keeper import GIVE_UP_AFTER

    stop = seconds(one(S, "Service", "TimeoutStopSec"))
    # A graceful stop drains (GRACEFUL_SHUTDOWN for drain.delay), then shuts down
    # within stop_timeout: all of it must fit before systemd's SIGKILL.
    assert DrainConfig().delay + ServiceConfig().stop_timeout < stop
    # After a crash the keeper may retry an unreachable gobgpd this long.
    assert stop > GIVE_UP_AFTER
    # The watchdog is pinged at half the period: it must leave room for a slow tick.
    assert seconds(one(S, "Service", "WatchdogSec")) >= 4
    svc = ServiceConfig()
    assert svc.control_socket.parent == Path("/run") / one(S, "Service", "RuntimeDirectory")
    assert svc.state_dir == Path("/var/lib") / one(S, "Service", "StateDirectory")


def test_exec_start_reaches_the_cli_and_a_bad_config_exits_78(tmp_path: Path) -> None:
    # The unit's argv parses (not a usage error, 64), and a config problem is exit 78,
    # which RestartPreventExitStatus= turns into "failed, not retried".
    argv = one(S, "Service", "ExecStart").split()
    assert argv[0] == ANNOUNCER_BIN
    config_at = argv.index("-c") + 1
    argv[config_at] = str(tmp_path / "missing.yaml")
    cp = subprocess.run(
        [sys.executable, "-m", "announcer", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert cp.returncode == int(one(S, "Service", "RestartPreventExitStatus")), cp.stderr


def test_exec_stop_post_is_the_backstop_with_the_same_command() -> None:
    argv = one(S, "Service", "ExecStopPost").split()
    assert argv == [
        ANNOUNCER_BIN,
        "peers-down",
        "-c",
        "/etc/announcer/announcer.yaml",
        "--if-failed",
    ]


def test_example_config_reads_the_units_credential() -> None:
    # etc/announcer.yaml (the package's example) names what LoadCredential= provides.
    name = one(S, "Service", "LoadCredential").split(":")[0]
    assert str(load_config(EXAMPLE_CONFIG).dataplaneapi.password_file) == name


# ---------------------------------------------------------------- the OnFailure= backstop

B = effective(BACKSTOP.read_text())
# What announcer.service has and the backstop must not copy: the long-running service's
# own settings, and AF_NETLINK (the locality check, which peers-down does not do).
NOT_COPIED = {
    "Type", "NotifyAccess", "TimeoutStartSec", "WatchdogSec", "WatchdogSignal", "Environment",
    "LimitCORE", "Restart", "RestartSec", "RestartPreventExitStatus", "ExecStart",
    "ExecReload", "ExecStopPost", "KillMode", "LimitNOFILE", "TimeoutStopSec", "MemoryHigh",
    "MemoryMax", "RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve",
    "StateDirectory", "StateDirectoryMode", "LoadCredential", "RestrictAddressFamilies",
}  # fmt: skip


def test_backstop_runs_the_stop_post_command_on_failure() -> None:
    # The same command as ExecStopPost= (which systemd 257 kills with the cgroup).
    assert one(B, "Service", "ExecStart") == one(S, "Service", "ExecStopPost")
    assert one(B, "Service", "Type") == "oneshot"
    assert one(S, "Unit", "OnFailure") == BACKSTOP.name
    # announcer's restart waits for a backstop that is still running.
    assert BACKSTOP.name in words(S, "Unit", "After")
    assert "[Install]" not in BACKSTOP.read_text()  # never enabled


def test_backstop_has_the_services_identity_and_hardening() -> None:
    service = {k: v for (sec, k), v in S.items() if sec == "Service" and k not in NOT_COPIED}
    backstop = {k: v for (sec, k), v in B.items() if sec == "Service"}
    missing = {k: v for k, v in service.items() if backstop.get(k) != v}
    assert not missing, f"in announcer.service, not (or not so) in the backstop: {missing}"
    assert words(B, "Service", "RestrictAddressFamilies") == ["AF_UNIX", "AF_INET", "AF_INET6"]


def test_backstop_venv_dropin_changes_only_the_path() -> None:
    merged = effective(BACKSTOP.read_text(), BACKSTOP_VENV.read_text())
    unit_argv = one(B, "Service", "ExecStart").split()
    assert one(merged, "Service", "ExecStart").split() == [VENV_BIN, *unit_argv[1:]]


@needs_analyze
def test_backstop_verifies(tmp_path: Path) -> None:
    stub = tmp_path / "announcer"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    path = tmp_path / BACKSTOP.name
    path.write_text(BACKSTOP.read_text().replace(ANNOUNCER_BIN, str(stub)))
    assert analyze_verify(path) == []


# ---------------------------------------------------------------- the virtualenv drop-in

VENV_TEXT = VENV_DROPIN.read_text()


def test_venv_dropin_changes_only_the_commands_path() -> None:
    # The same service, from the virtualenv: every setting of the unit stays, and the
    # two commands keep their arguments (one of each: the lists are reset).
    merged = effective(UNIT_TEXT, VENV_TEXT)
    for key in ("ExecStart", "ExecStopPost"):
        unit_argv = one(S, "Service", key).split()
        venv_argv = one(merged, "Service", key).split()
        assert venv_argv == [VENV_BIN, *unit_argv[1:]], key
    assert {k: v for k, v in merged.items() if k[1] not in ("ExecStart", "ExecStopPost")} == {
        k: v for k, v in S.items() if k[1] not in ("ExecStart", "ExecStopPost")
    }
    assert {key for _, key, _ in parse_unit(VENV_TEXT)} == {"ExecStart", "ExecStopPost"}


@needs_analyze
def test_unit_with_venv_dropin_verifies(tmp_path: Path) -> None:
    stub = tmp_path / "venv-announcer"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = unit_copy(tmp_path)
    (tmp_path / "announcer.service.d").mkdir()
    (tmp_path / "announcer.service.d" / "venv.conf").write_text(
        VENV_TEXT.replace(VENV_BIN, str(stub))
    )
    assert analyze_verify(unit) == []
    # verify reads the drop-in: one without its ExecStart= reset is refused.
    (tmp_path / "announcer.service.d" / "venv.conf").write_text(
        VENV_TEXT.replace(VENV_BIN, str(stub)).replace("ExecStart=\n", "", 1)
    )
    problems = analyze_verify(unit)
    assert any("more than one ExecStart" in p for p in problems), problems


# ---------------------------------------------------------------- systemd-analyze verify


def analyze_verify(unit: Path | str, unit_path: Path | None = None) -> list[str]:
    """`systemd-analyze verify`'s complaints (empty when clean); nonzero exit is one too."""
    assert ANALYZE is not None
    env = dict(os.environ)
    if unit_path is not None:
        env["SYSTEMD_UNIT_PATH"] = f"{unit_path}:"  # trailing colon: plus the defaults
    cp = subprocess.run(
        [ANALYZE, "verify", "--man=no", "--generators=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    problems = [line for line in (cp.stdout + cp.stderr).splitlines() if line.strip()]
    if cp.returncode != 0:
        problems.append(f"exit status {cp.returncode}")
    return problems


def unit_copy(tmp_path: Path, text: str = UNIT_TEXT, *, fake_binary: bool = True) -> Path:
    """The unit in a temp dir, its ExecStart binary (not installed here) swapped for a stub."""
    if fake_binary:
        stub = tmp_path / "announcer"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        text = text.replace(ANNOUNCER_BIN, str(stub))
    path = tmp_path / "announcer.service"
    path.write_text(text)
    return path


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    assert analyze_verify(unit_copy(tmp_path)) == []


def _replace(old: str, new: str) -> str:
    """The unit with the one line starting with `old` changed to start with `new`."""
    lines = UNIT_TEXT.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(old)]
    assert len(hits) == 1, old
    lines[hits[0]] = new + lines[hits[0]][len(old) :]
    return "".join(lines)


@needs_analyze
@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (_replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"), "Unknown key"),
        (_replace("WatchdogSec=10", "WatchdogSec=ten"), "Failed to parse"),
        (_replace("KillMode=control-group", "KillMode=cgroup"), "Failed to parse"),
        (_replace("ExecReload=/bin/kill", "ExecReload=/bin/kil"), "is not executable"),
        (_replace("[Install]", "[Instal]"), "Unknown section"),
        (_replace("MemoryMax=1G", "MemoryMax=1GB"), "Invalid memory limit"),
        (
            _replace("SupplementaryGroups=announcer-gobgp", "SupplementaryGroups=a:b"),
            "Invalid user",
        ),
    ],
    ids=[
        "typo-key",
        "bad-timespan",
        "bad-killmode",
        "typo-path",
        "typo-section",
        "bad-memory-limit",
        "bad-group-name",
    ],
)
def test_broken_units_fail_verification(tmp_path: Path, text: str, complaint: str) -> None:
    problems = analyze_verify(unit_copy(tmp_path, text))
    assert problems, "a broken unit passed verification"
    assert any(complaint in p for p in problems), problems


@needs_analyze
def test_missing_binary_fails_verification(tmp_path: Path) -> None:
    # Why the copies above swap ExecStart's binary: verify checks that it exists.
    problems = analyze_verify(unit_copy(tmp_path, fake_binary=False))
    assert any("is not executable" in p for p in problems), problems


def security_exposure(unit: Path) -> float:
    assert ANALYZE is not None
    cp = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", cp.stdout + cp.stderr)
    assert m, cp.stdout + cp.stderr
    return float(m.group(1))


@needs_analyze
def test_security_exposure_stays_low(tmp_path: Path) -> None:
    assert security_exposure(unit_copy(tmp_path)) <= 1.5  # 1.2 when written; 10 = none
    # And the score would notice the hardening going away.
    keep = ("[", "Type=", "ExecStart=", "DynamicUser=")
    bare = "\n".join(
        line for line in UNIT_TEXT.splitlines() if not line or line.startswith(("#", *keep))
    )
    assert security_exposure(unit_copy(tmp_path, bare)) > 5


# ---------------------------------------------------------------- the gobgpd drop-in

DROPIN_TEXT = DROPIN.read_text()


def gobgpd_unit_path(tmp_path: Path, dropin: str = DROPIN_TEXT) -> Path:
    """Debian's gobgpd.service plus our drop-in, as a unit directory for SYSTEMD_UNIT_PATH."""
    root = tmp_path / "units"
    (root / "gobgpd.service.d").mkdir(parents=True)
    shutil.copy(DEBIAN_GOBGPD, root / "gobgpd.service")
    (root / "gobgpd.service.d" / "announcer.conf").write_text(dropin)
    return root


@needs_analyze
@needs_debian_gobgpd
def test_dropin_verifies(tmp_path: Path) -> None:
    assert analyze_verify("gobgpd.service", gobgpd_unit_path(tmp_path)) == []


@needs_analyze
@needs_debian_gobgpd
def test_dropin_without_exec_start_reset_fails_verification(tmp_path: Path) -> None:
    broken = "\n".join(line for line in DROPIN_TEXT.splitlines() if line != "ExecStart=")
    problems = analyze_verify("gobgpd.service", gobgpd_unit_path(tmp_path, broken))
    assert any("more than one ExecStart" in p for p in problems), problems


def _gobgpd_settings() -> dict[tuple[str, str], list[str]]:
    base = DEBIAN_GOBGPD.read_text() if DEBIAN_GOBGPD.exists() else ""
    return effective(base, DROPIN_TEXT)


def sysusers_group() -> str:
    """The one group systemd/sysusers.d/announcer.conf creates."""
    lines = [ln.split() for ln in SYSUSERS.read_text().splitlines() if ln.strip()]
    groups = [f[1] for f in lines if f[0] == "g"]
    assert len(groups) == 1 and all(f[0] in ("#", "g") for f in lines), lines
    return groups[0]


def test_dropin_api_on_a_group_only_socket() -> None:
    import yaml

    g = _gobgpd_settings()
    argv = one(g, "Service", "ExecStart").split()
    assert argv[0] == "/usr/bin/gobgpd"
    api = argv[argv.index("--api-hosts") + 1]
    # One listener, a unix socket in the unit's own runtime directory: no TCP at all.
    assert "," not in api and api.startswith("unix:///")
    sock = Path(api.removeprefix("unix://"))
    assert sock.parent == Path("/run") / one(g, "Service", "RuntimeDirectory")
    # announcer's example config dials exactly that socket.
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert example["gobgp"]["address"] == api
    # The directory is the gate: gobgpd's user and group only, the group read+search.
    assert int(one(g, "Service", "RuntimeDirectoryMode"), 8) == 0o750
    # No stale socket survives a stop (gobgpd does not remove one at start).
    assert one(g, "Service", "RuntimeDirectoryPreserve") == "no"
    # The socket is 0777 & ~umask: the group needs write (connect), others nothing.
    mode = 0o777 & ~int(one(g, "Service", "UMask"), 8)
    assert mode & 0o020 and not mode & 0o007, oct(mode)
    # One group in three files: gobgpd's Group=, announcer's, and the sysusers entry.
    group = sysusers_group()
    assert one(g, "Service", "Group") == group
    assert words(S, "Service", "SupplementaryGroups") == [group]
    if DEBIAN_GOBGPD.exists():
        assert one(g, "Service", "DynamicUser") == "yes"  # Debian's; Group= keeps the user
    # systemd refuses a dynamic user whose name is a static group without a static
    # user of that name: the group must not be called like either service's user.
    assert group not in ("gobgpd", "announcer")
    assert "--pprof-disable" in argv
    assert "--sdnotify" in argv  # Debian's unit is Type=notify


@needs_analyze
@needs_debian_gobgpd
@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("RuntimeDirectoryMode=0750", "RuntimeDirectoryMode=0758", "Failed to parse mode"),
        ("UMask=0007", "UMask=007x", "Failed to parse mode"),
        ("RuntimeDirectory=gobgpd", "RuntimeDirectory=../gobgpd", "ignoring"),
        ("Group=announcer-gobgp", "Grup=announcer-gobgp", "Unknown key"),
    ],
    ids=["bad-dir-mode", "bad-umask", "bad-runtime-dir", "typo-group"],
)
def test_broken_dropins_fail_verification(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    lines = DROPIN_TEXT.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.rstrip("\n") == old]
    assert len(hits) == 1, old
    lines[hits[0]] = new + "\n"
    problems = analyze_verify("gobgpd.service", gobgpd_unit_path(tmp_path, "".join(lines)))
    assert any(complaint in p for p in problems), problems


needs_sysusers = pytest.mark.skipif(SYSUSERS_BIN is None, reason="systemd-sysusers not installed")


def run_sysusers(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """systemd-sysusers on `text` against an empty root under tmp_path (never the host)."""
    assert SYSUSERS_BIN is not None
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf = tmp_path / "announcer.conf"
    conf.write_text(text)
    return subprocess.run(
        [SYSUSERS_BIN, f"--root={root}", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@needs_sysusers
def test_sysusers_creates_the_system_group(tmp_path: Path) -> None:
    cp = run_sysusers(tmp_path, SYSUSERS.read_text())
    assert cp.returncode == 0, cp.stderr
    entries = [ln.split(":") for ln in (tmp_path / "root/etc/group").read_text().splitlines()]
    [(name, _, gid, members)] = entries
    assert name == sysusers_group() and members == ""
    assert int(gid) < 1000  # a system group, outside the dynamic range 61184-65519 too
    assert not (tmp_path / "root/etc/passwd").exists()  # no user: both sides are dynamic


@needs_sysusers
def test_broken_sysusers_file_fails(tmp_path: Path) -> None:
    broken = SYSUSERS.read_text().replace("\ng ", "\nG ")
    cp = run_sysusers(tmp_path, broken)
    assert cp.returncode != 0 and "Unknown command type" in cp.stderr, cp.stderr


def test_dropin_reload_and_restart() -> None:
    g = _gobgpd_settings()
    assert one(g, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"  # not `gobgpd -r`
    assert one(g, "Service", "Restart") == "on-failure"
    for key in ("BindsTo", "PartOf", "Requires"):
        assert ("Unit", key) not in g, f"gobgpd must not be tied to announcer ({key}=)"


@needs_debian_gobgpd
def test_dropin_config_path_matches_debian() -> None:
    g = _gobgpd_settings()
    start = one(g, "Service", "ExecStart").split()
    config = start[start.index("-f") + 1]
    assert one(g, "Unit", "ConditionPathExists") == config
    pre = one(g, "Service", "ExecStartPre").split()
    assert pre[pre.index("-f") + 1] == config


# ---------------------------------------------------------------- the unit's seccomp rules
#
# systemd implements MemoryDenyWriteExecute=, RestrictAddressFamilies=,
# SystemCallFilter= and SystemCallArchitectures= as seccomp filters installed before
# exec (with NoNewPrivileges). We build the same rules from the unit's own settings,
# as classic BPF programs written out here, install them with prctl() and exec Python
# into a workload: imports, a gRPC round trip, protobuf, a fork+exec. So a setting
# that would break announcer under systemd breaks this test first.

BPF_LD_ABS, BPF_JEQ, BPF_AND, BPF_RET = 0x20, 0x15, 0x54, 0x06
RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")  # linux-libc-dev
OFF_NR, OFF_ARCH, OFF_ARG0, OFF_ARG2 = 0, 4, 16, 32  # struct seccomp_data (little endian)
EPERM, EAFNOSUPPORT = 1, 97
AF = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def ret_errno(err: int) -> int:
    return 0x00050000 | err


def mdwe_program(nr: dict[str, int]) -> list[Insn]:
    """systemd's seccomp_memory_deny_write_execute(): EPERM for W+X mmap, +X mprotect/shmat."""
    w, x, shm_exec = 0x2, 0x4, 0o100000
    return [
        (BPF_LD_ABS, 0, 0, OFF_ARCH),  # 0
        (BPF_JEQ, 0, 16, AUDIT_ARCH_X86_64),  # 1: other arch -> 18
        (BPF_LD_ABS, 0, 0, OFF_NR),  # 2
        (BPF_JEQ, 4, 0, nr["mmap"]),  # 3: -> 8
        (BPF_JEQ, 6, 0, nr["mprotect"]),  # 4: -> 11
        (BPF_JEQ, 5, 0, nr["pkey_mprotect"]),  # 5: -> 11
        (BPF_JEQ, 7, 0, nr["shmat"]),  # 6: -> 14
        (BPF_RET, 0, 0, RET_ALLOW),  # 7
        (BPF_LD_ABS, 0, 0, OFF_ARG2),  # 8: mmap's prot
        (BPF_AND, 0, 0, w | x),  # 9
        (BPF_JEQ, 6, 7, w | x),  # 10: W+X -> 17, else 18
        (BPF_LD_ABS, 0, 0, OFF_ARG2),  # 11: mprotect's prot
        (BPF_AND, 0, 0, x),  # 12
        (BPF_JEQ, 3, 4, x),  # 13: X -> 17, else 18
        (BPF_LD_ABS, 0, 0, OFF_ARG2),  # 14: shmat's flags
        (BPF_AND, 0, 0, shm_exec),  # 15
        (BPF_JEQ, 0, 1, shm_exec),  # 16: SHM_EXEC -> 17, else 18
        (BPF_RET, 0, 0, ret_errno(EPERM)),  # 17
        (BPF_RET, 0, 0, RET_ALLOW),  # 18
    ]


def families_program(nr: dict[str, int], families: list[str]) -> list[Insn]:
    """RestrictAddressFamilies= (an allow list): socket() of another family fails."""
    codes = [AF[f] for f in families]
    n = len(codes)
    prog: list[Insn] = [
        (BPF_LD_ABS, 0, 0, OFF_ARCH),
        (BPF_JEQ, 0, n + 4, AUDIT_ARCH_X86_64),  # -> allow
        (BPF_LD_ABS, 0, 0, OFF_NR),
        (BPF_JEQ, 0, n + 2, nr["socket"]),  # -> allow
        (BPF_LD_ABS, 0, 0, OFF_ARG0),
    ]
    prog += [(BPF_JEQ, n - i, 0, code) for i, code in enumerate(codes)]  # -> allow
    prog += [(BPF_RET, 0, 0, ret_errno(EAFNOSUPPORT)), (BPF_RET, 0, 0, RET_ALLOW)]
    return prog


def allowlist_program(allowed: Iterable[int], err: int) -> list[Insn]:
    """SystemCallFilter= allow list + SystemCallArchitectures=native; the rest fails with err."""
    prog: list[Insn] = [
        (BPF_LD_ABS, 0, 0, OFF_ARCH),
        (BPF_JEQ, 1, 0, AUDIT_ARCH_X86_64),
        (BPF_RET, 0, 0, ret_errno(err)),
        (BPF_LD_ABS, 0, 0, OFF_NR),
    ]
    for number in sorted(set(allowed)):  # x32 numbers (| 0x40000000) never match
        prog += [(BPF_JEQ, 0, 1, number), (BPF_RET, 0, 0, RET_ALLOW)]
    prog.append((BPF_RET, 0, 0, ret_errno(err)))
    return prog


def syscall_numbers() -> dict[str, int]:
    text = UNISTD.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text)}


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: each @group and its members (names or @groups)."""
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("#"):
            current = None  # the ungrouped/unlisted trailer
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def filter_syscalls(values: list[str], groups: dict[str, list[str]]) -> set[str]:
    """SystemCallFilter= lines in order: the first allows, later `~` ones take away."""

    def expand(item: str) -> set[str]:
        if not item.startswith("@"):
            return {item}
        return set().union(*(expand(m) for m in groups[item]))

    assert values and not values[0].startswith("~"), "expected an allow list first"
    allowed: set[str] = set()
    for value in values:
        deny = value.startswith("~")
        names = set().union(*(expand(i) for i in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def unit_seccomp_programs(settings: dict[tuple[str, str], list[str]]) -> list[list[Insn]]:
    """The filters systemd would install for this unit's [Service] settings."""
    nr = syscall_numbers()
    assert one(settings, "Service", "NoNewPrivileges") == "yes"  # the launcher sets it
    assert one(settings, "Service", "SystemCallArchitectures") == "native"
    progs = []
    if one(settings, "Service", "MemoryDenyWriteExecute") == "yes":
        progs.append(mdwe_program(nr))
    progs.append(families_program(nr, words(settings, "Service", "RestrictAddressFamilies")))
    names = filter_syscalls(settings[("Service", "SystemCallFilter")], syscall_groups())
    err = {"EPERM": EPERM}[one(settings, "Service", "SystemCallErrorNumber")]
    progs.append(allowlist_program((nr[n] for n in names if n in nr), err))
    return progs


LAUNCHER = """
import ctypes, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (NoNewPrivileges=yes)
    raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
keep = []
for prog in json.loads(open(sys.argv[1]).read()):
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
    fprog = Fprog(len(prog), ctypes.addressof(buf))
    keep.append((buf, fprog))
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
os.execv(sys.argv[2], sys.argv[2:])
"""

WORKLOAD = """
import concurrent.futures, mmap, socket, subprocess, sys
import grpc
from google.protobuf import struct_pb2
import announcer.cli, announcer.gobgp, announcer.keeper, announcer.sdnotify

def echo(request, context):
    return request

server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
handler = grpc.method_handlers_generic_handler(
    "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
)
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
# gobgpd's API is a unix socket (gobgpd.service.d/announcer.conf): that way too.
sock = __import__("os").path.abspath("api.sock")
server.add_insecure_port(f"unix://{sock}")
server.start()
for target in (f"127.0.0.1:{port}", f"unix://{sock}"):
    with grpc.insecure_channel(target) as channel:
        msg = struct_pb2.Struct()
        msg.update({"vip": "192.0.2.10", "up": True})
        out = channel.unary_unary("/t.T/Echo")(msg.SerializeToString(), timeout=10)
        assert struct_pb2.Struct.FromString(out) == msg, target
server.stop(0)
assert subprocess.run(["true"]).returncode == 0  # command checks fork and exec
# The local-VIP check (locality.py): netlink route look-ups and events work.
import ipaddress
from announcer.locality import LocalRoutes, RouteEvents
routes = LocalRoutes()
loopback, nowhere = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("192.0.2.99")
assert routes.not_local([loopback, nowhere]) == {nowhere}
RouteEvents().read()
for name, attempt in [
    ("W+X mmap", lambda: mmap.mmap(-1, 4096, prot=7)),
    ("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
    ("setpriority", lambda: __import__("os").setpriority(0, 0, 5)),
]:
    try:
        attempt()
    except OSError:
        pass
    else:
        sys.exit(f"the filters are not active: {name} worked")
print("ok", grpc.__version__)
"""


def _pythons() -> Iterable[str]:
    yield sys.executable  # the venv: PyPI's grpcio and protobuf
    debian = "/usr/bin/python3"  # the LB VMs: Debian's python3-grpcio and python3-protobuf
    if Path(debian).exists() and os.path.realpath(debian) != os.path.realpath(sys.executable):
        yield debian


def run_confined(
    tmp_path: Path, progs: list[list[Insn]], python: str, script: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "progs.json").write_text(json.dumps(progs))
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    (tmp_path / "script.py").write_text(textwrap.dedent(script))
    return subprocess.run(
        [
            sys.executable,
            str(tmp_path / "launcher.py"),
            str(tmp_path / "progs.json"),
            python,
            str(tmp_path / "script.py"),
        ],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


_NO_EMULATION = (
    "systemd-analyze not installed"
    if ANALYZE is None
    else "filters written for x86_64"
    if platform.machine() != "x86_64"
    else f"{UNISTD} (linux-libc-dev) missing"
    if not UNISTD.exists()
    else None
)
needs_seccomp_emulation = pytest.mark.skipif(_NO_EMULATION is not None, reason=str(_NO_EMULATION))


@needs_seccomp_emulation
@pytest.mark.parametrize("python", list(_pythons()))
def test_grpc_works_under_the_units_seccomp_rules(tmp_path: Path, python: str) -> None:
    if python != sys.executable:
        probe = subprocess.run([python, "-c", "import grpc, google.protobuf"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"{python} has no grpc/protobuf")
    cp = run_confined(tmp_path, unit_seccomp_programs(S), python, WORKLOAD)
    assert cp.returncode == 0 and cp.stdout.startswith("ok"), cp.stdout + cp.stderr


@needs_seccomp_emulation
def test_seccomp_emulation_can_fail(tmp_path: Path) -> None:
    # The emulation is real: a unit without @network-io breaks the gRPC round trip,
    # and the MDWE rule refuses mprotect(PROT_READ|PROT_EXEC) but not PROT_READ.
    no_network = effective(UNIT_TEXT, "[Service]\nSystemCallFilter=~@network-io\n")
    cp = run_confined(tmp_path, unit_seccomp_programs(no_network), sys.executable, WORKLOAD)
    assert cp.returncode != 0 and not cp.stdout.startswith("ok"), cp.stdout + cp.stderr
    probe = """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int, ctypes.c_long]
        page = libc.mmap(None, 4096, 3, 0x22, -1, 0)
        rx = libc.mprotect(ctypes.c_void_p(page), 4096, 5)
        err = ctypes.get_errno()
        r = libc.mprotect(ctypes.c_void_p(page), 4096, 1)
        print(rx, err, r)
        """
    mdwe_only = [mdwe_program(syscall_numbers())]
    cp = run_confined(tmp_path, mdwe_only, sys.executable, probe)
    assert cp.stdout.split() == ["-1", str(EPERM), "0"], cp.stdout + cp.stderr
