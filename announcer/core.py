"""The pure core: each VIP's state, its checks' health, the start-up rule, what to plan.

No I/O, no asyncio; `now` (the service's monotonic clock) is passed in, so every rule
here is tested without sleeping. The service feeds the core VIP specs (discovery,
reload) and probe results, asks it for the desired routes and the plan against what
gobgpd holds, and turns what the core answers (transitions, new and retired checks,
hold events) into log lines, metrics and probes.

Rules kept here:

* A VIP's state is the combination of its checks' states (health.combine); a change
  that changes its route marks it for the next plan (`touched`); anything else that
  can change many routes (a discovery, a reload, a drain, gobgpd) plans everything.
* A check of a VIP that already had a state starts from that state (health.seeded),
  so a reload or a changed bind flaps nothing; first checks are splayed over one
  interval so thousands of VIPs found at once do not connect in the same millisecond.
* The start-up rule: a VIP is *settled* once it reached a first verdict (UP or DOWN)
  in this process. The start is done when every VIP is settled, or `startup_grace`
  after the start. Until then, when the routers already see gobgpd's routes, the
  route of an unsettled VIP is kept as gobgpd has it (`keep`).
* A discovery that loses most VIPs at once is held until confirmed (shrink.py): the
  VIPs it lacks keep their state and checks.
* What health would announce, truth.py may overrule: a VIP that is not local is not
  announced, a mass fault keeps failing VIPs announced (made worse), a flapping VIP is
  held withdrawn. The core feeds it (results, withdrawals, discoveries).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from . import damping as dm
from . import guard as gd
from . import health as hm
from . import shrink
from .config import CheckConfig
from .health import Health, HealthParams, State, Transition
from .model import (
    CheckResult,
    CheckSpec,
    HostPrefix,
    IPAddress,
    IPNetwork,
    Route,
    Vip,
)
from .planner import Drain, Plan, VipPolicy, allowed, make_plan, route_for
from .truth import Expired, Truth
from .vips import VipSpec

UNDECIDED = frozenset({State.INIT, State.RISING})
FAILING = frozenset({State.FALLING, State.DOWN, State.RISING})  # once settled (guard.py)
FELL = frozenset({State.FALLING, State.DOWN})  # left UP for these: a fall (guard.py)

PhaseOf = Callable[[IPAddress, float], Drain]  # a VIP's drain phase at a time (drains.py)


@dataclass(slots=True)
class CheckState:
    """One running check: its health and the VIPs that use it."""

    spec: CheckSpec
    health: Health
    params: HealthParams
    vips: tuple[IPAddress, ...] = ()  # a tuple, not a set: 10 000 of them (issue 16)
    last: CheckResult | None = None
    last_at: float | None = None  # when `last` came (monotonic)


@dataclass(slots=True)
class VipState:
    """One VIP: its spec and where its checks have taken it."""

    spec: VipSpec
    state: State = State.INIT
    since: float = 0.0  # monotonic
    why: str = ""
    # route_for() memoised per (state, drain phase): at 10 000 VIPs rebuilding every
    # route on every change blocked the loop for half a second (docs/performance.md).
    # The policy never changes under it: a new spec makes a new VipState.
    cached: tuple[State, Drain, Route | None] | None = None
    # A first verdict (UP or DOWN) reached in this process, or carried over from the
    # VIP's previous settings; until then a start may keep what a previous run announced.
    settled: bool = False

    @property
    def vip(self) -> Vip:
        return self.spec.vip

    @property
    def specs(self) -> tuple[CheckSpec, ...]:
        return self.spec.checks

    @property
    def check(self) -> CheckConfig:
        return self.spec.check

    @property
    def policy(self) -> VipPolicy:
        return self.spec.policy

    def route(self, phase: Drain) -> Route | None:
        c = self.cached
        if c is not None and c[0] is self.state and c[1] is phase:
            return c[2]
        r = route_for(self.vip.address, self.state, phase, self.policy)
        self.cached = (self.state, phase, r)
        return r


@dataclass(frozen=True)
class Change:
    """A VIP changed state."""

    address: IPAddress
    old: State
    new: State
    why: str
    first: bool  # its first verdict in this process
    was_settled: bool  # it had a verdict before this change
    damped_until: float | None = None  # this withdrawal started damping (truth.py)


@dataclass(frozen=True)
class Applied:
    """What taking a set of VIP specs did."""

    added: tuple[IPAddress, ...]
    removed: tuple[IPAddress, ...]
    new_checks: tuple[CheckState, ...]  # to schedule
    retired: tuple[CheckSpec, ...]  # to stop
    changes: tuple[Change, ...]
    hold: shrink.Verdict[IPAddress] | None  # the VIP-loss hold's verdict, if guarded
    guard: str = ""  # "engaged" or "released" when the mass-withdrawal guard changed


@dataclass(frozen=True)
class Recorded:
    """What one probe result did: the check's own transition and the VIPs'."""

    check: Transition | None
    changes: tuple[Change, ...]
    guard: str = ""  # "engaged" or "released" when the guard changed


class Core:
    """Every VIP and check of one announcer; see the module docstring for the rules."""

    def __init__(
        self,
        started: float,
        startup_grace: float,
        rng: random.Random,
        guard: gd.GuardPolicy | None = None,
        damping: dm.DampingPolicy | None = None,
    ) -> None:
        self.started = started
        self.startup_grace = startup_grace
        self.rng = rng
        self.vips: dict[IPAddress, VipState] = {}
        self.checks: dict[CheckSpec, CheckState] = {}
        # VIPs whose route may have changed since the last plan; None: plan everything.
        # At 10 000 VIPs a full plan blocks the loop for about 50 ms, a failover's
        # plan of one VIP for microseconds (docs/performance.md).
        self.touched: set[IPAddress] | None = None
        self.hold: shrink.Hold[IPAddress] | None = None  # a big VIP loss not yet confirmed
        # Locality, the mass-withdrawal guard and damping (truth.py).
        self.truth = Truth(
            guard or gd.GuardPolicy(),
            damping or dm.DampingPolicy(),
            mark=self.mark,
            mark_all=self.mark_all,
        )

    # ---------------------------------------------------------------- VIP specs

    def apply(
        self,
        specs: dict[IPAddress, VipSpec],
        now: float,
        phase: PhaseOf,
        *,
        vip_loss: shrink.ShrinkPolicy | None,
    ) -> Applied:
        """Take the VIPs of a discovery (`vip_loss`: the hold applies) or a reload (None)."""
        wanted: dict[IPAddress, VipState] = {}
        for address, spec in specs.items():
            vs = VipState(spec, since=now)
            old = self.vips.get(address)
            if old is not None:
                vs.state, vs.since, vs.why, vs.settled = old.state, old.since, old.why, old.settled
            wanted[address] = vs
        verdict = None
        if vip_loss is not None:
            known = frozenset(self.vips)
            verdict = shrink.decide(known, frozenset(wanted), self.hold, now, vip_loss)
            for a in verdict.keep - wanted.keys():
                wanted[a] = self.vips[a]  # as it was: same checks, same state
            self.hold = verdict.hold
        elif self.hold is not None:  # a reload during a hold keeps holding
            for a in self.hold.lost - wanted.keys():
                if a in self.vips:
                    wanted[a] = self.vips[a]
        added = tuple(wanted.keys() - self.vips.keys())
        removed = tuple(self.vips.keys() - wanted.keys())
        previous, self.vips = self.vips, wanted
        new_checks, retired = self._sync_checks(previous, now)
        changes = tuple(c for vs in wanted.values() if (c := self._fold(vs, "", now, phase)))
        self.truth.rebuild(wanted, (a for a, vs in wanted.items() if self._is_failing(vs)))
        event = self.truth.judge(now)
        self.mark_all()  # policies may have changed too
        return Applied(added, removed, new_checks, retired, changes, verdict, event)

    def first_answer(
        self,
        known: frozenset[IPAddress],
        found: frozenset[IPAddress],
        now: float,
        policy: shrink.ShrinkPolicy,
    ) -> shrink.Verdict[IPAddress]:
        """Judge a first discovery against the VIPs gobgpd announces (`known`)."""
        verdict = shrink.decide(known, found, self.hold, now, policy)
        self.hold = verdict.hold
        return verdict

    def _sync_checks(
        self, previous: dict[IPAddress, VipState], now: float
    ) -> tuple[tuple[CheckState, ...], tuple[CheckSpec, ...]]:
        """Checks for new specs, and the specs nobody uses any more."""
        users: dict[CheckSpec, tuple[list[IPAddress], HealthParams]] = {}
        for address, vs in self.vips.items():
            for spec in vs.specs:
                addresses = users.setdefault(spec, ([], vs.check))[0]
                if not addresses or addresses[-1] != address:  # a spec listed twice
                    addresses.append(address)
        retired = tuple(spec for spec in self.checks if spec not in users)
        for spec in retired:
            del self.checks[spec]
        new: list[CheckState] = []
        for spec, (addresses, params) in users.items():
            c = self.checks.get(spec)
            if c is None:
                first = now + self.rng.uniform(0, min(params.interval, 1.0))
                before = previous.get(spec.address)
                h = hm.seeded(before.state, now, first) if before else hm.initial(now, first)
                c = CheckState(spec, h, params)
                self.checks[spec] = c
                new.append(c)
            c.vips = tuple(addresses)
            c.params = params  # rise/fall/interval edits apply from the next result on
        return tuple(new), retired

    # ------------------------------------------------------------ probe results

    def record(
        self, spec: CheckSpec, result: CheckResult, now: float, phase: PhaseOf
    ) -> Recorded | None:
        """Fold one probe result in; None if the check is gone."""
        c = self.checks.get(spec)
        if c is None:
            return None
        c.last, c.last_at = result, now
        if result.local is not None:
            # Our failure, not the VIP's (out of descriptors, a stalled loop: probes.py
            # logs them): the state stays and the check runs again soon. Counted, such
            # failures withdrew 1 708 of 2 000 healthy VIPs in 30 s (issue 11).
            c.health = replace(c.health, next_check=now + c.params.fast_interval)
            return Recorded(None, ())
        c.health, t = hm.observe(c.health, result.ok, now, c.params, result.detail)
        if t is None and result.ok:
            return Recorded(None, ())
        why = f"{spec.target} {t.reason}" if t is not None else ""
        changes = []
        for address in c.vips:
            vs = self.vips.get(address)
            if vs is None:
                continue
            if t is not None and (change := self._fold(vs, why, now, phase)) is not None:
                changes.append(change)
                if change.old is State.UP and change.new in FELL:
                    self.truth.fall(vs, now)
            self.truth.observe(vs, self._is_failing(vs), now)
        guard = self.truth.judge(now)
        # Damping counts the withdrawals that happen: not a route the guard keeps or
        # that waits for it, nor one a non-local VIP did not have (truth.py).
        for i, ch in enumerate(changes):
            if hm.announced(ch.old) and not hm.announced(ch.new):
                d = self.truth.withdrawn(self.vips[ch.address], now)
                if d is not None:
                    changes[i] = replace(ch, damped_until=d.reuse_at(self.truth.damping_policy))
        return Recorded(t, tuple(changes), guard)

    def _fold(self, vs: VipState, why: str, now: float, phase: PhaseOf) -> Change | None:
        """A VIP's state from its checks'; marks it when its route changes."""
        states = [self.checks[s].health.state for s in vs.specs if s in self.checks]
        new = hm.combine(states, vs.check.combine)
        if new is vs.state:
            return None
        old, was_settled = vs.state, vs.settled
        vs.state, vs.since, vs.why = new, now, why
        a = vs.vip.address
        first = not was_settled and new not in UNDECIDED
        if first:
            vs.settled = True
            self.mark(a)  # the start may be complete now
        p = phase(a, now)
        if route_for(a, old, p, vs.policy) != route_for(a, new, p, vs.policy):
            self.mark(a)
        return Change(a, old, new, why, first, was_settled)

    # ----------------------------------------------------------- truth.py's inputs

    def set_local(
        self, checked: Iterable[IPAddress], not_local: set[IPAddress]
    ) -> list[tuple[IPAddress, bool]]:
        """The kernel's answer for `checked` VIPs (locality.py); returns those that
        changed (address, local now)."""
        return self.truth.set_local(checked, not_local, self.vips)

    # ---------------------------------------------------------------- the guard

    def _is_failing(self, vs: VipState) -> bool:
        """Settled, its checks failing, and no check refused (guard.py)."""
        if not vs.settled or vs.state not in FAILING:
            return False
        for s in vs.specs:
            c = self.checks.get(s)
            if c is not None and c.last is not None and c.last.refused:
                return False
        return True

    def expire(self, now: float) -> Expired:
        """End the waits and suppressions that are over (truth.py)."""
        return self.truth.expire(now, self.vips)

    def next_wake(self) -> float | None:
        return self.truth.next_wake()

    # ------------------------------------------------------------------ start-up

    def grace_left(self, now: float) -> float:
        return self.started + self.startup_grace - now

    def started_up(self, now: float) -> bool:
        """Every VIP has a first verdict, or startup_grace is over."""
        return self.grace_left(now) <= 0 or all(vs.settled for vs in self.vips.values())

    def verdicts(self) -> tuple[int, int, int]:
        """VIPs announced, VIPs not announced, and VIPs without a first verdict yet."""
        up = down = undecided = 0
        for vs in self.vips.values():
            if not vs.settled:
                undecided += 1
            elif hm.announced(vs.state):
                up += 1
            else:
                down += 1
        return up, down, undecided

    # ---------------------------------------------------------------- planning

    def mark(self, address: IPAddress) -> None:
        """The route of one VIP may have changed: plan it."""
        if self.touched is not None:
            self.touched.add(address)

    def mark_all(self) -> None:
        """Anything else changed (VIP set, policies, drains, gobgpd): plan everything."""
        self.touched = None

    def want(
        self,
        vs: VipState,
        phase: Drain,
        keep: dict[HostPrefix, Route] | None,
        allow: tuple[IPNetwork, ...],
    ) -> Route | None:
        """The route one VIP should have in gobgpd, None if none (or outside the allow-list).

        `keep` (during a start, when the routers see gobgpd): the routes gobgpd has,
        kept for the VIPs without a first verdict.
        """
        if keep is not None and not vs.settled and phase is Drain.NONE:
            r = keep.get(vs.vip.prefix)
            if self.truth.not_local and not self.truth.local(vs):
                r = None
        else:
            r = self.truth.route(vs, phase, vs.route(phase))
        return r if r is not None and allowed(r.prefix, allow) else None

    def desired(
        self,
        now: float,
        phase: PhaseOf,
        allow: tuple[IPNetwork, ...],
        keep: dict[HostPrefix, Route] | None = None,
    ) -> dict[HostPrefix, Route]:
        """The complete set of routes wanted in gobgpd now."""
        routes: dict[HostPrefix, Route] = {}
        for vs in self.vips.values():
            if (r := self.want(vs, phase(vs.vip.address, now), keep, allow)) is not None:
                routes[r.prefix] = r
        return routes

    def plan(
        self,
        actual: dict[HostPrefix, Route],
        now: float,
        phase: PhaseOf,
        allow: tuple[IPNetwork, ...],
        owned: tuple[IPNetwork, ...],
        keep: dict[HostPrefix, Route] | None = None,
    ) -> Plan:
        """The plan against gobgpd's `actual` routes: every route, or only the VIPs
        touched since the last plan. Call `mark_all()` if the plan is not applied."""
        touched, self.touched = self.touched, set()
        if touched is None:
            return make_plan(self.desired(now, phase, allow, keep), actual, owned)
        want: dict[HostPrefix, Route] = {}
        have: dict[HostPrefix, Route] = {}
        for a in touched:
            vs = self.vips.get(a)
            if vs is None:
                continue  # gone: the discovery planned everything
            p = vs.vip.prefix
            if (r0 := actual.get(p)) is not None:
                have[p] = r0
            if (r := self.want(vs, phase(a, now), keep, allow)) is not None:
                want[r.prefix] = r
        return make_plan(want, have, owned)


def addresses_of(
    routes: Iterable[HostPrefix], owned: tuple[IPNetwork, ...]
) -> frozenset[IPAddress]:
    """The VIP addresses of gobgpd's routes inside `owned` (the first-answer hold)."""
    return frozenset(p.network_address for p in routes if allowed(p, owned))
