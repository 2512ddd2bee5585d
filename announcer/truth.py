"""What may be announced beyond health: locality, the mass-withdrawal guard, damping.

Pure (no I/O, `now` passed in). The core (core.py) decides each VIP's state from its
checks and the route that state announces; the rules here can overrule that route,
and this module keeps their state:

* **locality** (locality.py asks the kernel): a VIP the kernel does not deliver to
  this host is never announced when its check config says `require_local`, whatever
  its checks say; its state goes on, so it is announced as soon as the address appears.
* **the mass-withdrawal guard** (guard.py has the rule): the VIPs that fell (left UP)
  and when, kept as results come in; while the guard holds, the VIPs of the fault stay
  announced, made worse; before it engages, a DOWN VIP may wait up to one interval
  (`pending`).
* **flap damping** (damping.py has the rule): each withdrawal by health adds a penalty;
  a suppressed VIP is not announced until its penalty decays.

The core calls `observe` after each result for the VIPs it touched, `rebuild` after a
discovery, `withdrawn` when health takes a VIP's route away, and `route` for the
final word on each VIP's route; `expire` and `next_wake` drive the timers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import damping as dm
from . import guard as gd
from .health import State
from .model import IPAddress, Route
from .planner import Drain, route_for

if TYPE_CHECKING:
    from .core import VipState


@dataclass(frozen=True)
class Guard:
    """The mass-withdrawal guard while it holds."""

    since: float
    fell: int  # VIPs that fell within the window when it engaged
    total: int


@dataclass(frozen=True)
class Expired:
    """What `expire` ended: VIPs whose damping is over, VIPs a withdrawal damped."""

    reused: list[IPAddress]
    damped: list[tuple[IPAddress, float]]  # (address, held until)
    guard: str = ""  # "released" when the guard's calm period ended


class Truth:
    """The rules above health, and their state, for one core."""

    def __init__(
        self,
        guard: gd.GuardPolicy,
        damping: dm.DampingPolicy,
        *,
        mark: Callable[[IPAddress], None],
        mark_all: Callable[[], None],
    ) -> None:
        self.guard_policy = guard  # the service sets both on reload
        self.damping_policy = damping
        self.mark, self.mark_all = mark, mark_all
        # VIPs whose route in the kernel is not `local` (locality.py); until a VIP is
        # first looked up it counts as local, and the lookup comes before its first plan.
        self.not_local: set[IPAddress] = set()
        # VIPs that left UP and have not been UP since (nor refused), and when (guard.py).
        self.fell: dict[IPAddress, float] = {}
        # The falls in time order, to count those within the window without a scan:
        # an entry counts while `fell` still holds its time.
        self._falls: deque[tuple[float, IPAddress]] = deque()
        self.recent = 0  # VIPs that fell within the window (as of the last prune)
        self.total = 0  # VIPs the core has (set at each discovery)
        # DOWN VIPs whose withdrawal waits up to one interval while enough VIPs fell to
        # make a mass fault possible (guard.py), with the time it ends.
        self.pending: dict[IPAddress, float] = {}
        self.guard: Guard | None = None  # the mass-withdrawal guard, while it holds
        self.guarded_vips: set[IPAddress] = set()  # the VIPs of the fault, while it holds
        self._calm_since: float | None = None  # the guard holds, but need not since then
        self.damps: dict[IPAddress, dm.Damp] = {}  # VIPs with a damping penalty
        # ...of them, those held withdrawn, and when they may be announced again: the
        # timers look only here, not at every VIP that ever flapped.
        self.held: dict[IPAddress, float] = {}

    # ---------------------------------------------------------------- the route

    def route(self, vs: VipState, phase: Drain, r: Route | None) -> Route | None:
        """The route of `vs` after these rules, given the one its state announces."""
        a = vs.vip.address
        if self.not_local and not self.local(vs):
            return None
        if self.held and a in self.held:
            return None
        if r is None and phase is Drain.NONE:
            if self.guard is not None and a in self.guarded_vips:
                up = route_for(a, State.UP, phase, vs.policy)
                return gd.guarded(up, self.guard_policy) if up is not None else None
            if self.pending and a in self.pending:
                return route_for(a, State.UP, phase, vs.policy)  # as it was, for now
        return r

    def local(self, vs: VipState) -> bool:
        """Whether the VIP may be announced as far as locality goes."""
        return not vs.check.require_local or vs.vip.address not in self.not_local

    def guarded(self, vs: VipState, phase: Drain) -> bool:
        """Whether the guard keeps this VIP announced (made worse) instead of withdrawn."""
        return (
            self.guard is not None
            and phase is Drain.NONE
            and vs.vip.address in self.guarded_vips
            and vs.route(phase) is None
        )

    def damped(self, address: IPAddress) -> dm.Damp | None:
        return self.damps[address] if address in self.held else None

    # ------------------------------------------------------------------ locality

    def set_local(
        self, checked: Iterable[IPAddress], not_local: set[IPAddress], known: Collection[IPAddress]
    ) -> list[tuple[IPAddress, bool]]:
        """The kernel's answer for `checked` VIPs; returns those that changed (address,
        local now). A VIP that is not `known` (any more) is ignored."""
        changed = []
        for a in checked:
            if a not in known:
                continue
            now_local = a not in not_local
            if now_local == (a not in self.not_local):
                continue
            if now_local:
                self.not_local.discard(a)
            else:
                self.not_local.add(a)
            changed.append((a, now_local))
            self.mark(a)
        return changed

    # ----------------------------------------------------------------- the guard

    def fall(self, vs: VipState, now: float) -> None:
        """The VIP left UP (for FALLING or DOWN) at `now`."""
        if not self.local(vs):
            return  # it had no route here to lose
        a = vs.vip.address
        self._prune(now)
        self.fell[a] = now
        self._falls.append((now, a))
        self.recent += 1
        if self.guard is not None:
            self.guarded_vips.add(a)  # part of the fault it holds for

    def observe(self, vs: VipState, failing: bool, now: float) -> None:
        """After a result: a VIP that no longer fails (UP again, or refused) is no longer
        fallen; a fallen VIP reaching DOWN may wait for the guard (`pending`)."""
        a = vs.vip.address
        if not failing:
            if a in self.fell:
                self._prune(now)
                if self.fell.pop(a) >= now - self.guard_policy.window:
                    self.recent -= 1  # its entry in _falls no longer counts
            self.pending.pop(a, None)
            if a in self.guarded_vips:
                self.guarded_vips.discard(a)
                self.mark(a)
        elif (
            a in self.fell
            and vs.state is State.DOWN
            and vs.route(Drain.NONE) is None
            and self._may_be_mass(now)
        ):
            self.pending.setdefault(a, now + vs.check.interval)

    def _prune(self, now: float) -> None:
        """Drop the falls older than the window from the count."""
        cut = now - self.guard_policy.window
        falls, fell = self._falls, self.fell
        while falls and falls[0][0] < cut:
            t, a = falls.popleft()
            if fell.get(a) == t:
                self.recent -= 1

    def rebuild(self, vips: dict[IPAddress, VipState], failing: Iterable[IPAddress]) -> None:
        """After a discovery or reload: the state for the VIPs there are now."""
        keep = set(failing)
        self.fell = {a: t for a, t in self.fell.items() if a in keep}
        self._falls = deque(sorted((t, a) for a, t in self.fell.items()))
        self.recent = len(self._falls)  # the next prune drops the old ones
        self.total = len(vips)
        self.guarded_vips &= self.fell.keys()
        self.pending = {a: t for a, t in self.pending.items() if a in self.fell}
        self.not_local &= vips.keys()
        self.damps = {a: d for a, d in self.damps.items() if a in vips}
        self.held = {a: t for a, t in self.held.items() if a in vips}

    def _may_be_mass(self, now: float) -> bool:
        """Enough VIPs fell lately (at least min_vips, and half way to the share that
        engages the guard) that a mass fault may be showing within one interval."""
        p = self.guard_policy
        if self.guard is not None or not p.enabled:
            return False
        self._prune(now)
        return self.recent >= p.min_vips and self.recent > p.max_down_fraction * self.total / 2

    def judge(self, now: float) -> str:
        """Engage or release the guard after a change (or a timer); "engaged",
        "released" or ""."""
        p = self.guard_policy
        if self.guard is None:
            self._prune(now)
            total = self.total
            if not gd.engages(self.recent, total, p):
                return ""
            cut = now - p.window
            self.guarded_vips = {a for a, t in self.fell.items() if t >= cut}
            self.guard = Guard(now, self.recent, total)
            self._calm_since = None
            self.pending.clear()  # guarded instead
            self.mark_all()  # every VIP of the fault is announced again, made worse
            return "engaged"
        if not gd.calm(len(self.guarded_vips), self.total, p):
            self._calm_since = None
            return ""
        if self._calm_since is None:
            self._calm_since = now
        if p.enabled and now - self._calm_since < p.release_after:
            return ""
        self.guard, self._calm_since = None, None
        self.guarded_vips = set()
        self.mark_all()  # the VIPs still DOWN are withdrawn now
        return "released"

    # ------------------------------------------------------------------- damping

    def withdrawn(self, vs: VipState, now: float) -> dm.Damp | None:
        """Health took the VIP's route away: a flap, unless the route stays (guarded,
        waiting for the guard) or was not there (not local). Returns the VIP's damping
        if this suppressed it."""
        if not self.damping_policy.enabled or not self.local(vs):
            return None
        if self.route(vs, Drain.NONE, None) is not None:
            return None
        return self._penalize(vs.vip.address, now)

    def _penalize(self, address: IPAddress, now: float) -> dm.Damp | None:
        before = self.damps.get(address)
        d = self.damps[address] = dm.withdrawn(before, now, self.damping_policy)
        if not d.suppressed:
            return None
        self.held[address] = d.reuse_at(self.damping_policy)
        if before is not None and before.suppressed:
            return None  # held already (for longer now)
        self.mark(address)
        return d

    # -------------------------------------------------------------------- timers

    def expire(self, now: float, vips: dict[IPAddress, VipState]) -> Expired:
        """End the waits and suppressions that are over (their VIPs are planned now)."""
        damped: list[tuple[IPAddress, float]] = []
        for a, until in list(self.pending.items()):
            if until <= now:
                del self.pending[a]
                self.mark(a)
                vs = vips.get(a)  # the wait is over: the withdrawal happens now
                if vs is not None and (d := self.withdrawn(vs, now)) is not None:
                    damped.append((a, d.reuse_at(self.damping_policy)))
        reused = []
        for a, until in list(self.held.items()):
            if until > now:
                continue
            del self.held[a]
            settled = dm.settle(self.damps[a], now, self.damping_policy)
            if settled is None:
                del self.damps[a]
            else:
                self.damps[a] = settled
            reused.append(a)
            self.mark(a)
        return Expired(reused, damped, self.judge(now))

    def next_wake(self) -> float | None:
        """When the next wait or suppression ends (the reconcile sleeps until then)."""
        times = list(self.pending.values())
        if self.guard is not None and self._calm_since is not None:
            times.append(self._calm_since + self.guard_policy.release_after)
        times += self.held.values()
        return min(times) if times else None
