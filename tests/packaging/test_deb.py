"""The Debian package (debian/, scripts/build-deb): built from this checkout into a
temporary directory, then read the way dpkg and lintian read it, then installed.

* Its control fields: every third-party module announcer imports is a Depends
  (found by reading the imports, so a new import without a Debian dependency fails
  here), gobgpd and haproxy are Recommends, the version is pyproject.toml's.
* Its files: the command, the units and the drop-in exactly as in systemd/, the
  sysusers.d file, the example config, the man page, the package with _proto.
* Its maintainer scripts neither enable nor start nor stop-on-upgrade the unit.
* lintian: errors fail the test, warnings are listed (-rP shows them).
* An install into a throwaway Debian rootfs per release (mmdebstrap minbase with the
  package's Depends, cached under .cache/deb-rootfs/ keyed by release and package
  list): `dpkg -i`, `apt-get -f install`, `announcer --version`, check-config on the
  shipped example, the group from sysusers.d, `systemd-analyze verify` of the
  installed unit, purge. Run in a chroot inside a private mount namespace (/proc
  is gone with it), no network: resolv.conf is empty.

Building needs debhelper and friends (scripts/build-deb installs them as root);
the rootfs needs root and mmdebstrap. Missing either: skipped, not failed.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0
CACHE = REPO / ".cache" / "deb-rootfs"
MIRROR = "http://deb.debian.org/debian"

# Third-party modules announcer imports at run time -> the Debian package that has
# them (bookworm and trixie names). An import missing here fails the test.
DEBIAN_PACKAGE_OF = {
    "grpc": "python3-grpcio",
    "google": "python3-protobuf",  # google.protobuf
    "h11": "python3-h11",
    "httptools": "python3-httptools",
    "prometheus_client": "python3-prometheus-client",
    "yaml": "python3-yaml",
}
# Imported only if installed (announcer/eventloop.py): Suggests (Debian's grpcio 1.51
# keeps auto off uvloop), not Depends.
OPTIONAL = {"uvloop": "python3-uvloop"}


def _have(*tools: str) -> None:
    """Fail loudly (never skip: a test that skips in CI tests nothing) without a tool
    the test needs; scripts/deps installs them all."""
    for tool in tools:
        assert shutil.which(tool), f"{tool} not installed (scripts/deps installs it)"


def version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _have("dpkg-deb")  # scripts/build-deb installs the rest of its build dependencies
    out = tmp_path_factory.mktemp("dist")
    cp = subprocess.run(
        [str(REPO / "scripts" / "build-deb"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    path = out / f"announcer_{version()}_all.deb"
    assert path.exists(), sorted(p.name for p in out.iterdir())
    return path


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def relations(value: str) -> list[list[str]]:
    """A Depends-like field: each relation's alternatives, names only."""
    return [
        [re.sub(r"\s*\(.*?\)|:any$", "", alt).strip() for alt in rel.split("|")]
        for rel in value.split(",")
        if rel.strip()
    ]


def runtime_imports() -> set[str]:
    """Top-level names of every module announcer/ imports (not relative, not _proto's)."""
    names: set[str] = set()
    for path in (REPO / "announcer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - {"announcer", "__future__"}


def test_control_fields(deb: Path) -> None:
    assert field(deb, "Package") == "announcer"
    assert field(deb, "Version") == version()
    assert field(deb, "Architecture") == "all"
    depends = relations(field(deb, "Depends"))
    single = {alts[0] for alts in depends if len(alts) == 1}
    assert "python3 (>= 3.11)" in field(deb, "Depends")
    third_party = runtime_imports() - set(sys.stdlib_module_names) - OPTIONAL.keys()
    unknown = third_party - DEBIAN_PACKAGE_OF.keys()
    assert not unknown, f"imported by announcer, no Debian package known: {unknown}"
    missing = {DEBIAN_PACKAGE_OF[m] for m in third_party} - single
    assert not missing, f"imported at run time, not in Depends: {missing}"
    # Only for the tests (the DataPlaneAPI emulator's client): not a dependency.
    assert "requests" not in third_party and "python3-requests" not in single
    # dh_installsysusers: something must provide systemd-sysusers for the postinst.
    assert ["systemd", "systemd-standalone-sysusers", "systemd-sysusers"] in depends
    # The unit's ExecReload= is /bin/kill, which minbase lacks (found by the install
    # test below: systemd-analyze verify refused the unit).
    assert "procps" in single
    assert OPTIONAL.keys() <= runtime_imports()
    assert not set(OPTIONAL.values()) & single
    assert relations(field(deb, "Recommends")) == [["gobgpd"], ["haproxy"]]
    assert relations(field(deb, "Suggests")) == [["python3-uvloop"]]


def contents(deb: Path) -> dict[str, str]:
    """Path (without the leading .) -> mode string, from `dpkg-deb -c`."""
    out = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[5].removeprefix("."): line.split()[0] for line in out.splitlines()}


def test_file_list(deb: Path) -> None:
    files = contents(deb)
    site = "/usr/lib/python3/dist-packages/announcer"
    expected = {
        "/usr/bin/announcer": "-rwxr-xr-x",
        "/lib/systemd/system/announcer.service": "-rw-r--r--",
        "/lib/systemd/system/announcer-peers-down.service": "-rw-r--r--",
        "/lib/systemd/system/gobgpd.service.d/announcer.conf": "-rw-r--r--",
        "/usr/lib/sysusers.d/announcer.conf": "-rw-r--r--",
        "/usr/share/doc/announcer/examples/announcer.yaml": "-rw-r--r--",
        "/usr/share/man/man1/announcer.1.gz": "-rw-r--r--",
        "/usr/share/doc/announcer/copyright": "-rw-r--r--",
        "/etc/announcer/": "drwxr-xr-x",
        f"{site}/cli.py": "-rw-r--r--",
        f"{site}/_proto/gobgp_v3_pb2.py": "-rw-r--r--",
        f"{site}/_proto/gobgp_v4_pb2.py": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert files.get(path) == mode, (path, files.get(path))
    # Every module of the checkout is in the package, and nothing of the tests.
    modules = {
        f"{site}/{p.relative_to(REPO / 'announcer')}" for p in (REPO / "announcer").rglob("*.py")
    }
    assert modules <= files.keys(), modules - files.keys()
    assert not any("/tests/" in p or p.endswith(".pyc") for p in files)
    # Nothing in /etc but the empty directory: the config is the operator's to write.
    assert [p for p in files if p.startswith("/etc/")] == ["/etc/", "/etc/announcer/"]


def test_units_are_the_repositorys(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    same = {
        "lib/systemd/system/announcer.service": "systemd/announcer.service",
        "lib/systemd/system/announcer-peers-down.service": "systemd/announcer-peers-down.service",
        "lib/systemd/system/gobgpd.service.d/announcer.conf": (
            "systemd/gobgpd.service.d/announcer.conf"
        ),
        "usr/lib/sysusers.d/announcer.conf": "systemd/sysusers.d/announcer.conf",
        "usr/share/doc/announcer/examples/announcer.yaml": "etc/announcer.yaml",
    }
    for installed, source in same.items():
        assert (tmp_path / installed).read_text() == (REPO / source).read_text(), installed
    # The unit runs the command the package installs.
    unit = (tmp_path / "lib/systemd/system/announcer.service").read_text()
    for key in ("ExecStart", "ExecStopPost"):
        [line] = [ln for ln in unit.splitlines() if ln.startswith(f"{key}=")]
        assert line.split("=", 1)[1].split()[0] == "/usr/bin/announcer"
    backstop = (tmp_path / "lib/systemd/system/announcer-peers-down.service").read_text()
    [line] = [ln for ln in backstop.splitlines() if ln.startswith("ExecStart=")]
    assert line.split("=", 1)[1].split()[0] == "/usr/bin/announcer"
    assert (tmp_path / "usr/bin/announcer").exists()


def test_unit_is_not_enabled_started_or_stopped_on_upgrade(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
    postinst = (tmp_path / "postinst").read_text()
    assert "deb-systemd-invoke" not in postinst  # no start, no restart
    # Enabled only again if the operator had enabled it (upgrade), never on install.
    assert "was-enabled 'announcer.service'" in postinst
    assert "systemd-sysusers" in postinst and "announcer.conf" in postinst
    prerm = (tmp_path / "prerm").read_text() if (tmp_path / "prerm").exists() else ""
    assert "deb-systemd-invoke stop" not in prerm  # an upgrade keeps it running


def test_lintian(deb: Path) -> None:
    _have("lintian")
    cp = subprocess.run(
        ["lintian", "--pedantic", "--info", str(deb)], capture_output=True, text=True, timeout=300
    )
    tags = [ln for ln in cp.stdout.splitlines() if re.match(r"[EWIPX]: ", ln)]
    print("\n".join(tags) or "lintian: clean")  # shown by -rP
    assert not [t for t in tags if t.startswith("E: ")], tags
    assert cp.returncode == 0 or tags, cp.stdout + cp.stderr


# ---------------------------------------------------------------- install into a rootfs


def image(suite: str, packages: list[str]) -> Path:
    """A minbase rootfs tarball of `suite` with `packages`, built once, then cached."""
    # No resolver (mmdebstrap copies the host's), and a localhost.
    hook = (
        ': > "$1/etc/resolv.conf"; printf "127.0.0.1 localhost\\n::1 localhost\\n" > "$1/etc/hosts"'
    )
    suites = [suite, f"{suite}-updates"]
    key = hashlib.sha256(repr((suites, MIRROR, sorted(packages), hook)).encode()).hexdigest()
    tarball = CACHE / f"{suite}-{key[:16]}.tar.zst"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar.zst")
    mirrors = [f"deb {MIRROR} {s} main" for s in suites]
    mirrors.append(f"deb http://deb.debian.org/debian-security {suite}-security main")
    try:
        cp = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--quiet",
                f"--include={','.join(sorted(packages))}",
                f"--customize-hook={hook}",
                suite,
                str(partial),
                *mirrors,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert cp.returncode == 0, cp.stdout + cp.stderr
        partial.rename(tarball)
        for stale in CACHE.glob(f"{suite}-*.tar.zst"):  # older package lists
            if stale != tarball:
                stale.unlink()
    finally:
        partial.unlink(missing_ok=True)
    return tarball


INSTALL_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
dpkg -i /tmp/announcer.deb
apt-get -f install -y -q
echo "version: $(announcer --version)"
echo "group: $(getent group announcer-gobgp)"
umask 077; echo password > /etc/announcer/dataplaneapi.password
example=/usr/share/doc/announcer/examples/announcer.yaml
# The example names the unit's credential: outside systemd a clear error (78)...
set +e; announcer check-config -c $example > /tmp/out 2>&1; rc=$?; set -e
grep -q "credential name" /tmp/out && test $rc = 78 && echo "no credential: 78"
# ...and with what LoadCredential= would give it, OK.
mkdir -p /tmp/creds; cp /etc/announcer/dataplaneapi.password /tmp/creds/dataplaneapi-password
CREDENTIALS_DIRECTORY=/tmp/creds announcer check-config -c $example
if ls /etc/systemd/system/*.wants/announcer.service 2>/dev/null; then
    echo "enabled on install" >&2; exit 1
fi
systemd-analyze verify --man=no --generators=no /lib/systemd/system/announcer.service \
    /lib/systemd/system/announcer-peers-down.service
echo "verify: ok"
dpkg --purge announcer
test ! -e /usr/bin/announcer
echo "purge: ok"
"""


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_installs_and_runs(deb: Path, tmp_path: Path, suite: str) -> None:
    assert ROOT, "installing into a root file system needs root (CI runs as root)"
    _have("mmdebstrap")
    packages = sorted(
        alts[0] for alts in relations(field(deb, "Depends")) if not alts[0].startswith("$")
    )
    tarball = image(suite, packages)
    root = tmp_path / "root"
    root.mkdir()
    try:
        subprocess.run(["tar", "-C", str(root), "--zstd", "-xf", str(tarball)], check=True)
        shutil.copy(deb, root / "tmp" / "announcer.deb")
        (root / "tmp" / "install.sh").write_text(INSTALL_SCRIPT)
        # A private mount namespace: /proc inside the rootfs leaves with it.
        cp = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation=private",
                "sh",
                "-c",
                'mount -t proc proc "$1/proc" && exec chroot "$1" sh /tmp/install.sh',
                "sh",
                str(root),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        out = cp.stdout + cp.stderr
        assert cp.returncode == 0, out
        assert f"version: announcer {version()}" in out, out
        assert re.search(r"group: announcer-gobgp:x:\d+:$", out, re.M), out
        assert "no credential: 78" in out, out
        assert "examples/announcer.yaml: OK" in out, out
        assert "verify: ok" in out and "purge: ok" in out, out
    finally:
        shutil.rmtree(root, ignore_errors=True)
