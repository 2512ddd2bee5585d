"""What announcer looks like from outside: one snapshot for `status`, the metrics and systemd.

A `Snapshot` is the service's state as plain values, taken on the event loop: each
VIP's state, the route it wants in gobgpd and its drain phase (the per-VIP work,
done once per snapshot), plus the scalars of gobgpd, DataPlaneAPI, the drains and the
hold. `announcer status --json` (`report`), the Prometheus page (metrics.py) and the
sd_notify STATUS= line (`line`) all read it; none of them asks the service VIP by VIP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import health as hm
from .health import State
from .model import HostPrefix, IPAddress, PeerStatus, Route, by_version
from .planner import Drain

if TYPE_CHECKING:
    from .core import CheckState, VipState
    from .service import Service


@dataclass(frozen=True)
class Snapshot:
    """The service's state as plain values, read on the event loop."""

    # Per VIP, in parallel lists rather than a tuple each: 10 000 tuples made per
    # scrape and kept past it gave the cyclic GC more to do (its full passes hold
    # every thread for 100 ms at 10 000 VIPs).
    addresses: list[IPAddress]
    states: list[State]
    wanted: list[Route | None]  # the route the VIP wants in gobgpd now (None: none)
    drains: list[Drain]
    paths: int
    drained: tuple[bool, bool, bool]  # the host by the operator, the disable file, stopping
    gobgp_ok: bool
    synced: bool
    peers: list[PeerStatus]
    dataplane_ok: bool
    dataplane_last_ok: float | None
    last_sync: float | None
    peer_alarms: dict[str, str]  # managed peers that are down, and why
    held: int  # VIPs the VIP-loss hold keeps (shrink.py)
    state_saved: bool  # the state directory is usable
    not_local: int = 0  # VIPs the kernel does not deliver to this host (locality.py)
    local_check: bool | None = None  # the local-VIP check works (None: not run here)
    guard_engaged: bool = False  # the mass-withdrawal guard holds (guard.py)
    guarded_vips: list[IPAddress] = field(default_factory=list)  # ...and keeps these
    damped: int = 0  # VIPs held withdrawn by flap damping (damping.py)

    @property
    def guarded(self) -> int:
        return len(self.guarded_vips)

    @property
    def announced(self) -> list[bool]:
        return [w is not None for w in self.wanted]


# VIPs read per step of the loop: about 2 ms each (what `desired()` costs per VIP),
# so that a scrape at 10 000 VIPs never holds the loop for 40 ms at once.
CHUNK = 500


async def take(svc: Service) -> Snapshot:
    """A snapshot read CHUNK VIPs per step of the loop (the metrics page).

    Each VIP's values are read in one step, so its series agree with each other and
    with the counts by state; two VIPs may be read a few milliseconds apart.
    """
    vips = list(svc.vips.values())
    snap = _scalars(svc)
    for i in range(0, len(vips), CHUNK):
        if i:
            await asyncio.sleep(0)
        _read_vips(svc, vips[i : i + CHUNK], snap)
    return snap


def take_now(svc: Service) -> Snapshot:
    """A snapshot in one go (`status`, tests)."""
    snap = _scalars(svc)
    _read_vips(svc, list(svc.vips.values()), snap)
    return snap


def _read_vips(svc: Service, vips: list[VipState], snap: Snapshot) -> None:
    now = svc.clock()
    core, phase, allow = svc.core, svc.drains.phase, svc.cfg.allowed_prefixes
    want, guard = core.want, core.truth.guard is not None
    addresses, states, wanted, drains = snap.addresses, snap.states, snap.wanted, snap.drains
    for vs in vips:
        a = vs.vip.address
        p = phase(a, now)
        addresses.append(a)
        states.append(vs.state)
        wanted.append(want(vs, p, None, allow))  # what `desired()` holds for it
        drains.append(p)
        if guard and core.truth.guarded(vs, p):
            snap.guarded_vips.append(a)


def _scalars(svc: Service) -> Snapshot:
    """A snapshot of everything but the VIPs (read into it by `_read_vips`)."""
    actual = svc.sync.actual
    hold = svc.core.hold
    return Snapshot(
        addresses=[],
        states=[],
        wanted=[],
        drains=[],
        paths=len(actual) if actual is not None else 0,
        drained=(
            svc.drains.host is not None,
            svc.drains.file is not None,
            svc.drains.stop is not None,
        ),
        gobgp_ok=bool(svc.sync.ok),
        synced=svc.synced.is_set(),
        peers=list(svc.sync.peers),
        dataplane_ok=bool(svc.discoverer.ok),
        dataplane_last_ok=svc.discoverer.last_ok,
        last_sync=svc.sync.last_sync,
        peer_alarms=dict(svc.sync.peer_alarms),
        held=len(hold.lost) if hold is not None else 0,
        not_local=len(svc.core.truth.not_local),
        local_check=svc.locality.ok if svc.locality is not None else None,
        guard_engaged=svc.core.truth.guard is not None,
        damped=len(svc.core.truth.held),
        state_saved=svc.drainer.saved,
    )


def line(svc: Service) -> str:
    """systemd's one-line STATUS= (`systemctl status`): cheap, no per-VIP route work."""
    up = sum(1 for vs in svc.vips.values() if hm.announced(vs.state))
    actual = svc.sync.actual
    routes = len(actual) if actual is not None else 0
    return f"{len(svc.vips)} VIPs, {up} healthy, {routes} routes in gobgpd"


def report(svc: Service, snap: Snapshot, routes: dict[HostPrefix, Route] | None) -> dict[str, Any]:
    """Everything `announcer status` shows, JSON-ready; `routes`: gobgpd's (None: unknown)."""
    offset = time.time() - svc.clock()

    def wall(monotonic: float) -> float:  # the core keeps monotonic times
        return monotonic + offset

    cfg = svc.cfg
    vips = []
    guarded = set(snap.guarded_vips)
    order = sorted(range(len(snap.addresses)), key=lambda i: by_version(snap.addresses[i]))
    for i in order:
        address = snap.addresses[i]
        vs = svc.vips.get(address)
        if vs is None:
            continue
        prefix = vs.vip.prefix
        wanted = snap.wanted[i]
        in_gobgp = routes.get(prefix) if routes is not None else None
        vips.append(
            {
                "address": str(address),
                "frontends": list(vs.vip.frontends),
                "state": str(snap.states[i]),
                "since": wall(vs.since),
                "why": vs.why,
                "drain": str(snap.drains[i]),
                "override": vs.spec.override,
                "local": address not in svc.core.truth.not_local,
                "guarded": address in guarded,
                "damped_until": _damped(svc, address, wall),
                "wanted": wanted is not None,
                "in_gobgp": None if routes is None else in_gobgp is not None,
                "in_sync": None if routes is None else wanted == in_gobgp,
                "communities": [str(c) for c in (in_gobgp.communities if in_gobgp else ())],
                "checks": [_check(svc.checks[s], wall) for s in vs.specs if s in svc.checks],
            }
        )
    hold = svc.core.hold
    return {
        "vips": vips,
        "peers": [
            {
                "address": p.address,
                "asn": p.peer_asn,
                "state": p.state.value,
                "admin_down": p.admin_down,
                "uptime_s": p.uptime_s,
                "alarm": snap.peer_alarms.get(p.address),
                "graceful_restart_s": p.graceful_restart_s,
                "bfd": p.bfd,
            }
            for p in snap.peers
        ],
        "gobgp": {
            "address": cfg.gobgp.address,
            "reachable": svc.sync.ok,
            "error": svc.sync.error,
            "routes": None if routes is None else len(routes),
            "resyncs": svc.sync.resyncs,
            "last_sync": snap.last_sync,
        },
        "vip_loss_hold": None
        if hold is None
        else {
            "vips": sorted(map(str, hold.lost), key=_by_text),
            "since": wall(hold.since),
            "answers": hold.seen,
            "needed": cfg.dataplaneapi.vip_loss.confirmations,
            "min_seconds": cfg.dataplaneapi.vip_loss.min_seconds,
        },
        "guard": _guard(svc, snap, wall),
        "local_check": {
            "ok": snap.local_check,
            "error": svc.locality.error if svc.locality is not None else "",
            "not_local": sorted(map(str, svc.core.truth.not_local), key=_by_text),
        },
        "dataplaneapi": {
            "url": cfg.dataplaneapi.url,
            "ok": svc.discoverer.ok,
            "error": svc.discoverer.error,
            "last_success": snap.dataplane_last_ok,
            "version": svc.discoverer.version,
        },
        "drain": {
            "host_by_operator": snap.drained[0],
            "host_by_file": snap.drained[1],
            "disable_file": str(cfg.drain.disable_file or ""),
            "stopping": snap.drained[2],
            "vips": sorted(map(str, svc.drains.vips)),
            "delay": cfg.drain.delay,
            "saved": snap.state_saved,
        },
        "synced": snap.synced,
    }


def _damped(svc: Service, address: IPAddress, wall: Any) -> float | None:
    d = svc.core.truth.damped(address)
    return None if d is None else wall(d.reuse_at(svc.core.truth.damping_policy))


def _guard(svc: Service, snap: Snapshot, wall: Any) -> dict[str, Any]:
    g, p = svc.core.truth.guard, svc.cfg.guard
    return {
        "enabled": p.enabled,
        "engaged": g is not None,
        "since": None if g is None else wall(g.since),
        "fell_lately": svc.core.truth.recent,  # within guard.window (as last counted)
        "failing": len(svc.core.truth.guarded_vips),
        "vips": len(svc.vips),
        "max_down_fraction": p.max_down_fraction,
        "min_vips": p.min_vips,
        "guarded": sorted(map(str, snap.guarded_vips), key=_by_text),
    }


def _by_text(address: str) -> tuple[int, int, int]:
    return by_version(ipaddress.ip_address(address))


def _check(c: CheckState, wall: Any) -> dict[str, Any]:
    last = c.last
    return {
        "target": c.spec.target,
        "kind": c.spec.kind,
        "state": str(c.health.state),
        "ok": None if last is None else last.ok,
        "detail": last.detail if last else "",
        "duration_ms": None if last is None else round(last.duration * 1000, 1),
        "at": None if c.last_at is None else wall(c.last_at),
    }
