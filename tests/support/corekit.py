"""Helpers for the pure core's tests (tests/unit): VIP specs from a config, a core with a
fixed random seed, feeding probe results at a given `now`. No I/O, no sleeping."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from announcer.configfile import parse_config
from announcer.core import Core
from announcer.model import CheckResult, Frontend, RawBind
from announcer.planner import Drain
from announcer.vips import vip_specs

A = ipaddress.ip_address
N = ipaddress.ip_network
ALLOW = (N("192.0.2.0/24"),)
OK = CheckResult(True, "HTTP 200", 0.001)
FAIL = CheckResult(False, "HTTP 503", 0.001)


def none(_: Any, __: float) -> Drain:
    return Drain.NONE


def cfg(**health: Any) -> Any:
    h = {"interval": 1, "fast_interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 2, **health}
    return parse_config(
        {"allowed_prefixes": ["192.0.2.0/24"], "dataplaneapi": {"password_env": "X"}, "health": h}
    )


def specs(*addresses: str, **health: Any) -> Any:
    fe = Frontend(
        "web",
        "http",
        monitor_uri="/hz",
        binds=tuple(RawBind(f"b{i}", a, 80) for i, a in enumerate(addresses)),
    )
    return vip_specs([fe], cfg(**health)).specs


def core(grace: float = 10.0) -> Core:
    return Core(0.0, grace, random.Random(1))


def feed(c: Core, address: str, result: CheckResult, times: int, now: float) -> float:
    for _ in range(times):
        spec = next(s for s in c.checks if str(s.address) == address)
        c.record(spec, result, now, none)
        now += 0.5
    return now
