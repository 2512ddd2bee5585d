"""The VIP-loss hold: a discovery that loses most VIPs at once is confirmed before it counts.

Pure (no I/O, `now` passed in). A DataPlaneAPI that answers `[]` or a much shorter
list for one poll (a restart with a half-written configuration, an impostor on its
port, a bug) would otherwise withdraw every route of the LB within one poll. Losing
one VIP because an operator removed its frontend is ordinary and stays as fast as
the poll; losing more than `max_fraction` of the known VIPs in one answer is held:

* the lost VIPs stay as they are (checked and announced while healthy);
* the loss counts once `confirmations` consecutive discoveries gave the same VIP
  set *and* at least `min_seconds` passed since it was first seen; a discovery that
  brings the VIPs back, or gives a different set, starts over;
* VIPs that appear are taken at once: only removals are held.

The rule looks at addresses only; the caller keeps the last good settings of the
VIPs the hold keeps.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

A = TypeVar("A", bound=Hashable)


@dataclass(frozen=True)
class ShrinkPolicy:
    """When a loss of VIPs is held, and what confirms it."""

    max_fraction: float = 0.5  # held: losing more than this share of the known VIPs at once
    confirmations: int = 3  # consecutive discoveries with the same smaller set
    min_seconds: float = 30.0  # ...spanning at least this long
    enabled: bool = True


@dataclass(frozen=True)
class Hold(Generic[A]):
    """A loss not yet confirmed: the smaller set, when first seen, and how often since."""

    found: frozenset[A]
    lost: frozenset[A]
    since: float
    seen: int

    def confirmed(self, now: float, policy: ShrinkPolicy) -> bool:
        return self.seen >= policy.confirmations and now - self.since >= policy.min_seconds


@dataclass(frozen=True)
class Verdict(Generic[A]):
    """What to do with one discovery: the VIPs to have, and the hold that remains."""

    keep: frozenset[A]  # the VIPs to have: what was found plus what the hold keeps
    hold: Hold[A] | None
    event: str  # "", "held", "holding", "confirmed", "released"


def decide(
    known: frozenset[A],
    found: frozenset[A],
    hold: Hold[A] | None,
    now: float,
    policy: ShrinkPolicy,
) -> Verdict[A]:
    """Judge one successful discovery `found` against the VIPs `known` so far."""
    lost = known - found
    big = bool(known) and len(lost) > policy.max_fraction * len(known)
    if not policy.enabled or not big:
        return Verdict(found, None, "released" if hold is not None else "")
    if hold is not None and hold.found == found:
        hold = Hold(found, hold.lost | lost, hold.since, hold.seen + 1)
        event = "holding"
    else:
        hold = Hold(found, lost, now, 1)
        event = "held"
    if hold.confirmed(now, policy):
        return Verdict(found, None, "confirmed")
    return Verdict(found | hold.lost, hold, event)
