"""The mass-withdrawal guard: a fault that fails most checks at once withdraws nothing.

Pure (no I/O). A control-plane fault (a bad HAProxy reload, a probe bug, a firewall or
resolver change) can fail every check on every LB at once; withdrawing every VIP from
every LB then takes the whole service off the network, which is what the 2025-07-14
1.1.1.1 outage was. The guard is Envoy's "panic threshold" applied to routes:

* A VIP is *failing* when it had a verdict and its checks now say FALLING, DOWN or
  RISING again, unless a check's last failure was "connect refused": nothing listens on
  the VIP's port (HAProxy is gone or no longer binds it), so a withdrawal tells the
  truth and is never guarded.
* The guard **engages** when the failing VIPs are at least `min_vips` and more than
  `max_down_fraction` of this host's VIPs. Counting FALLING (one failed check) as well
  as DOWN makes it engage before the first VIP of a common fault reaches `fall`: the
  checks are splayed over one interval, and a VIP reaches `fall` (fall - 1) x
  fast_interval after its first failure, which is one interval with the defaults
  (2 x 0.5 s), so every VIP has failed once by then.
* Shorter settings, or checks that fail a little apart: while at least `min_vips` VIPs
  fail and the guard does not hold, a VIP that reaches DOWN keeps its route for up to
  one `interval` more (the core's `pending`), so that a mass fault still showing
  engages the guard before it withdraws anything. One or two VIPs failing on their
  own (fewer than `min_vips`) are withdrawn at once, as always.
* While engaged, a failing VIP that its checks would withdraw stays announced, with
  GRACEFUL_SHUTDOWN (65535:0) added and `as_path_prepend` more AS-path prepends:
  routers prefer any other LB that announces it healthy, and keep sending here only
  where no LB does. A VIP that is healthy again is announced as usual.
* It **releases** once the failing VIPs have stayed at or below half the threshold
  (or below `min_vips`), none of them RISING, for `release_after` seconds: the VIPs
  still DOWN then are withdrawn, as without the guard. (Releasing at the first
  moment would withdraw VIPs whose checks are a little behind the others in a
  recovery, only to announce them again a second later.)
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


def engaged(
    was: bool, failing: int, total: int, policy: GuardPolicy, recovering: int = 0
) -> bool:
    """Whether the guard holds now, given whether it held before (the hysteresis);
    `recovering`: how many failing VIPs are RISING."""
    if not policy.enabled:
        return False
    threshold = policy.max_down_fraction * total
    if not was:
        return failing >= policy.min_vips and failing > threshold
    return recovering > 0 or (failing >= policy.min_vips and failing > threshold / 2)


def guarded(route: Route, policy: GuardPolicy) -> Route:
    """The healthy route made worse: 65535:0 added and more AS-path prepends."""
    communities = route.communities
    if GRACEFUL_SHUTDOWN not in communities:
        communities = (*communities, GRACEFUL_SHUTDOWN)
    prepend = min(MAX_PREPEND, route.as_path_prepend + policy.as_path_prepend)
    return replace(route, communities=communities, as_path_prepend=prepend)
