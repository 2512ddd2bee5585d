"""The pure rules behind issue 11's safety items: watchdog liveness, peer alarms,
printable text, and check settings refused at load with the probes' own rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from announcer.checks import command_argv, request_token_ok
from announcer.configfile import parse_config
from announcer.control import _answer, render
from announcer.errors import ConfigError
from announcer.gobgp_sync import peer_alarms
from announcer.liveness import stuck_reason
from announcer.model import PeerStatus, SessionState
from announcer.text import printable

E = SessionState.ESTABLISHED


def test_watchdog_is_alive_while_checks_finish_and_reconciles_end() -> None:
    kw: dict[str, Any] = dict(checks=100, check_bound=10.0, reconcile_bound=120.0)
    assert stuck_reason(50.0, last_result=45.0, reconcile_since=None, **kw) is None
    why = stuck_reason(50.0, last_result=30.0, reconcile_since=None, **kw)
    assert why is not None and "no health check finished for 20s" in why
    why = stuck_reason(500.0, last_result=499.0, reconcile_since=300.0, **kw)
    assert why is not None and "reconcile" in why
    # No checks (DataPlaneAPI never answered, or no VIPs): nothing to be stuck on.
    assert stuck_reason(1e6, last_result=0.0, reconcile_since=None, **{**kw, "checks": 0}) is None


def test_watchdog_rule_does_not_look_at_dataplaneapi() -> None:
    """The rule has no DataPlaneAPI input at all: a dripping or dead API cannot abort us."""
    import inspect

    params = set(inspect.signature(stuck_reason).parameters)
    assert params == {
        "now",
        "checks",
        "last_result",
        "check_bound",
        "reconcile_since",
        "reconcile_bound",
    }


def _peer(address: str, state: SessionState = E, admin_down: bool = False) -> PeerStatus:
    return PeerStatus(address, 65530, state, admin_down)


def test_peer_set_admin_down_by_someone_else_is_an_alarm_only_once_we_enabled_it() -> None:
    since: dict[str, float] = {}
    peers = [_peer("198.51.100.1", SessionState.IDLE, admin_down=True), _peer("198.51.100.2")]
    kw: dict[str, Any] = dict(now=0.0, down_since=since, grace=10.0)
    assert peer_alarms(peers, set(), expect_enabled=False, **kw) == {}
    assert peer_alarms(peers, set(), expect_enabled=True, **kw) == {"198.51.100.1": "admin-down"}
    # A peer announcer does not manage is none of its business.
    assert peer_alarms(peers, {"198.51.100.2"}, expect_enabled=True, **kw) == {}


def test_a_session_down_longer_than_the_grace_is_an_alarm() -> None:
    since: dict[str, float] = {}
    peers = [_peer("198.51.100.1", SessionState.ACTIVE)]
    kw: dict[str, Any] = dict(expect_enabled=True, down_since=since, grace=10.0)
    assert peer_alarms(peers, set(), now=0.0, **kw) == {}
    assert peer_alarms(peers, set(), now=9.0, **kw) == {}
    assert peer_alarms(peers, set(), now=10.0, **kw) == {"198.51.100.1": "session active"}
    assert peer_alarms([_peer("198.51.100.1")], set(), now=11.0, **kw) == {}
    assert since == {}  # established again: forgotten
    assert peer_alarms(peers, set(), now=12.0, **kw) == {}  # a new grace starts


def test_printable_escapes_control_and_format_characters() -> None:
    assert printable("fe_web") == "fe_web"
    assert printable("fe\nFAKE: line") == "fe\\x0aFAKE: line"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("x\u202ey\x7f") == "x\\u202ey\\x7f"
    assert printable("caf\u00e9") == "caf\u00e9"  # ordinary text stays as it is


def test_status_table_escapes_frontend_names() -> None:
    report = {
        "vips": [
            {
                "address": "192.0.2.10",
                "frontends": ["fe\n\x1b[31mevil"],
                "state": "UP",
                "since": None,
                "drain": "none",
                "in_gobgp": True,
                "in_sync": True,
                "checks": [
                    {"target": "http://x", "ok": False, "detail": "HTTP 5\r03", "duration_ms": 1}
                ],
            }
        ],
        "gobgp": {
            "address": "unix:///run/x",
            "reachable": True,
            "error": "",
            "routes": 1,
            "resyncs": 0,
            "last_sync": None,
        },
        "peers": [],
        "dataplaneapi": {
            "url": "http://127.0.0.1:5555",
            "ok": False,
            "error": "bad\x1b]0;title\x07",
            "version": 1,
            "last_success": None,
        },
        "drain": {
            "host_by_operator": False,
            "host_by_file": False,
            "stopping": False,
            "disable_file": "",
            "vips": [],
            "delay": 1,
        },
        "synced": True,
    }
    text = render(report, now=0.0)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "fe\\x0a\\x1b[31mevil" in text
    assert len(text.splitlines()) == 6  # table, blank, gobgpd, DataPlaneAPI, drain: none forged


def test_control_socket_survives_deeply_nested_json() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    answer = asyncio.run(_answer(deep, None, False))  # type: ignore[arg-type]
    assert answer == {"ok": False, "error": "bad request: not a JSON object"}
    deep_obj = ('{"a":' * 50_000 + "1" + "}" * 50_000 + "\n").encode()
    assert asyncio.run(_answer(deep_obj, None, False))["ok"] is False  # type: ignore[arg-type]


def test_check_rules_shared_with_the_probes() -> None:
    assert request_token_ok("example.org") and not request_token_ok("example.org ")
    assert not request_token_ok("a\r\nX-Evil: 1")
    assert command_argv("check %s --x", False, "192.0.2.1") == ["check", "192.0.2.1", "--x"]
    with pytest.raises(ValueError):
        command_argv("curl 'http://%s/", False, "192.0.2.1")


BASE: dict[str, Any] = {
    "allowed_prefixes": ["192.0.2.0/24"],
    "dataplaneapi": {"password_env": "X"},
}


@pytest.mark.parametrize(
    ("health", "key"),
    [
        ({"host": "example.org "}, "health.host"),
        ({"host": "a b"}, "health.host"),
        ({"path": "/a\tb"}, "health.path"),
        ({"type": "command", "command": "curl 'http://%s/"}, "health.command"),
        ({"type": "command", "command": '""'}, "health.command"),
    ],
)
def test_check_config_refuses_what_every_probe_would_fail_on(
    health: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "health": health})
    assert any(p.startswith(key) for p in e.value.problems), e.value.problems
    # ...and in an override too.
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "overrides": [{"frontends": ["x"], "health": health}]})
    assert any(p.startswith(f"overrides[0].{key}") for p in e.value.problems), e.value.problems


def test_vip_loss_and_reenable_keys() -> None:
    cfg = parse_config(
        {
            **BASE,
            "dataplaneapi": {
                "password_env": "X",
                "vip_loss": {"max_fraction": 0.3, "confirmations": 5, "min_seconds": 60},
            },
            "gobgp": {"reenable_peers": True},
        }
    )
    assert cfg.dataplaneapi.vip_loss.max_fraction == 0.3
    assert cfg.dataplaneapi.vip_loss.confirmations == 5
    assert cfg.gobgp.reenable_peers is True
    with pytest.raises(ConfigError) as e:
        parse_config(
            {**BASE, "dataplaneapi": {"password_env": "X", "vip_loss": {"max_fraction": 2}}}
        )
    assert any("dataplaneapi.vip_loss.max_fraction" in p for p in e.value.problems)


def test_log_lines_escape_what_comes_from_outside() -> None:
    import io
    import logging

    from announcer.cli import _Printable

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(_Printable())
    logger = logging.getLogger("announcer.test_printable")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("VIP %s (frontends %s)", "192.0.2.10", "fe\nCRITICAL forged line")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("with a traceback %s", "x\ty")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == "VIP 192.0.2.10 (frontends fe\\x0aCRITICAL forged line)"
    assert lines[1] == "with a traceback x\\x09y"
    assert lines[2].startswith("Traceback")  # the traceback keeps its own lines
