"""What to withdraw and what to announce: pure functions over values.

The planner always starts from the complete desired set (every announced VIP inside
the allow-list) and the *actual* paths in gobgpd, never from a log of what was sent:
gobgpd forgets every API path when it restarts, so only a diff against what it has
now heals that (cilium#24304 is the bug you get otherwise).

Ownership: announcer owns every locally originated host route inside
`allowed_prefixes` in its gobgpd. Paths outside the allow-list (another tool's, or
an operator's `gobgp global rib add`) are never touched, and nothing outside the
allow-list is ever announced, whatever DataPlaneAPI says.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .health import ANNOUNCED, State
from .model import (
    Community,
    HostPrefix,
    IPAddress,
    IPNetwork,
    LargeCommunity,
    Origin,
    Route,
    RouteMap,
    by_version,
    host_prefix,
    is_host_prefix,
)

T = TypeVar("T")

GRACEFUL_SHUTDOWN = Community(65535, 0)  # RFC 8326: receivers set LOCAL_PREF to 0


@dataclass(frozen=True)
class RoutePolicy:
    """The BGP attributes announced for a VIP; `next_hop*` None means "self"."""

    next_hop: IPAddress | None = None
    next_hop_v6: IPAddress | None = None
    origin: Origin = Origin.IGP
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    as_path_prepend: int = 0

    def route(self, address: IPAddress) -> Route:
        """The route announcing `address` with these attributes."""
        return Route(
            prefix=host_prefix(address),
            next_hop=self.next_hop if address.version == 4 else self.next_hop_v6,
            origin=self.origin,
            med=self.med,
            local_pref=self.local_pref,
            communities=self.communities,
            large_communities=self.large_communities,
            as_path_prepend=self.as_path_prepend,
        )


@dataclass(frozen=True)
class Adjust:
    """How a route differs from the healthy one in a state (down, draining, drained).

    `announce` False withdraws the route. Otherwise MED, LOCAL_PREF and the prepend
    replace the healthy values when set, and the communities are added to them.
    """

    announce: bool = True
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    as_path_prepend: int | None = None

    def apply(self, policy: RoutePolicy, *extra: Community) -> RoutePolicy:
        def add(base: tuple[T, ...], more: Iterable[T]) -> tuple[T, ...]:
            return base + tuple(c for c in dict.fromkeys(more) if c not in base)

        return replace(
            policy,
            med=policy.med if self.med is None else self.med,
            local_pref=policy.local_pref if self.local_pref is None else self.local_pref,
            communities=add(policy.communities, (*self.communities, *extra)),
            large_communities=add(policy.large_communities, self.large_communities),
            as_path_prepend=(
                policy.as_path_prepend if self.as_path_prepend is None else self.as_path_prepend
            ),
        )


@dataclass(frozen=True)
class VipPolicy:
    """The attributes of one VIP's route in every state.

    up: healthy (UP, or FALLING: still announced while failures count).
    down: failing its checks (DOWN, or RISING: not yet healthy again); withdrawn unless
      the operator keeps it announced with worse attributes (ExaBGP's down metric).
    draining: drained by the operator, before the drain delay has passed; always
      carries GRACEFUL_SHUTDOWN so the routers move traffic away first.
    drained: after the drain delay; withdrawn unless kept with worse attributes.
    """

    up: RoutePolicy = field(default_factory=lambda: RoutePolicy())
    down: Adjust = Adjust(announce=False)
    draining: Adjust = Adjust()
    drained: Adjust = Adjust(announce=False)


class Drain(enum.Enum):
    NONE = "none"
    DRAINING = "draining"
    DRAINED = "drained"

    def __str__(self) -> str:
        return self.value


def route_for(address: IPAddress, state: State, drain: Drain, policy: VipPolicy) -> Route | None:
    """The route announcing one VIP in a health state and drain phase, or None (withdrawn).

    INIT is never announced: nothing is known yet. A drain only ever
    makes a route worse or removes it; it never announces a VIP that health would not.
    """
    if state in ANNOUNCED:
        current: RoutePolicy | None = policy.up
    elif state in (State.DOWN, State.RISING) and policy.down.announce:
        current = policy.down.apply(policy.up)
    else:
        current = None
    if current is None:
        return None
    if drain is Drain.DRAINING:
        current = policy.draining.apply(current, GRACEFUL_SHUTDOWN)
    elif drain is Drain.DRAINED:
        if not policy.drained.announce:
            return None
        current = policy.drained.apply(current, GRACEFUL_SHUTDOWN)
    return current.route(address)


def allowed(prefix: IPNetwork, allow_list: Sequence[IPNetwork]) -> bool:
    """Whether a prefix lies inside one of the allow-list's networks.

    Asked for every VIP on every reconcile. Integer compares of the network
    addresses, not `subnet_of`: that reads the prefix's `broadcast_address`, a cached
    property that gives each VIP's network a dict and another address object (about
    650 bytes a VIP, kept for the life of the prefix: issue 16), and it is slow
    enough that it had to be memoised.
    """
    version, length = prefix.version, prefix.prefixlen
    bits = int(prefix.network_address)
    for net in allow_list:
        if net.version == version and net.prefixlen <= length:
            shift = net.max_prefixlen - net.prefixlen
            if bits >> shift == int(net.network_address) >> shift:
                return True
    return False


@dataclass(frozen=True)
class Plan:
    """Changes to make in gobgpd: withdraws first, then announces."""

    withdraw: tuple[HostPrefix, ...] = ()
    announce: tuple[Route, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.withdraw or self.announce)

    def __len__(self) -> int:
        return len(self.withdraw) + len(self.announce)


def owned(actual: RouteMap, allow_list: Sequence[IPNetwork]) -> dict[HostPrefix, Route]:
    """The part of gobgpd's local routes that announcer owns (host routes in the allow-list)."""
    return {p: r for p, r in actual.items() if is_host_prefix(p) and allowed(p, allow_list)}


def make_plan(desired: RouteMap, actual: RouteMap, allow_list: Sequence[IPNetwork]) -> Plan:
    """The changes that turn `actual` into `desired`, touching only what we own.

    A route whose attributes differ is re-announced (gobgpd replaces it in place, an
    implicit withdraw). Applying the plan and planning again gives an empty plan.
    """
    for p in desired:
        if not (is_host_prefix(p) and allowed(p, allow_list)):
            # The core filters already (vips.py, core.py); this guards a bug, never policy.
            raise ValueError(f"desired route {p} is outside the allow-list")
    mine = owned(actual, allow_list)
    withdraw = sorted((p for p in mine if p not in desired), key=by_version)
    announce = sorted(
        (r for p, r in desired.items() if mine.get(p) != r), key=lambda r: by_version(r.prefix)
    )
    return Plan(tuple(withdraw), tuple(announce))


def advance(actual: dict[HostPrefix, Route], plan: Plan) -> None:
    """Turn `actual` into what gobgpd holds once `plan` is applied in full.

    In place: O(size of the plan), not of the table (a failover at 10 000).
    """
    for p in plan.withdraw:
        actual.pop(p, None)
    for r in plan.announce:
        actual[r.prefix] = r
