"""The mapping (announcer/migrate.py, migrate_options.py) and the rendered files
(migrate_render.py): each option, the allow-list, secrets, and that what is written
passes announcer's own config reader and is what gobgpd reads."""

from __future__ import annotations

import ipaddress
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.config import Config
from announcer.configfile import parse_config
from announcer.migrate import Migration, junos_route_filters, migrate
from announcer.migrate_exabgp import MigrateError, read_config
from announcer.migrate_healthcheck import _OPTIONS
from announcer.migrate_render import ANNOUNCER, GOBGPD, PASSWORD, REPORT, files
from announcer.model import IPNetwork

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "exabgp-seed"
JUNOS = SEED / "junos-lb-group.txt"
NET = ipaddress.ip_network


def _conf(run: str, extra: str = "", neighbors: str = "") -> str:
    return f"""process hc {{ run {run}; encoder text; }}
template {{ neighbor t {{ router-id 192.0.2.5; local-address 192.0.2.5; local-as 65512;
    peer-as 65530; family {{ ipv4 unicast; }} api {{ processes [ hc ]; }} {extra} }} }}
neighbor 192.0.2.2 {{ inherit t; description "r-1"; }}
neighbor 192.0.2.3 {{ inherit t; description "r-2"; }}
{neighbors}
"""


def _run(*opts: str, cmd: str = "curl -sf http://%s/ok") -> str:
    return shlex.join(["/usr/bin/exabgp-healthcheck", *opts, "--cmd", cmd])


def _migrate(text: str, **kw: Any) -> Migration:
    kw.setdefault("allowed_prefixes", (NET("192.0.2.0/24"),))
    return migrate(read_config(text), source="exabgp.conf", **kw)


def _rendered(m: Migration) -> dict[str, str]:
    return {name: text for name, text, _ in files(m)}


def _config(m: Migration) -> Config:
    """announcer.yaml through announcer's own reader (what check-config runs)."""
    return parse_config(yaml.safe_load(_rendered(m)[ANNOUNCER]))


def _report(m: Migration) -> str:
    return _rendered(m)[REPORT]


def test_the_seed_with_the_junos_route_filter() -> None:
    m = migrate(
        read_config((SEED / "exabgp.conf").read_text()),
        source="exabgp.conf",
        router_filters=tuple(junos_route_filters(JUNOS.read_text())),
    )
    cfg = _config(m)
    assert cfg.allowed_prefixes == (NET("192.0.2.0/24"),)
    assert (cfg.dataplaneapi.url, cfg.dataplaneapi.username) == (
        "http://127.0.0.1:5555",
        "dataplaneapi",
    )
    assert str(cfg.dataplaneapi.password_file) == "dataplaneapi-password"
    h = cfg.health
    assert (h.type, h.path, h.command) == ("http", "/_healthcheck", None)
    assert (h.interval, h.fast_interval, h.timeout, h.rise, h.fall) == (5, 1, 2, 3, 3)
    p = cfg.policy
    assert p.up.med == 100 and p.up.next_hop is None  # self
    assert (p.down.announce, p.down.med) == (True, 1000)
    assert (p.drained.announce, p.drained.med) == (True, 500)
    assert cfg.drain.disable_file is None
    assert m.password is None  # `<set a password>`: a placeholder, no file written
    assert PASSWORD not in _rendered(m)
    report = _report(m)
    assert "ExaBGP announces DOWN VIPs with MED 1000 unless --withdraw-on-down" in report
    assert "--api-password is a placeholder" in report
    assert "allowed_prefixes from the routers' import route-filters" in report
    assert "--silent: not mapped" in report

    g = tomllib.loads(_rendered(m)[GOBGPD])
    assert g["global"]["config"] == {
        "as": 65512,
        "router-id": "192.0.2.5",
        "local-address-list": ["192.0.2.5"],
    }
    nbs = g["neighbors"]
    assert [n["config"]["neighbor-address"] for n in nbs] == ["192.0.2.2", "192.0.2.3"]
    for n, desc in zip(nbs, ("r-1", "r-2"), strict=True):
        assert n["config"] == {
            "neighbor-address": n["config"]["neighbor-address"],
            "peer-as": 65530,
            "description": desc,
            "admin-down": True,
        }
        assert n["transport"]["config"] == {"local-address": "192.0.2.5", "passive-mode": True}
        assert n["afi-safis"] == [{"config": {"afi-safi-name": "ipv4-unicast"}}]
    assert g["defined-sets"]["prefix-sets"] == [
        {
            "prefix-set-name": "vip-v4",
            "prefix-list": [{"ip-prefix": "192.0.2.0/24", "masklength-range": "32..32"}],
        }
    ]
    assert g["global"]["apply-policy"]["config"]["default-export-policy"] == "reject-route"


def test_a_real_password_goes_to_its_own_file_only() -> None:
    secret = "pa ss#w0rd"
    m = _migrate(_conf(_run("--api-password", secret)))
    out = {name: (text, mode) for name, text, mode in files(m)}
    assert out[PASSWORD] == (secret + "\n", 0o600)
    for name in (ANNOUNCER, REPORT, GOBGPD):
        assert secret not in out[name][0] and "w0rd" not in out[name][0]


def test_md5_password_only_in_gobgpd_toml_written_0600() -> None:
    m = _migrate(_conf(_run(), extra='md5-password "t0p;secret";'))
    out = {name: (text, mode) for name, text, mode in files(m)}
    assert out[GOBGPD][1] == 0o600
    g = tomllib.loads(out[GOBGPD][0])
    assert {n["config"]["auth-password"] for n in g["neighbors"]} == {"t0p;secret"}
    assert "t0p" not in out[ANNOUNCER][0] and "t0p" not in out[REPORT][0]
    assert _rendered(_migrate(_conf(_run())))[GOBGPD].count("auth-password") == 0


@pytest.mark.parametrize(
    ("opts", "check"),
    [
        (
            ("--withdraw-on-down",),
            lambda c: not c.policy.down.announce and not c.policy.drained.announce,
        ),
        (
            ("--disable", "/etc/exabgp/disable"),
            lambda c: str(c.drain.disable_file) == "/etc/exabgp/disable",
        ),
        (("--rise", "2", "--fall", "5"), lambda c: (c.health.rise, c.health.fall) == (2, 5)),
        (
            ("--interval", "2", "--fast-interval", "0.5"),
            lambda c: (c.health.interval, c.health.fast_interval) == (2, 0.5),
        ),
        (("--timeout", "1"), lambda c: c.health.timeout == 1),
        (("--timeout", "9"), lambda c: c.health.timeout == 5),  # cut to the interval
        (("--next-hop", "192.0.2.254"), lambda c: str(c.policy.up.next_hop) == "192.0.2.254"),
        (("--local-preference", "200"), lambda c: c.policy.up.local_pref == 200),
        (
            ("--up-metric", "10", "--down-metric", "20", "--disabled-metric", "30"),
            lambda c: (c.policy.up.med, c.policy.down.med, c.policy.drained.med) == (10, 20, 30),
        ),
        (
            ("--community", "65512:1 65512:2"),
            lambda c: [str(x) for x in c.policy.up.communities] == ["65512:1", "65512:2"],
        ),
        (
            ("--large-community", "65512:1:2"),
            lambda c: [str(x) for x in c.policy.up.large_communities] == ["65512:1:2"],
        ),
        (("--as-path", "65512 65512 65512"), lambda c: c.policy.up.as_path_prepend == 2),
        (
            ("--down-as-path", "65512 65512"),
            lambda c: c.policy.down.as_path_prepend == 1 and c.policy.up.as_path_prepend == 0,
        ),
        (
            ("--disabled-community", "65512:666"),
            lambda c: [str(x) for x in c.policy.down.communities] == ["65512:666"],
        ),
        (("--debug",), lambda c: c.log_level == "DEBUG"),
    ],
)
def test_each_option(opts: tuple[str, ...], check: Any) -> None:
    m = _migrate(_conf(_run(*opts)))
    assert check(_config(m))
    for opt in opts:
        if opt.startswith("--"):
            assert opt in _report(m), opt


def test_every_healthcheck_option_is_in_the_report() -> None:
    """Given alone, each option is named under Mapped or Not mapped: none is dropped."""
    values = {
        "ip": "192.0.2.10",
        "next-hop": "192.0.2.254",
        "command": "true",
        "community": "65512:1",
        "large-community": "65512:1:2",
        "disabled-community": "1:1",
        "as-path": "65512",
        "up-as-path": "65512",
        "down-as-path": "65512",
        "disabled-as-path": "65512",
        "neighbor": "192.0.2.2",
        "interval": "5",
    }
    for name, (_, takes, _) in _OPTIONS.items():
        if name == "command":
            continue
        opt = (f"--{name}", values.get(name, "7")) if takes else (f"--{name}",)
        m = _migrate(_conf(_run(*opt)))
        report = _report(m)
        assert f"--{name}" in report, name
        _config(m)  # and the result is valid


def test_unmapped_and_different_things_are_said() -> None:
    m = _migrate(
        _conf(
            _run(
                "--ip",
                "192.0.2.10",
                "--ip",
                "192.0.2.11",
                "--neighbor",
                "192.0.2.2",
                "--execute",
                "logger x",
                "--config",
                "/etc/hc.conf",
                "--as-path",
                "64999",
                cmd="/usr/local/bin/check %s",
            ),
            extra="passive; capability { graceful-restart; }",
        ),
        allowed_prefixes=(),
    )
    report = _report(m)
    assert "--neighbor 192.0.2.2: not mapped (announcer announces to every gobgpd peer)" in report
    assert "--execute logger x: not mapped" in report
    assert "--config /etc/hc.conf: not mapped (options in that file were NOT read" in report
    assert "--as-path 64999: announcer only prepends its own AS; not mapped" in report
    assert "template t: `passive` (line 3 column 71): no counterpart, dropped" in report
    assert "template t: `capability`" in report
    assert "a MED 1 higher" in report  # healthcheck.py's --increase over several --ip
    cfg = _config(m)
    assert (cfg.health.type, cfg.health.command, cfg.health.shell) == (
        "command",
        "/usr/local/bin/check %s",
        True,
    )
    assert cfg.allowed_prefixes == (NET("192.0.2.10/32"), NET("192.0.2.11/32"))


def test_allow_list_sources_in_order() -> None:
    text = _conf(_run("--ip", "192.0.2.10"))
    filters = (NET("192.0.2.0/25"),)
    given = _migrate(text, allowed_prefixes=(NET("192.0.2.0/26"),), router_filters=filters)
    assert _config(given).allowed_prefixes == (NET("192.0.2.0/26"),)
    ips = _migrate(text, allowed_prefixes=(), router_filters=filters)
    assert _config(ips).allowed_prefixes == (NET("192.0.2.10/32"),)
    assert "the healthcheck's --ip addresses" in _report(ips)
    junos = _migrate(_conf(_run()), allowed_prefixes=(), router_filters=filters)
    assert _config(junos).allowed_prefixes == filters
    outside = _migrate(
        _conf(_run("--ip", "192.0.2.200")), allowed_prefixes=(), router_filters=filters
    )
    assert "192.0.2.200/32 not inside the routers' route-filters" in _report(outside)
    with pytest.raises(MigrateError, match="no allow-list"):
        _migrate(_conf(_run()), allowed_prefixes=())


def test_ipv6_vips_need_an_ipv6_local_address() -> None:
    with pytest.raises(MigrateError, match="IPv6 VIPs but no IPv6 local-address"):
        _migrate(_conf(_run("--ip", "2001:db8::10")), allowed_prefixes=())
    text = _conf(
        _run("--ip", "2001:db8::10"),
        neighbors="""neighbor 2001:db8:ff::1 {
        router-id 192.0.2.5; local-address 2001:db8:ff::11; local-as 65512; peer-as 65530;
        family { ipv6 unicast; } api { processes [ hc ]; } }""",
    )
    cfg = _config(_migrate(text, allowed_prefixes=()))
    assert str(cfg.policy.up.next_hop_v6) == "2001:db8:ff::11"


@pytest.mark.parametrize(
    ("text", "kw", "message"),
    [
        (_conf(_run("--interval", "0")), {}, "--interval 0: healthcheck.py announces once"),
        (
            _conf(_run()) + "neighbor 192.0.2.9 { local-as 1; peer-as 2; }",
            {},
            "neighbors differ in local-as",
        ),
        (
            _conf(_run()) + "process x { run /usr/bin/exabgp-healthcheck; }\n"
            "neighbor 192.0.2.9 { router-id 192.0.2.5; local-as 65512; peer-as 2; "
            "api { processes [ x ]; } }",
            {},
            "process hc: 0 --ip options; several processes merge only",
        ),
        (_conf(_run()), {"process": "nope"}, "--process nope: no such process"),
        (
            "process hc { run /bin/true; }\nneighbor 192.0.2.2 { local-as 1; peer-as 2; }",
            {},
            "not an ExaBGP healthcheck",
        ),
        (
            "process hc { run exabgp-healthcheck; }\n"
            "neighbor 192.0.2.2 { local-as 1; router-id 192.0.2.1; }",
            {},
            "has no peer-as",
        ),
        (
            "process hc { run exabgp-healthcheck; }\nneighbor 192.0.2.2 { peer-as 1; }",
            {},
            "no neighbor has local-as",
        ),
        (
            "process hc { run exabgp-healthcheck; }\n"
            "neighbor 192.0.2.2 { local-as x; peer-as 1; router-id 192.0.2.1; }",
            {},
            "local-as 'x': not a number",
        ),
    ],
)
def test_what_cannot_be_migrated(text: str, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(MigrateError, match=message.replace("(", r"\(")):
        _migrate(text, **kw)


def test_a_named_process_among_several() -> None:
    text = (
        _conf(_run("--rise", "7")) + "process other { run /usr/bin/exabgp-healthcheck --rise 1; }\n"
    )
    m = _migrate(text, process="hc")
    assert _config(m).health.rise == 7
    assert "process other: not migrated (only hc)" in _report(m)
    m2 = _migrate(text, process="other")
    assert _config(m2).health.rise == 1


def _per_service(*opts: tuple[str, ...]) -> str:
    """ExaBGP's own setup: one healthcheck process per VIP, the VIP in its --cmd."""
    procs, names = [], []
    for i, (vip, *extra) in enumerate(opts):
        run = _run("--name", f"s{i}", "--ip", f"{vip}/32", *extra,
                   cmd=f"curl -sf -o /dev/null --max-time 1 http://{vip}/health")  # fmt: skip
        procs.append(f"process s{i} {{ run {run}; }}")
        names.append(f"s{i}")
    return (
        "\n".join(procs)
        + f"""
neighbor 192.0.2.2 {{ router-id 192.0.2.5; local-address 192.0.2.5; local-as 65512;
    peer-as 65530; family {{ ipv4 unicast; }} api {{ processes [ {" ".join(names)} ]; }} }}
"""
    )


def test_one_process_per_service_merges_into_one_announcer() -> None:
    text = _per_service(("192.0.2.10", "--rise", "2"), ("192.0.2.11", "--rise", "2"))
    m = _migrate(text, allowed_prefixes=())
    cfg = _config(m)
    assert cfg.allowed_prefixes == (NET("192.0.2.10/32"), NET("192.0.2.11/32"))
    assert (cfg.health.type, cfg.health.path, cfg.health.rise) == ("http", "/health", 2)
    assert cfg.health.timeout == 1
    assert m.process == "s0, s1"
    assert "processes s0, s1 (one per service) -> one announcer" in _report(m)
    assert "--name" in _report(m)  # named as not mapped, not dropped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_per_service(("192.0.2.10", "--rise", "2"), ("192.0.2.11",)), "differ in --rise"),
        (_per_service(("192.0.2.10",), ("192.0.2.11", "--withdraw-on-down")),
         "differ in --withdraw-on-down"),
        (_per_service(("192.0.2.10",), ("192.0.2.11",)).replace("/health'", "/other'", 1),
         "--cmd differs beyond the address"),
    ],
)  # fmt: skip
def test_per_service_processes_that_differ_are_not_merged(text: str, message: str) -> None:
    with pytest.raises(MigrateError, match=message):
        _migrate(text, allowed_prefixes=())


def test_neighbors_without_the_process_and_without_families() -> None:
    m = _migrate(
        _conf(
            _run(),
            neighbors="neighbor 192.0.2.4 { router-id 192.0.2.5; local-as 65512; "
            "peer-as 65531; hold-time 30; }",
        )
    )
    report = _report(m)
    assert "neighbor 192.0.2.4 did not get hc's routes from ExaBGP" in report
    assert "neighbor 192.0.2.4 has no family block" in report
    g = tomllib.loads(_rendered(m)[GOBGPD])
    last = g["neighbors"][-1]
    assert last["timers"]["config"] == {"hold-time": 30, "keepalive-interval": 10}
    assert last["afi-safis"] == [{"config": {"afi-safi-name": "ipv4-unicast"}}]


def test_junos_route_filters() -> None:
    assert junos_route_filters(JUNOS.read_text()) == [NET("192.0.2.0/24")]
    ps = "set policy-options policy-statement"
    text = f"""set protocols bgp group lb import in-policy
{ps} in-policy term 1 from route-filter 192.0.2.0/24 prefix-length-range /32-/32 accept
{ps} in-policy term 2 from route-filter 2001:db8:0:1::/64 prefix-length-range /128-/128 accept
{ps} in-policy term 3 from route-filter 10.0.0.0/8 orlonger reject
{ps} other term 1 from route-filter 198.51.100.0/24 exact accept
"""
    assert junos_route_filters(text) == [NET("192.0.2.0/24"), NET("2001:db8:0:1::/64")]
    with pytest.raises(MigrateError):
        junos_route_filters(text.replace("192.0.2.0/24", "192.0.2.0/33"))


def test_rendering_is_deterministic_and_every_file_ends_in_a_newline() -> None:
    a, b = _rendered(_migrate(_conf(_run()))), _rendered(_migrate(_conf(_run())))
    assert a == b
    assert all(text.endswith("\n") for text in a.values())


def _allowed(m: Migration) -> tuple[IPNetwork, ...]:
    return m.gobgp.allowed


def test_gobgpd_export_policy_follows_the_allow_list() -> None:
    m = _migrate(_conf(_run()), allowed_prefixes=(NET("192.0.2.0/25"), NET("203.0.113.7/32")))
    g = tomllib.loads(_rendered(m)[GOBGPD])
    [v4] = g["defined-sets"]["prefix-sets"]
    assert [p["ip-prefix"] for p in v4["prefix-list"]] == ["192.0.2.0/25", "203.0.113.7/32"]
    assert _allowed(m) == (NET("192.0.2.0/25"), NET("203.0.113.7/32"))


_VALUES = {
    "interval": st.sampled_from(["0", "0.05", "1", "5", "30", "-1", "1e3"]),
    "fast-interval": st.sampled_from(["0.05", "1", "10", "99"]),
    "timeout": st.sampled_from(["0", "1", "5", "120"]),
    "rise": st.sampled_from(["0", "1", "3", "100", "101"]),
    "fall": st.sampled_from(["1", "3", "1000"]),
    "up-metric": st.sampled_from(["0", "100", "4294967295", "4294967296", "-5"]),
    "down-metric": st.sampled_from(["0", "1000", "99999999999"]),
    "disabled-metric": st.sampled_from(["500", "-1"]),
    "local-preference": st.sampled_from(["-1", "0", "200"]),
    "community": st.sampled_from(["65512:1", "65512:1 1:2", "no-export", "70000:1", "1:x"]),
    "large-community": st.sampled_from(["65512:1:2", "1:2", "4294967296:1:1"]),
    "disabled-community": st.sampled_from(["65512:666", "65535:0"]),
    "as-path": st.sampled_from(["65512", "65512 65512", "65512 " * 12, "64999", "[ 65512 ]"]),
    "down-as-path": st.sampled_from(["65512 65512", "1"]),
    "next-hop": st.sampled_from(["192.0.2.254", "2001:db8::1", "self", "x"]),
    "ip": st.sampled_from(["192.0.2.10", "192.0.2.0/28", "2001:db8::10", "bad", "0.0.0.0/0"]),
    "disable": st.sampled_from(["/etc/exabgp/disable", "relative"]),
    "command": st.sampled_from(["curl -sf http://%s/ok", "true", "curl -f x y", "check %s"]),
}
_FLAGS = ["withdraw-on-down", "debug", "silent", "no-ip-setup", "sudo"]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(_VALUES)), st.none(), max_size=8).flatmap(
        lambda keys: st.fixed_dictionaries({k: _VALUES[k] for k in keys})
    ),
    st.lists(st.sampled_from(_FLAGS), unique=True),
)
def test_any_options_give_files_announcer_and_gobgpd_read_or_a_migrate_error(
    values: dict[str, str], flags: list[str]
) -> None:
    """Whatever the healthcheck was given: a MigrateError naming the problem, or an
    announcer.yaml that announcer's own reader accepts and a gobgpd.toml that parses,
    neither with the secret."""
    opts = [a for k, v in values.items() for a in (f"--{k}", v)] + [f"--{f}" for f in flags]
    text = _conf(_run(*opts, "--api-password", "sekr1t", cmd=values.get("command", "true")))
    try:
        # --ip when given, else the routers' filter
        m = _migrate(text, allowed_prefixes=(), router_filters=(NET("192.0.2.0/24"),))
    except MigrateError as e:
        assert e.problems
        return
    out = _rendered(m)
    assert _config(m).allowed_prefixes  # what migrate writes, announcer reads
    tomllib.loads(out[GOBGPD])
    assert all("sekr1t" not in t for name, t in out.items() if name != PASSWORD)
