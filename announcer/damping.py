"""Flap damping: a VIP that keeps going down and up is held withdrawn for a while.

Pure (no I/O, `now` passed in). rise/fall bound one flap; a backend that goes up and
down every few seconds for an hour still sends an UPDATE to every core router per
cycle. This is RFC 2439's route flap damping, applied where the flaps start:

* each withdrawal by health (a VIP leaving UP/FALLING for DOWN) adds `penalty`;
* the penalty decays exponentially with `half_life`;
* above `suppress` the VIP is *damped*: not announced, whatever its checks say, until
  the penalty has decayed below `reuse`;
* the penalty never exceeds the ceiling from which it decays to `reuse` in `max_hold`,
  so no VIP is held longer than that after its last flap.

The defaults (1000 per withdrawal, suppress above 2500, reuse below 750, half-life
60 s, at most 300 s) leave one or two failures alone: it takes a third withdrawal
within about a minute to damp a VIP. A backend flapping every 10 s is then announced
for its first three cycles and held from the third withdrawal on; over a two-minute
flap the routers see about 5 changes instead of 24.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DampingPolicy:
    enabled: bool = True
    penalty: float = 1000.0  # added per withdrawal by health
    suppress: float = 2500.0  # damped above this
    reuse: float = 750.0  # announced again below this
    half_life: float = 60.0  # seconds
    max_hold: float = 300.0  # seconds: the most a VIP is held after its last flap

    @property
    def ceiling(self) -> float:
        """The penalty that decays to `reuse` in `max_hold`."""
        return self.reuse * 2 ** (self.max_hold / self.half_life)

    def problems(self) -> list[tuple[str, str]]:
        """What makes no sense together, by key (for the configuration reader)."""
        out = []
        if self.reuse >= self.suppress:
            out.append(("reuse", "must be below suppress"))
        if self.penalty <= 0:
            out.append(("penalty", "must be positive"))
        if self.ceiling <= self.suppress:
            out.append(("max_hold", "too short: the penalty could never exceed suppress"))
        return out


@dataclass(frozen=True)
class Damp:
    """One VIP's penalty as of `at`, and whether it is held withdrawn."""

    penalty: float
    at: float
    suppressed: bool = False

    def now(self, now: float, policy: DampingPolicy) -> float:
        """The penalty decayed to `now`."""
        return self.penalty * 2 ** (-max(0.0, now - self.at) / policy.half_life)

    def reuse_at(self, policy: DampingPolicy) -> float:
        """When the penalty decays to `reuse` (if suppressed: when it may be announced)."""
        if self.penalty <= policy.reuse:
            return self.at
        return self.at + policy.half_life * math.log2(self.penalty / policy.reuse)


def withdrawn(d: Damp | None, now: float, policy: DampingPolicy) -> Damp:
    """A withdrawal by health at `now`: the penalty grows, and may suppress the VIP."""
    base = d.now(now, policy) if d is not None else 0.0
    penalty = min(policy.ceiling, base + policy.penalty)
    suppressed = (d is not None and d.suppressed) or penalty > policy.suppress
    return Damp(penalty, now, suppressed)


def settle(d: Damp, now: float, policy: DampingPolicy) -> Damp | None:
    """The state at `now`: suppression ends below `reuse`; a penalty that no longer
    matters (not suppressed, below half of `reuse`) is forgotten (None)."""
    if d.suppressed and now < d.reuse_at(policy):
        return d
    p = d.now(now, policy)
    if p < policy.reuse / 2:
        return None
    return Damp(p, now, False)
