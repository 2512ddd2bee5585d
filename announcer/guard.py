"""The mass-withdrawal guard: a fault that fails most checks at once withdraws nothing.

Pure (no I/O). A control-plane fault (a bad HAProxy reload, a probe bug, a firewall or
resolver change) can fail every check on every LB at once; withdrawing every VIP from
every LB then takes the whole service off the network, which is what the 2025-07-14
1.1.1.1 outage was. The guard is Envoy's "panic threshold" applied to routes:

* A VIP **falls** when it leaves UP for FALLING (one failed check) or DOWN. It stays
  fallen until it is UP again, or until a check's connect is refused: nothing listens
  on the VIP's port (HAProxy is gone or no longer binds it), so a withdrawal tells the
  truth and is never guarded. A VIP that was DOWN before does not fall again: the
  guard is about many VIPs failing *now*, not about VIPs dead for a day.
* The guard **engages** when, within `window` seconds, at least `min_vips` VIPs fell
  and they are more than `max_down_fraction` of this host's VIPs. Counting FALLING
  makes it engage before the first VIP of a common fault reaches `fall`: the checks
  are splayed over one interval, and a VIP reaches DOWN (fall - 1) x fast_interval
  after its first failure, one interval with the defaults (2 x 0.5 s).
* While engaged, the VIPs of the fault (those that fell within `window` before it
  engaged, and any that fall while it holds) stay announced when their checks would
  withdraw them, with GRACEFUL_SHUTDOWN (65535:0) added and `as_path_prepend` more
  AS-path prepends: routers prefer any other LB that announces the VIP healthy, and
  keep sending here only where no LB does. A VIP that is healthy again is announced
  as usual; one that was withdrawn before the fault stays withdrawn.
* Before it engages, while the VIPs that fell within `window` are at least `min_vips`
  and half way to that share, a VIP that reaches DOWN keeps its route for up to one
  `interval` more (the core's `pending`), so that a mass fault still showing engages
  the guard before it withdraws anything. Fewer failures (a backend shared by a few
  VIPs, one at a time) are withdrawn at once, as without the guard.
* It **releases** once the VIPs of the fault still failing have stayed at or below
  half the threshold (or below `min_vips`) for `release_after` seconds: those still
  DOWN then are withdrawn, as without the guard. (Letting go at the first moment would
  withdraw VIPs whose checks are a little behind the others in a recovery.)
* Drains, a stop, a non-local VIP and the allow-list are not the guard's business:
  they withdraw as always.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .model import MAX_PREPEND, Route
from .planner import GRACEFUL_SHUTDOWN


@dataclass(frozen=True)
class GuardPolicy:
    """When the guard engages, and how a guarded route is made worse."""

    enabled: bool = True
    max_down_fraction: float = 0.5  # engage above this share of the host's VIPs failing
    min_vips: int = 3  # ...and at least this many (one failure of two VIPs is no fault)
    as_path_prepend: int = 3  # added to a guarded route's prepends (plus 65535:0)
    release_after: float = 10.0  # seconds the release condition must hold
    window: float = 5.0  # seconds: VIPs that fell within this long count together


def engages(fell: int, total: int, policy: GuardPolicy) -> bool:
    """Whether `fell` VIPs falling within one window of `total` is a mass fault."""
    return (
        policy.enabled
        and fell >= policy.min_vips
        and fell > policy.max_down_fraction * total
    )


def calm(failing: int, total: int, policy: GuardPolicy) -> bool:
    """While engaged: whether the VIPs of the fault still failing are few enough to let
    go (once that has lasted `release_after`)."""
    return (
        not policy.enabled
        or failing < policy.min_vips
        or failing <= policy.max_down_fraction * total / 2
    )


def guarded(route: Route, policy: GuardPolicy) -> Route:
    """The healthy route made worse: 65535:0 added and more AS-path prepends."""
    communities = route.communities
    if GRACEFUL_SHUTDOWN not in communities:
        communities = (*communities, GRACEFUL_SHUTDOWN)
    prepend = min(MAX_PREPEND, route.as_path_prepend + policy.as_path_prepend)
    return replace(route, communities=communities, as_path_prepend=prepend)
