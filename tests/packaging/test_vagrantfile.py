"""The Vagrant lab, checked without a hypervisor (CI has none).

What can be checked here: the Vagrantfile's Ruby syntax (`ruby -c`); what it
actually configures, by evaluating it under a stand-in for Vagrant's API (a few
lines of Ruby that record every provisioner with its script, environment and
arguments); that every repository file it and the provisioning scripts reference
exists; that each script gets the environment it requires; and `bash -n` plus
shellcheck on the scripts. The references are found, never listed here:

* in the Vagrantfile, quoted strings shaped like a file path (`gobgp/lb1.toml`),
  and the scripts, environment values and arguments of the recorded provisioners;
* in the scripts, `$REPO/...` (the scripts run from /tmp inside the VM and reach
  the synced repository only through $REPO). A reference on a line with the
  comment `# optional` may be missing (a file another issue is still writing).

The last tests break a copy of the files on purpose and check that each kind of
broken reference is reported.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROVISION = Path("scripts/provision")

# Vagrant's configuration API as far as the Vagrantfile uses it: every call is
# accepted, provisioners and networks are recorded with the machine they belong to,
# and so is each provider's setting (`lv.memory = 1024` in `provider :libvirt`) with
# the machine it applies to (nil: every machine).
VAGRANT_STUB = r"""
require "json"
RECORD = { "provisions" => [], "networks" => [], "settings" => [] }
class Recorder
  def initialize(machine = nil, provider = nil)
    @machine = machine
    @provider = provider
  end

  def method_missing(name, *args, **opts, &block)
    case name
    when :define then block.call(Recorder.new(args[0]))
    when :provision, :network
      RECORD["#{name}s"] << { "machine" => @machine, "type" => args[0] }.merge(
        opts.transform_keys(&:to_s))
    when :provider
      # |settings, override| for a provider block
      block.call(Recorder.new(@machine, args[0].to_s), Recorder.new(@machine))
    else
      if @provider && (name.end_with?("=") || !opts.empty?)
        RECORD["settings"] << { "machine" => @machine, "provider" => @provider,
                                "name" => name.to_s.delete_suffix("="),
                                "value" => args[0], "options" => opts.transform_keys(&:to_s) }
      end
      block&.call(Recorder.new(@machine, @provider))
    end
    self
  end

  def respond_to_missing?(*) = true
end
module Vagrant
  def self.configure(_version) = yield(Recorder.new)
end
load ARGV[0]
puts JSON.generate(RECORD)
"""

QUOTED = re.compile(r"\"([^\"\s#{}]+)\"|'([^'\s]+)'")
REPO_REF = re.compile(r"\$\{?REPO\}?/([\w.@/-]*)")
REQUIRED_ENV = re.compile(r"\$\{(\w+):\?\}")


def need(tool: str) -> str:
    """The tool's path; fail (never skip) when it is missing: scripts/deps installs it."""
    path = shutil.which(tool)
    assert path, f"{tool} is not installed (scripts/deps installs it)"
    return path


def looks_like_file(value: str) -> bool:
    """`tests/integration/frr/r1.conf` yes; `198.51.100.11/24`, `debian/bookworm64` no."""
    if not re.fullmatch(r"[\w.-]+(?:/[\w.-]+)+", value):
        return False
    try:
        ipaddress.ip_interface(value)
        return False
    except ValueError:
        pass
    return re.search(r"\.[A-Za-z]\w*$", value) is not None


def evaluate(root: Path, env: dict[str, str] | None = None) -> dict[str, list[dict[str, object]]]:
    """The provisioners, networks and provider settings `root/Vagrantfile` configures,
    with `env` added to the environment (ANNOUNCER_* variables)."""
    cp = subprocess.run(
        [need("ruby"), "-e", VAGRANT_STUB, str(root / "Vagrantfile")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    if cp.returncode != 0:
        first = (cp.stderr.strip() or f"exit {cp.returncode}").splitlines()[0]
        raise AssertionError(f"evaluating the Vagrantfile failed: {first}")
    record: dict[str, list[dict[str, object]]] = json.loads(cp.stdout)
    return record


def script_references(text: str) -> list[tuple[str, bool]]:
    """(`$REPO/` path, optional?) for each literal reference outside comment lines."""
    refs = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in REPO_REF.finditer(line):
            path = m.group(1).rstrip("/")
            if path:  # `$REPO/$VAR`: checked where the value is set (the Vagrantfile)
                refs.append((path, "# optional" in line))
    return refs


def problems(root: Path) -> list[str]:
    """Every broken reference of `root`'s Vagrantfile and the scripts it provisions with."""
    out: list[str] = []
    text = (root / "Vagrantfile").read_text()
    for m in QUOTED.finditer(text):
        value = m.group(1) or m.group(2)
        if looks_like_file(value) and not (root / value).exists():
            out.append(f"Vagrantfile: {value}: no such file")
    try:
        record = evaluate(root)
    except AssertionError as e:
        return [*out, str(e)]

    scripts: list[str] = []
    for prov in record["provisions"]:
        where = f"Vagrantfile, {prov['machine']}"
        path = str(prov.get("path", ""))
        env = prov.get("env") or {}
        args = prov.get("args") or []
        assert isinstance(env, dict) and isinstance(args, list)
        values = [str(v) for v in env.values()]
        values += [field for a in args for field in str(a).split(",")]
        for value in values:
            if looks_like_file(value) and not (root / value).exists():
                out.append(f"{where}: {value}: no such file")
        if not (root / path).is_file():
            out.append(f"{where}: provisioning script {path!r}: no such file")
            continue
        scripts.append(path)
        for var in sorted(set(REQUIRED_ENV.findall((root / path).read_text()))):
            if var not in env:
                out.append(f"{where}: {path} requires ${var}, the provisioner does not set it")

    seen: set[str] = set()
    while scripts:
        path = scripts.pop()
        if path in seen:
            continue
        seen.add(path)
        text = (root / path).read_text()
        code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        if any("/vagrant" in ln for ln in code):
            out.append(f"{path}: names the synced folder /vagrant; use $REPO")
        for ref, optional in script_references(text):
            if (root / ref).exists():
                if ref.endswith(".sh"):
                    scripts.append(ref)  # sourced helpers are checked the same way
            elif not optional:
                out.append(f"{path}: $REPO/{ref}: no such file")
    return out


def provisioning_scripts() -> list[Path]:
    scripts = sorted((REPO / PROVISION).glob("*.sh"))
    assert scripts, f"no scripts in {PROVISION}"
    return scripts


# --------------------------------------------------------------------------- the real files


def test_vagrantfile_syntax() -> None:
    cp = subprocess.run(
        [need("ruby"), "-c", str(REPO / "Vagrantfile")], capture_output=True, text=True
    )
    assert cp.returncode == 0 and "Syntax OK" in cp.stdout, cp.stderr


def test_vagrantfile_defines_the_lab_machines() -> None:
    record = evaluate(REPO)
    machines = {p["machine"] for p in record["provisions"]}
    assert machines == {"core", "lb1", "lb2"}
    for prov in record["provisions"]:
        assert str(prov["path"]).startswith(f"{PROVISION}/"), prov
    # Each LB is on the rack LAN, the core VM on rack and edge, never on a host-only net.
    nets = {(n["machine"], n["virtualbox__intnet"]) for n in record["networks"]}
    assert {m for m, _ in nets} == machines
    assert all(n["auto_config"] is False for n in record["networks"])


def setting(
    record: dict[str, list[dict[str, object]]], name: str, machine: str | None = None
) -> object:
    """The value of one libvirt provider setting (for every machine, or one machine's)."""
    found = [
        s
        for s in record["settings"]
        if s["provider"] == "libvirt" and s["name"] == name and s["machine"] == machine
    ]
    assert len(found) == 1, f"libvirt setting {name} of {machine}: {found}"
    return found[0]["options"] or found[0]["value"]


def haproxy_vips() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    text = (REPO / "tests/integration/haproxy/lb.cfg").read_text()
    binds = re.findall(r"^\s*bind\s+\[?([0-9a-fA-F.:]*[0-9a-fA-F])\]?:\d+", text, re.M)
    assert binds, "no VIP binds in lb.cfg"
    return {ipaddress.ip_address(b) for b in binds}


def test_libvirt_networks_stay_on_documentation_ranges() -> None:
    record = evaluate(REPO)
    # Vagrant's management network: a documentation range no VIP uses, not forwarded,
    # never libvirt's 192.168.121.0/24 (vagrant-libvirt's default) or 122 (libvirt's).
    mgmt = ipaddress.ip_network(str(setting(record, "management_network_address")), strict=False)
    assert mgmt.subnet_of(ipaddress.ip_network("192.0.2.0/24")), mgmt
    assert not any(v in mgmt for v in haproxy_vips() if v.version == 4), mgmt
    assert setting(record, "management_network_mode") == "none"
    assert setting(record, "management_network_name") == "announcer-mgmt"
    # The lab LANs: no host address, no DHCP, no forwarding.
    for net in record["networks"]:
        assert net["libvirt__forward_mode"] == "veryisolated", net
        assert net["libvirt__dhcp_enabled"] is False, net
        assert net["libvirt__network_name"] == net["virtualbox__intnet"], net
    # No display; each VM's serial console to a file of its own.
    assert setting(record, "graphics_type") == "none"
    serials = {s["machine"]: s["options"] for s in record["settings"] if s["name"] == "serial"}
    assert set(serials) == {"core", "lb1", "lb2"}
    paths = {str(o["source"]["path"]) for o in serials.values()}  # type: ignore[index]
    assert len(paths) == 3 and all(p.endswith("-serial.log") for p in paths), paths


@pytest.mark.parametrize("routers", [None, "debian", "docker"])
def test_core_routers_from_debian_or_docker(routers: str | None) -> None:
    env = {"ANNOUNCER_CORE_ROUTERS": routers} if routers else {}
    record = evaluate(REPO, env)
    (core,) = [p for p in record["provisions"] if p["machine"] == "core"]
    assert isinstance(core["env"], dict)
    assert core["env"]["CORE_ROUTERS"] == (routers or "debian")
    assert core["env"]["FRR_IMAGE"].startswith("quay.io/")  # always set, used by docker


def test_a_wrong_core_routers_value_stops_vagrant() -> None:
    with pytest.raises(AssertionError, match="ANNOUNCER_CORE_ROUTERS=podman"):
        evaluate(REPO, {"ANNOUNCER_CORE_ROUTERS": "podman"})


def test_the_lbs_install_the_deb_from_dist_when_there_is_one(tmp_path: Path) -> None:
    root = broken_copy(tmp_path, "Vagrantfile", "REPO_DIR", "REPO_DIR")
    (root / "dist").unlink(missing_ok=True)  # a symlink to the checkout's dist/, if any

    def lbs() -> list[dict[str, object]]:
        return [p for p in evaluate(root)["provisions"] if p["machine"] != "core"]

    assert all("ANNOUNCER_DEB" not in p["env"] for p in lbs())  # type: ignore[operator]
    (root / "dist").mkdir()
    (root / "dist/announcer_0.1.0_all.deb").write_bytes(b"")
    for p in lbs():
        assert p["env"]["ANNOUNCER_DEB"] == "dist/announcer_0.1.0_all.deb"  # type: ignore[index]
    assert problems(root) == []


def test_every_referenced_file_exists() -> None:
    assert problems(REPO) == []


def test_references_are_found() -> None:
    # Guard against a checker that silently finds nothing to check.
    for script in provisioning_scripts():
        refs = script_references(script.read_text())
        if script.name != "lib.sh":
            assert refs, f"{script}: no $REPO references found"


@pytest.mark.parametrize("script", provisioning_scripts(), ids=lambda p: p.name)
def test_provisioning_script_parses(script: Path) -> None:
    cp = subprocess.run([need("bash"), "-n", str(script)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr


def test_provisioning_scripts_pass_shellcheck() -> None:
    scripts = [str(p.relative_to(REPO)) for p in provisioning_scripts()]
    # -x with the repo as cwd: `# shellcheck source=scripts/provision/lib.sh` resolves.
    cp = subprocess.run(
        [need("shellcheck"), "-x", *scripts], cwd=REPO, capture_output=True, text=True
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr


# --------------------------------------------------------------------------- the checker


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A tree like the repo (symlinks) with its own Vagrantfile and scripts, one edited."""
    for entry in REPO.iterdir():
        if entry.name not in {"Vagrantfile", "scripts"}:
            (tmp_path / entry.name).symlink_to(entry)
    shutil.copy(REPO / "Vagrantfile", tmp_path / "Vagrantfile")
    shutil.copytree(REPO / "scripts", tmp_path / "scripts", symlinks=True)
    target = tmp_path / file
    text = target.read_text()
    assert old in text, f"{old!r} not in {file}: update this test"
    target.write_text(text.replace(old, new, 1))
    return tmp_path


@pytest.mark.parametrize(
    ("file", "old", "new", "reported"),
    [
        # through repo_file(): `vagrant up` itself stops, and so does the check
        ("Vagrantfile", '"gobgp/lb1.toml"', '"gobgp/lb9.toml"', "gobgp/lb9.toml"),
        # a plain string handed to a provisioner as an argument
        (
            "Vagrantfile",
            'repo_file("tests/integration/frr/r2.conf")',
            '"tests/integration/frr/r9.conf"',
            "tests/integration/frr/r9.conf",
        ),
        ("Vagrantfile", "scripts/provision/lb.sh", "scripts/provision/lb9.sh", "lb9.sh"),
        # an environment variable a script requires and the Vagrantfile forgot
        ("Vagrantfile", '"FRR_IMAGE" => FRR_IMAGE,', "", "requires $FRR_IMAGE"),
        # references inside the scripts, also in a sourced helper's caller
        (
            "scripts/provision/lb.sh",
            "$REPO/tests/integration/haproxy/lb.cfg",
            "$REPO/tests/integration/haproxy/lb.cf",
            "$REPO/tests/integration/haproxy/lb.cf",
        ),
        (
            "scripts/provision/core.sh",
            "$REPO/scripts/provision/lib.sh",
            "$REPO/scripts/provision/libs.sh",
            "$REPO/scripts/provision/libs.sh",
        ),
        (
            "scripts/provision/lb.sh",
            '"$REPO/tests/support/dpapi_emulator.py"',
            "/vagrant/tests/support/dpapi_emulator.py",
            "names the synced folder",
        ),
    ],
)
def test_a_broken_reference_is_reported(
    tmp_path: Path, file: str, old: str, new: str, reported: str
) -> None:
    root = broken_copy(tmp_path, file, old, new)
    found = problems(root)
    assert any(reported in p for p in found), found


def test_an_optional_reference_may_be_missing(tmp_path: Path) -> None:
    root = broken_copy(
        tmp_path,
        "scripts/provision/lb.sh",
        "haproxy_cfg=$REPO/tests/integration/haproxy/lb.cfg",
        "haproxy_cfg=$REPO/tests/integration/haproxy/lb.cfg\n"
        "extra=$REPO/no/such/file.txt # optional: for this test",
    )
    assert problems(root) == []
