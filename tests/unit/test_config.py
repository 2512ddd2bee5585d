"""Config loading: the example loads, every bad input names its key path."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.configfile import load_config, parse_config, read_password
from announcer.errors import ConfigError
from announcer.model import Community, Origin

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "announcer.yaml"


def minimal(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "allowed_prefixes": ["192.0.2.0/24"],
        "dataplaneapi": {"password_env": "DPAPI_PW"},
    }
    doc.update(over)
    return doc


def problems(doc: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    return e.value.problems


def test_example_config_loads_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.allowed_prefixes[0] == ipaddress.ip_network("192.0.2.0/24")
    assert cfg.policy.up.next_hop is None and cfg.policy.up.origin is Origin.IGP
    text = EXAMPLE.read_text()
    for section in ("dataplaneapi", "gobgp", "health", "bgp", "service", "drain", "metrics"):
        assert f"\n{section}:" in text
    # every option of every section appears (commented or not) in the example
    import dataclasses

    from announcer import config as c

    for cls in (c.GobgpConfig, c.CheckConfig, c.ServiceConfig, c.DrainConfig, c.MetricsConfig):
        for f in dataclasses.fields(cls):
            assert f"{f.name}:" in text, f"{cls.__name__}.{f.name} is not in the example"


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_config(minimal())
    assert cfg.health.rise == 3 and cfg.health.interval == 1.0
    assert cfg.gobgp.address == "unix:///run/gobgpd/api.sock"
    assert cfg.dataplaneapi.password_env == "DPAPI_PW"


def test_everything_set() -> None:
    cfg = parse_config(
        minimal(
            bgp={
                "next_hop": "192.0.2.254",
                "communities": ["65535:0", "65512:7"],
                "large_communities": ["65512:1:2"],
                "med": 10,
                "as_path_prepend": 2,
                "origin": "incomplete",
            },
            health={"type": "command", "command": "curl http://%s/", "shell": True},
        )
    )
    up = cfg.policy.up  # the `bgp` section: a healthy VIP's route
    assert up.next_hop == ipaddress.ip_address("192.0.2.254")
    assert Community(65535, 0) in up.communities
    assert up.origin is Origin.INCOMPLETE and cfg.health.shell


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, "allowed_prefixes: required"),
        (minimal(allowed_prefixes=[]), "allowed_prefixes: must list at least one"),
        (minimal(allowed_prefixes=["192.0.2.1/24"]), "allowed_prefixes[0]: '192.0.2.1/24' is not"),
        (minimal(allowed_prefixes=["0.0.0.0/0"]), "allowed_prefixes[0]: 0.0.0.0/0 would allow"),
        (minimal(allowed_prefixes="192.0.2.0/24"), "allowed_prefixes: expected a list"),
        (minimal(allowed_prefixes=["2001:db8::/32"]), "bgp.next_hop_v6: required"),
        (minimal(bogus=1), "bogus: unknown key"),
        (minimal(gobgp={"adress": "x"}), "gobgp.adress: unknown key"),
        (minimal(gobgp={"address": "localhost"}), "gobgp.address: 'localhost' is not host:port"),
        (minimal(gobgp={"address": "unix://rel"}), "gobgp.address: 'unix://rel': a unix socket"),
        (minimal(gobgp={"batch_size": 0}), "gobgp.batch_size: 0 is out of range"),
        (minimal(gobgp={"timeout": "5"}), "gobgp.timeout: expected a number of seconds"),
        (minimal(health={"rise": True}), "health.rise: expected an integer, got a boolean"),
        (minimal(health={"type": "icmp"}), "health.type: 'icmp' is not one of"),
        (minimal(health={"type": "command"}), "health.command: required when type is command"),
        (minimal(health={"path": "healthz"}), "health.path: 'healthz' must start with /"),
        (minimal(health={"expect_status": [200, 700]}), "health.expect_status[1]: 700 is out"),
        (minimal(health={"fast_interval": 2}), "health.fast_interval: must not be longer"),
        (minimal(health={"interval": float("nan")}), "health.interval: expected a number"),
        (minimal(bgp={"communities": ["65536:1"]}), "bgp.communities[0]: '65536:1' is not"),
        (minimal(bgp={"communities": ["1:1", "x"]}), "bgp.communities[1]: 'x' is not"),
        (minimal(bgp={"large_communities": ["1:2"]}), "bgp.large_communities[0]"),
        (minimal(bgp={"next_hop": "2001:db8::1"}), "bgp.next_hop: 2001:db8::1 is not an IPv4"),
        (minimal(bgp={"next_hop": "127.0.0.1"}), "bgp.next_hop: 127.0.0.1 is not a usable"),
        (minimal(bgp={"as_path_prepend": 11}), "bgp.as_path_prepend: 11 is out of range"),
        (minimal(bgp={"med": -1}), "bgp.med: -1 is out of range"),
        (
            minimal(dataplaneapi={"password": "x", "password_env": "P"}),
            "dataplaneapi.password: unknown key (did you mean",
        ),
        (minimal(dataplaneapi={}), "dataplaneapi: password_file or password_env is required"),
        (minimal(dataplaneapi={"password_env": "P", "password_file": "/f"}), "not both"),
        (
            minimal(dataplaneapi={"password_env": "P", "url": "ftp://x"}),
            "dataplaneapi.url: 'ftp://x'",
        ),
        (
            minimal(dataplaneapi={"password_env": "P", "api_version": 4}),
            "dataplaneapi.api_version: 4 is not",
        ),
        (
            minimal(dataplaneapi={"password_env": "P", "api_version": "3"}),
            "dataplaneapi.api_version: '3'",
        ),
        (
            minimal(dataplaneapi={"password_env": "P", "tls": {"verfy": True}}),
            "dataplaneapi.tls.verfy: unknown",
        ),
        (minimal(dataplaneapi={"password_env": "1X"}), "dataplaneapi.password_env: '1X' is not"),
        (minimal(dataplaneapi=[1]), "dataplaneapi: expected a mapping, got a list"),
        (["a"], "(top level): expected a mapping"),
        (minimal(log_level="LOUD"), "log_level: 'LOUD' is not one of"),
        (minimal(gobgp={"api_version": 5}), "gobgp.api_version: 5 is not one of"),
        (minimal(gobgp={"peers": ["r1"]}), "gobgp.peers[0]: 'r1' is not a neighbor"),
        (minimal(gobgp={"fate_sharing": "yes"}), "gobgp.fate_sharing: expected true or false"),
        (minimal(bgp={"down": {"announce": 1}}), "bgp.down.announce: expected true or false"),
        (minimal(bgp={"down": {"med": -1}}), "bgp.down.med: -1 is out of range"),
        (minimal(bgp={"draining": {"announce": False}}), "bgp.draining.announce: unknown key"),
        (minimal(bgp={"drained": {"communities": ["x"]}}), "bgp.drained.communities[0]"),
        (minimal(drain={"delay": -1}), "drain.delay: -1 is out of range"),
        (minimal(drain={"dealy": 1}), "drain.dealy: unknown key"),
        (minimal(metrics={"address": "localhost:9642"}), "metrics.address: 'localhost:9642'"),
        (minimal(metrics={"address": "127.0.0.1"}), "metrics.address: '127.0.0.1' is not"),
        (minimal(service={"control_socket": "rel.sock"}), "service.control_socket: 'rel.sock'"),
        (minimal(overrides={"a": 1}), "overrides: expected a list"),
        (minimal(overrides=[{"health": {"rise": 2}}]), "overrides[0]: needs frontends"),
        (minimal(overrides=[{"vips": ["x"]}]), "overrides[0].vips[0]: 'x/32' is not"),
        (
            minimal(overrides=[{"frontends": ["a"], "health": {"rise": 0}}]),
            "overrides[0].health.rise: 0 is out of range",
        ),
        (
            minimal(overrides=[{"frontends": ["a"], "bgp": {"comunities": []}}]),
            "overrides[0].bgp.comunities: unknown key",
        ),
        (
            minimal(overrides=[{"frontends": ["a"], "health": {"type": "command"}}]),
            "overrides[0].health.command: required when type is command",
        ),
    ],
)
def test_bad_config_names_the_key(doc: object, expected: str) -> None:
    found = problems(doc)
    assert any(expected in p for p in found), found


def test_no_cross_check_on_a_value_already_rejected() -> None:
    found = problems(minimal(health={"fast_interval": 0.01, "interval": 0.1}))
    assert found == ["health.fast_interval: 0.01 is out of range (0.05..3600 s)"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(minimal(gobgp={"batch_size": 0, "timeout": -1}, bogus=1, health={"rise": 0}))
    assert len(found) == 4, found


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("allowed_prefixes: [\n")
    with pytest.raises(ConfigError, match=r"line 2 .*not valid YAML"):
        load_config(bad)
    tagged = tmp_path / "tag.yaml"
    tagged.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe_load refuses it
        load_config(tagged)


def test_read_password(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    cfg = parse_config(minimal(dataplaneapi={"password_file": str(f)})).dataplaneapi
    assert read_password(cfg, {}) == "s3cret"
    rel = parse_config(minimal(dataplaneapi={"password_file": "pw"})).dataplaneapi
    assert read_password(rel, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "s3cret"
    # A credential name outside systemd: a clear error, not a file of the working dir.
    no_creds = r"pw is a credential name .* \$CREDENTIALS_DIRECTORY is not set"
    with pytest.raises(ConfigError, match=no_creds):
        read_password(rel, {})
    env = parse_config(minimal()).dataplaneapi
    assert read_password(env, {"DPAPI_PW": "x"}) == "x"
    with pytest.raises(ConfigError, match=r"\$DPAPI_PW is not set"):
        read_password(env, {})
    (tmp_path / "empty").write_text("\n")
    empty = parse_config(minimal(dataplaneapi={"password_file": str(tmp_path / "empty")}))
    with pytest.raises(ConfigError, match="is empty"):
        read_password(empty.dataplaneapi, {})


def test_yaml_roundtrip_of_example_is_stable() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert parse_config(doc) == load_config(EXAMPLE)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["192.0.2.0/24", "2001:db8::/32", "self", "65535:0", "auto", "http", "all"]),
)
_keys = st.sampled_from(
    [
        "allowed_prefixes",
        "dataplaneapi",
        "gobgp",
        "health",
        "bgp",
        "service",
        "url",
        "address",
        "password_env",
        "password_file",
        "tls",
        "frontends",
        "include",
        "communities",
        "rise",
        "interval",
        "type",
        "next_hop",
        "next_hop_v6",
        "x",
    ]
)
_docs = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_docs)
def test_any_document_gives_config_or_config_error(doc: object) -> None:
    try:
        parse_config(doc)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)


def test_overrides_inherit_the_global_settings_and_the_first_match_wins() -> None:
    cfg = parse_config(
        minimal(
            health={"rise": 5, "path": "/hz"},
            bgp={"med": 10, "communities": ["65512:1"], "down": {"announce": True, "med": 99}},
            overrides=[
                {"vips": ["192.0.2.10", "192.0.2.64/26"], "health": {"fall": 7}},
                {"frontends": ["fe_api*"], "bgp": {"med": 20}},
            ],
        )
    )
    a = ipaddress.ip_address
    check, policy, index = cfg.settings_for(a("192.0.2.70"), ("fe_api",))
    assert index == 0 and check.fall == 7 and check.rise == 5 and check.path == "/hz"
    assert policy.up.med == 10  # the first match wins whole; the second is not merged in
    check, policy, index = cfg.settings_for(a("192.0.2.11"), ("fe_web", "fe_api_v2"))
    assert index == 1 and policy.up.med == 20 and check.fall == 3
    assert policy.up.communities == (Community(65512, 1),)
    assert policy.down.announce and policy.down.med == 99
    assert cfg.settings_for(a("192.0.2.11"), ("fe_web",))[2] is None


def test_drain_and_state_dir_can_be_switched_off() -> None:
    cfg = parse_config(minimal(drain={"disable_file": None}, service={"state_dir": None}))
    assert cfg.drain.disable_file is None and cfg.service.state_dir is None
    assert parse_config(minimal()).drain.disable_file is not None


def test_a_reload_takes_live_keys_and_names_the_ones_that_need_a_restart() -> None:
    from announcer.config import reloaded

    base = {"allowed_prefixes": ["192.0.2.0/24"], "dataplaneapi": {"password_env": "X"}}
    old = parse_config(base)
    new = parse_config(
        {
            **base,
            "dataplaneapi": {
                "password_env": "X",
                "poll_interval": 5,
                "timeout": 9,
                "vip_loss": {"confirmations": 7},
            },
            "gobgp": {"address": "127.0.0.1:1", "reenable_peers": True},
            "health": {"rise": 5},
        }
    )
    cfg, ignored = reloaded(old, new)
    assert sorted(ignored) == ["dataplaneapi.timeout", "gobgp.address"]
    assert cfg.dataplaneapi.timeout == old.dataplaneapi.timeout  # kept until a restart
    assert cfg.gobgp.address == old.gobgp.address
    assert cfg.dataplaneapi.poll_interval == 5 and cfg.dataplaneapi.vip_loss.confirmations == 7
    assert cfg.gobgp.reenable_peers is True and cfg.health.rise == 5  # live
    assert reloaded(old, old) == (old, [])
