"""The rise/fall health state machine: pure values in, values out, `now` passed in.

Rules (the whole of them):

* A check is in one of INIT, RISING, UP, FALLING, DOWN.
* Only UP and FALLING are *announced*. FALLING means "announced, but the last
  failures are counting toward a withdrawal"; RISING means "not announced, but the
  last successes are counting toward an announcement". So a route appears only after
  `rise` consecutive successes and leaves only after `fall` consecutive failures,
  and a check flapping between success and failure never moves the route
  (with rise and fall >= 2).
* INIT: a success starts RISING (or goes UP at once when rise == 1); a failure goes
  DOWN at once, because nothing is announced yet that hysteresis should protect.
* RISING: a success counts; at `rise` it is UP. A failure goes back to DOWN.
* UP: a failure starts FALLING (or goes DOWN at once when fall == 1).
* FALLING: a failure counts; at `fall` it is DOWN. A success goes back to UP.
* DOWN: a success starts RISING (or UP at once when rise == 1).
* Maintenance is not a health state: a drain (drains.py) is applied on top of it
  by the planner, and only ever makes a route worse or removes it.
* While RISING or FALLING (and in INIT) the next check comes after
  `fast_interval`, otherwise after `interval`, so a verdict is reached quickly.

Several checks of one VIP (several frontends or ports) are combined by
`combine()`: with policy "all" the worst state wins, with "any" the best.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal


class State(enum.Enum):
    INIT = "INIT"
    RISING = "RISING"
    UP = "UP"
    FALLING = "FALLING"
    DOWN = "DOWN"

    def __str__(self) -> str:  # "UP", not "State.UP" (ExaBGP #1383 was this bug)
        return self.value


ANNOUNCED = frozenset({State.UP, State.FALLING})
_FAST = frozenset({State.INIT, State.RISING, State.FALLING})


def announced(state: State) -> bool:
    """Whether a check (or a VIP) in this state is announced."""
    return state in ANNOUNCED


@dataclass(frozen=True)
class HealthParams:
    """Hysteresis settings of one check."""

    rise: int = 3
    fall: int = 3
    interval: float = 1.0
    fast_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if self.interval <= 0 or self.fast_interval <= 0:
            raise ValueError("intervals must be positive")


@dataclass(frozen=True, slots=True)
class Health:
    """The state of one check. `count` is the length of the current streak."""

    state: State = State.INIT
    count: int = 0
    since: float = 0.0  # when `state` was entered
    next_check: float = 0.0  # when the next probe is due


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, for the log line and the metrics."""

    old: State
    new: State
    reason: str

    def __str__(self) -> str:
        return f"{self.old} -> {self.new} ({self.reason})"


def initial(now: float, first_check: float | None = None) -> Health:
    """A new check in INIT, due at `first_check` (a splay) or now."""
    return Health(State.INIT, 0, now, now if first_check is None else first_check)


def seeded(previous: State, now: float, first_check: float) -> Health:
    """A replacement check for a VIP whose check changed (a reload, a new port).

    It starts where the VIP stood, not at INIT: an announced VIP stays announced
    until the new check fails `fall` times, and a down one needs `rise` successes.
    So a reload that only edits a check does not flap the route.
    """
    if previous in ANNOUNCED:
        return Health(State.UP, 0, now, first_check)
    if previous in (State.DOWN, State.RISING):
        return Health(State.DOWN, 0, now, first_check)
    return initial(now, first_check)


def _next(state: State, due: float, now: float, p: HealthParams) -> float:
    """When the check runs next: one step after the time it was due, not after its result.

    Counting from the result would make every period interval + the probe's time (and
    the loop's lateness): at 10 000 checks a second, about 9 % of the checks were never
    done (issue 16). A check more than a whole step late (a probe as slow as the
    interval, a stalled loop) skips the slots it missed instead of running in a burst,
    and keeps its place in the schedule: always strictly after `now`.
    """
    step = p.fast_interval if state in _FAST else p.interval
    nxt = due + step
    if nxt <= now:
        nxt += (math.floor((now - nxt) / step) + 1) * step
        if nxt <= now:  # rounding
            nxt = now + step
    return nxt


def observe(
    h: Health, ok: bool, now: float, p: HealthParams, detail: str = ""
) -> tuple[Health, Transition | None]:
    """Fold one probe result into the state; returns the new state and the transition, if any."""
    what = "check passed" if ok else "check failed"
    if detail:
        what = f"{what}: {detail}"
    s, c = h.state, h.count
    if ok:
        if s in (State.INIT, State.DOWN):
            new, count = (State.UP, 0) if p.rise <= 1 else (State.RISING, 1)
        elif s is State.RISING:
            new, count = (State.UP, 0) if c + 1 >= p.rise else (State.RISING, c + 1)
        else:  # UP, FALLING: a success ends a failure streak
            new, count = State.UP, 0
    else:
        if s in (State.INIT, State.RISING, State.DOWN):
            new, count = State.DOWN, 0
        elif s is State.UP:
            new, count = (State.DOWN, 0) if p.fall <= 1 else (State.FALLING, 1)
        else:  # FALLING
            new, count = (State.DOWN, 0) if c + 1 >= p.fall else (State.FALLING, c + 1)
    if new is s:
        return replace(h, count=count, next_check=_next(new, h.next_check, now, p)), None
    if new is State.RISING or new is State.FALLING:
        progress = p.rise if new is State.RISING else p.fall
        what = f"{what}; {count}/{progress}"
    return Health(new, count, now, _next(new, h.next_check, now, p)), Transition(s, new, what)


# Worst first: with policy "all" the first state present wins, with "any" the last.
_SEVERITY = (State.DOWN, State.INIT, State.RISING, State.FALLING, State.UP)


def combine(states: Iterable[State], policy: Literal["all", "any"] = "all") -> State:
    """The state of a VIP from the states of its checks.

    "all": announced only if every check is (worst wins); "any": announced if one
    check is (best wins). With no checks at all the VIP is INIT (never announced).
    """
    present = set(states)
    if not present:
        return State.INIT
    order = _SEVERITY if policy == "all" else tuple(reversed(_SEVERITY))
    for s in order:
        if s in present:
            return s
    raise AssertionError("unreachable: every State is in _SEVERITY")
