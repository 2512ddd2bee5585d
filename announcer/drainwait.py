"""Whether a drain or undrain has taken effect in gobgpd (`announcer drain --wait`). Pure.

The CLI asks the running service over the control socket (command `progress`,
control.py) how far a drain or undrain of some VIPs has got, and asks again until
every VIP is done or its timeout ends. It polls rather than have the service answer
when done: each request stays one short answer, like `status` (the control socket is
shared, and control.py bounds each request), the service keeps nothing per waiting
client, a dead or killed client simply stops asking, and a restart of announcer in
the middle is survived (operator drains are saved; the client asks again).

Done is judged against gobgp_sync.py's actual set (what was last read back from
gobgpd or applied to it) and what the core wants for the VIP now, never against the
command's intent:

* drain: the VIP's phase is DRAINED (65535:0 was wanted for drain.delay) and gobgpd
  has the drained route: none (withdrawn), or the one bgp.drained keeps (65535:0).
* undrain: no drain covers the VIP any more and gobgpd has the route of its health:
  UP or FALLING, announced without 65535:0. A DOWN VIP is as announced as it can be
  (withdrawn, or kept with worse attributes): done, and said so, so that a wait
  never blocks on a broken backend. INIT and RISING wait for their checks' verdict
  (rise x interval).
* A VIP announcer does not know (gone from HAProxy since) is done once gobgpd has no
  route for it. Nothing is done while gobgpd's routes are unknown: before the first
  sync, and after a gobgpd failure or restart until they are read back.

The CLI's half (the default timeout, what to print and when) is here too, with `now`
passed in, so that it is tested without sleeping.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .health import State
from .model import IPAddress, Route, by_version
from .planner import GRACEFUL_SHUTDOWN, Drain

# The default --timeout beyond drain.delay: gobgpd's reconnect backoff, a RISING VIP's
# rise x interval, a restart of announcer; long enough that only a real problem hits it.
MARGIN = 30.0
LIMIT = 50  # VIPs listed in one answer (the counts cover all): --all at 10 000 stays small
POLL = 0.25  # seconds between two requests of the CLI...
POLL_MANY, MANY = 1.0, 1000  # ...and with more VIPs than that (~7 us each to the service)
EVERY = 10.0  # a progress line at least this often while nothing changes
SOONEST = 1.0  # and at most this often when something does
UNDECIDED = frozenset({State.INIT, State.RISING})


class Goal(enum.Enum):
    """What the CLI waits for: the command it sent."""

    DRAIN = "drain"
    UNDRAIN = "undrain"


# Why a VIP is done, in the final line (`outcome` of a judgement that is done).
OUTCOMES = {
    "withdrawn": "withdrawn",
    "kept": "kept with bgp.drained's attributes and 65535:0",
    "announced": "announced",
    "down": "DOWN",
    "absent": "not VIPs announcer knows",
    "unannounced": "healthy but not announced",
}


@dataclass(frozen=True)
class Seen:
    """One VIP as the service sees it now: every value the judgement needs."""

    address: IPAddress
    phase: Drain
    state: State | None  # None: not a VIP announcer knows now
    wanted: Route | None  # the route the core wants in gobgpd now (None: none)
    actual: Route | None  # the route gobgpd has (gobgp_sync.GobgpSync.actual)
    until_drained: float | None  # drains.Drains.until_drained
    causes: tuple[str, ...] = ()  # what drains it (drains.Drains.causes)


@dataclass(frozen=True)
class Judged:
    """Whether a drain or undrain took effect for one VIP, and why not (or what to say)."""

    address: IPAddress
    done: bool
    outcome: str  # done: a key of OUTCOMES; not done: "pending"
    why: str  # for the operator; "" when there is nothing to say
    phase: Drain
    state: State | None
    in_gobgp: bool | None  # None: gobgpd's routes are unknown


def judge(goal: Goal, v: Seen, known: bool) -> Judged:
    """The judgement for one VIP; `known`: gobgpd's routes are known (see the docstring)."""

    def out(done: bool, outcome: str, why: str = "") -> Judged:
        return Judged(
            v.address, done, outcome, why, v.phase, v.state, v.actual is not None if known else None
        )

    if not known:
        return out(False, "pending", "gobgpd's routes are not known yet (first sync, or re-read)")
    in_sync = v.actual == v.wanted
    if v.state is None:
        if v.actual is None:
            return out(True, "absent", "not a VIP announcer knows now; nothing in gobgpd")
        return out(False, "pending", "not a VIP announcer knows now; gobgpd not updated yet")
    if goal is Goal.DRAIN:
        return _drained(v, in_sync, out)
    return _undrained(v, in_sync, out)


def _drained(v: Seen, in_sync: bool, out: Callable[..., Judged]) -> Judged:
    if v.phase is Drain.NONE:
        return out(False, "pending", "not drained (undrained since?)")
    if v.phase is Drain.DRAINING:
        if v.until_drained is None:  # only a stop: it ends with the withdrawal of all
            return out(False, "pending", "draining for a stop of announcer")
        if v.wanted is None:
            sent = "not announced"  # DOWN (or not local): no traffic to move away
        elif in_sync and GRACEFUL_SHUTDOWN in v.wanted.communities:
            sent = "65535:0 in gobgpd"
        else:
            sent = "65535:0 not in gobgpd yet"
        return out(
            False, "pending", f"draining: {sent}, {v.until_drained:.1f}s of drain.delay left"
        )
    if not in_sync:
        return out(False, "pending", "drained: gobgpd not updated yet")
    return out(True, "withdrawn" if v.actual is None else "kept")


def _undrained(v: Seen, in_sync: bool, out: Callable[..., Judged]) -> Judged:
    if v.phase is not Drain.NONE:
        return out(False, "pending", f"still drained by {' and '.join(v.causes) or 'a drain'}")
    if v.state in UNDECIDED:
        return out(False, "pending", f"{v.state}: waiting for its checks' verdict")
    if not in_sync:
        return out(False, "pending", "undrained: gobgpd not updated yet")
    if v.state is State.DOWN:
        if v.actual is None:
            return out(True, "down", "DOWN (its checks fail): announced once they pass")
        # bgp.down.announce, or the mass-withdrawal guard, keeps it with worse attributes
        return out(True, "down", "DOWN (its checks fail): kept announced, with worse attributes")
    if v.actual is None:  # healthy and undrained, yet the core wants no route for it
        return out(
            True,
            "unannounced",
            "healthy but not announced (outside allowed_prefixes, or "
            "not local to this host: `announcer status` says)",
        )
    return out(True, "announced")


def report(
    goal: Goal, judged: Iterable[Judged], *, known: bool, delay: float, limit: int = LIMIT
) -> dict[str, Any]:
    """The answer to `progress`: counts over every VIP, and the VIPs not done (then those
    done with something to say), at most `limit` of them, so the answer stays small."""
    total = done = 0
    outcomes: dict[str, int] = {}
    pending: list[Judged] = []
    noted: list[Judged] = []
    for j in judged:
        total += 1
        if j.done:
            done += 1
            outcomes[j.outcome] = outcomes.get(j.outcome, 0) + 1
            if j.why:
                noted.append(j)
        else:
            pending.append(j)
    listed = sorted(pending[:limit], key=lambda j: by_version(j.address))
    listed += sorted(noted[: limit - len(listed)], key=lambda j: by_version(j.address))
    return {
        "of": goal.value,
        "total": total,
        "done": done,
        "outcomes": outcomes,
        "gobgp_known": known,
        "delay": delay,
        "vips": [
            {
                "vip": str(j.address),
                "done": j.done,
                "outcome": j.outcome,
                "phase": str(j.phase),
                "state": None if j.state is None else str(j.state),
                "in_gobgp": j.in_gobgp,
                "why": j.why,
            }
            for j in listed
        ],
        "omitted": len(pending) + len(noted) - len(listed),
    }


# ------------------------------------------------------------------- the CLI's half


def parse_timeout(text: str) -> float:
    """`--timeout`: seconds, finite and not negative (0: look once); raises ValueError."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r}: give a number of seconds, 0 or more")
    return seconds


def default_timeout(goal: Goal, delay: float) -> float:
    """How long `--wait` waits without `--timeout`: drain.delay (a drain) + MARGIN."""
    return (delay if goal is Goal.DRAIN else 0.0) + MARGIN


def poll_interval(total: int) -> float:
    return POLL if total <= MANY else POLL_MANY


def _what(goal: str) -> str:
    return "drained" if goal == Goal.DRAIN.value else "undrained"


def _vips(n: int) -> str:
    return f"{n} VIP" if n == 1 else f"{n} VIPs"


def _pending(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in result["vips"] if not v["done"]]


@dataclass
class Progress:
    """When the CLI prints a progress line: when the picture changed (at most once per
    SOONEST seconds, and not in the first: a quick undrain prints only its final line),
    else every EVERY seconds; never for each request."""

    at: float = 0.0  # seconds since the command started
    key: object = None

    def line(self, result: dict[str, Any], elapsed: float) -> str | None:
        """The line to print now (`elapsed`: seconds since the command started), or None."""
        first = _pending(result)[:1]
        key = (
            result["done"],
            result["total"],
            result["gobgp_known"],
            [(v["vip"], v["phase"], v["state"], v["in_gobgp"]) for v in first],
        )
        since = elapsed - self.at
        if not ((key != self.key and since >= SOONEST) or since >= EVERY):
            return None
        self.at, self.key = elapsed, key
        waiting = result["total"] - result["done"]
        text = (
            f"{result['of']}: {result['done']} of {_vips(result['total'])} "
            f"{_what(result['of'])} in gobgpd after {elapsed:.1f}s"
        )
        if first:
            text += f"; waiting for {first[0]['vip']} ({first[0]['why']})"
            if waiting > 1:
                text += f" and {waiting - 1} more"
        return text


def final_lines(result: dict[str, Any], elapsed: float) -> list[str]:
    """What `--wait` prints when every VIP is done: one line, plus one per VIP to note."""
    total = result["total"]
    if not total:
        return [f"{result['of']}: done: no VIPs to wait for"]
    outcomes = ", ".join(f"{n} {OUTCOMES.get(k, k)}" for k, n in sorted(result["outcomes"].items()))
    lines = [
        f"{result['of']}: done after {elapsed:.1f}s: {_vips(total)} {_what(result['of'])} "
        f"in gobgpd ({outcomes})"
    ]
    lines += [f"  {v['vip']}: {v['why']}" for v in result["vips"] if v["why"]]
    if result["omitted"]:
        lines.append(f"  ... and {result['omitted']} more (`announcer status`)")
    return lines


def timeout_lines(result: dict[str, Any], timeout: float) -> list[str]:
    """What `--wait` prints when its timeout ends first: what is not done, and why."""
    goal = result["of"]
    waiting = result["total"] - result["done"]
    pending = _pending(result)
    lines = [
        f"announcer {goal} --wait: timed out after {timeout:g}s: {result['done']} of "
        f"{_vips(result['total'])} {_what(goal)} in gobgpd; {waiting} not yet:"
    ]
    lines += [f"  {v['vip']}: {v['why']}" for v in pending]
    if waiting > len(pending):
        lines.append(f"  ... and {waiting - len(pending)} more (`announcer status`)")
    lines.append(f"the {goal} itself stays in effect; only the wait gave up")
    return lines
