"""From frontends and the configuration to VIP specs: pure, no I/O.

The one-way VIP pipeline: DataPlaneAPI JSON -> frontends (discovery.py) -> VIP specs
(here) -> the service's state (core) -> a plan (planner.py) -> gobgpd. Nothing climbs
back up: a VIP spec carries everything later steps need (its listeners, its checks,
its hysteresis, its route policy, which override gave them).

Rules:

* Only literal, announceable IPs of enabled frontends selected by include/exclude are
  VIPs (the address rules are discovery.parse_bind_address's). A VIP bound by several
  frontends or ports is one VIP with several listeners.
* A VIP outside `allowed_prefixes` is not a spec: it is reported, and never checked or
  announced.
* Each listener gets one check (`check_spec`); identical checks of one VIP are one.
  A listener that cannot be checked (no port, with an http or tcp check) is reported.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .config import CheckConfig, Config
from .discovery import parse_bind_address
from .model import CheckSpec, Frontend, IPAddress, Listener, Vip, by_version
from .planner import VipPolicy, allowed

# ------------------------------------------------------------------------ VIPs


class Skipped(NamedTuple):
    """A frontend or bind that produced no VIP, and why (for an INFO/DEBUG log line)."""

    frontend: str
    bind: str | None  # None: the whole frontend was skipped
    reason: str


@dataclass(frozen=True)
class VipSet:
    """Every VIP of a discovery, plus what was skipped."""

    vips: dict[IPAddress, Vip] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def frontend_selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """fnmatch (case-sensitive) on the frontend name; exclude wins over include."""
    if exclude and any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
        return False
    # "*" (the default) selects every name: no pattern to match 10 000 times.
    return "*" in include or any(fnmatch.fnmatchcase(name, pat) for pat in include)


def vips_from_frontends(
    frontends: Iterable[Frontend],
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
) -> VipSet:
    """Group the literal-IP listeners of enabled, selected frontends by address."""
    listeners: dict[IPAddress, set[Listener]] = {}
    skipped: list[Skipped] = []
    for fe in frontends:
        if fe.disabled:
            skipped.append(Skipped(fe.name, None, "frontend is disabled"))
            continue
        if not frontend_selected(fe.name, include, exclude):
            skipped.append(Skipped(fe.name, None, "frontend not selected by include/exclude"))
            continue
        for bind in fe.binds:
            parsed = parse_bind_address(bind.address)
            if parsed.ip is None:
                skipped.append(Skipped(fe.name, bind.name, parsed.reason or parsed.kind))
                continue
            listener = Listener(
                frontend=fe.name,
                bind=bind.name,
                port=bind.port,
                ssl=bind.ssl,
                accept_proxy=bind.accept_proxy,
                mode=fe.mode,
                monitor_uri=fe.monitor_uri,
            )
            listeners.setdefault(parsed.ip, set()).add(listener)
    vips = {
        ip: Vip(address=ip, listeners=tuple(sorted(lst, key=_listener_order)))
        for ip, lst in sorted(listeners.items(), key=lambda kv: by_version(kv[0]))
    }
    return VipSet(vips=vips, skipped=skipped)


def _listener_order(lst: Listener) -> tuple[str, int, str, bool, bool]:
    return (lst.frontend, lst.port or 0, lst.bind, lst.ssl, lst.accept_proxy)


# ---------------------------------------------------------------------- checks


def check_spec(address: IPAddress, listener: Listener, cfg: CheckConfig) -> CheckSpec | None:
    """The check for one listener of a VIP, or None when it cannot be checked."""
    kind = cfg.type
    path = cfg.path or "/"
    if kind == "auto":
        if listener.accept_proxy:
            kind = "tcp"  # a plain HTTP request would be refused by accept-proxy
        elif listener.monitor_uri and listener.mode != "tcp":
            kind, path = "http", listener.monitor_uri
        elif cfg.path and listener.mode != "tcp":
            kind = "http"
        else:
            kind = "tcp"
    elif kind == "http" and listener.monitor_uri:
        path = listener.monitor_uri
    if kind == "command":
        return CheckSpec(
            "command", address, None, cfg.timeout, command=cfg.command, shell=cfg.shell
        )
    if listener.port is None:
        return None
    if kind == "tcp":
        return CheckSpec("tcp", address, listener.port, cfg.timeout)
    return CheckSpec(
        "http",
        address,
        listener.port,
        cfg.timeout,
        path=path,
        host=cfg.host,
        expect_status=cfg.expect_status,
        tls=listener.ssl,
        tls_verify=cfg.tls_verify,
    )


# ------------------------------------------------------------------- VIP specs


@dataclass(frozen=True, slots=True)
class VipSpec:
    """One VIP as the configuration says to treat it."""

    vip: Vip
    checks: tuple[CheckSpec, ...]
    check: CheckConfig  # its hysteresis (rise, fall, intervals) and how checks combine
    policy: VipPolicy
    override: int | None  # the index of the override that gave the settings


class Unchecked(NamedTuple):
    """A listener of a VIP that no check can reach (no port)."""

    address: IPAddress
    frontend: str
    bind: str


@dataclass(frozen=True)
class VipSpecs:
    """A discovery, as the configuration makes it: the specs and what was left out."""

    specs: dict[IPAddress, VipSpec]
    outside: dict[IPAddress, tuple[str, ...]]  # bound, but outside allowed_prefixes
    unchecked: tuple[Unchecked, ...]
    skipped: tuple[Skipped, ...]


def vip_specs(frontends: Iterable[Frontend], cfg: Config) -> VipSpecs:
    """Every VIP of `frontends` that `cfg` allows, with its checks and policy."""
    dp = cfg.dataplaneapi
    found = vips_from_frontends(
        frontends, include=dp.include_frontends, exclude=dp.exclude_frontends
    )
    specs: dict[IPAddress, VipSpec] = {}
    outside: dict[IPAddress, tuple[str, ...]] = {}
    unchecked: list[Unchecked] = []
    for address, vip in found.vips.items():
        if not allowed(vip.prefix, cfg.allowed_prefixes):
            outside[address] = vip.frontends
            continue
        check, policy, override = cfg.settings_for(address, vip.frontends)
        checks: list[CheckSpec] = []
        for lst in vip.listeners:
            spec = check_spec(address, lst, check)
            if spec is None:
                unchecked.append(Unchecked(address, lst.frontend, lst.bind))
            elif spec not in checks:
                checks.append(spec)
        specs[address] = VipSpec(vip, tuple(checks), check, policy, override)
    return VipSpecs(specs, outside, tuple(unchecked), tuple(found.skipped))
