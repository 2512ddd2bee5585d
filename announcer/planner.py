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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def allowed(prefix: IPNetwork, allow_list: Sequence[IPNetwork]) -> bool:
    """Whether a prefix lies inside one of the allow-list's networks."""
    return any(prefix.version == net.version and prefix.subnet_of(net) for net in allow_list)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Desired:
    """The desired routes, and the VIPs refused because they are outside the allow-list."""

    routes: dict[HostPrefix, Route]
    refused: tuple[IPAddress, ...]


def desired_routes(
    announce: Iterable[tuple[IPAddress, RoutePolicy]], allow_list: Sequence[IPNetwork]
) -> Desired:
    """Build the desired set from the VIPs to announce (each with its policy)."""
    routes: dict[HostPrefix, Route] = {}
    refused: list[IPAddress] = []
    for address, policy in announce:
        prefix = host_prefix(address)
        if not allowed(prefix, allow_list):
            refused.append(address)
            continue
        routes[prefix] = policy.route(address)
    return Desired(routes, tuple(sorted(refused, key=by_version)))


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
            # desired_routes() filters already; this guards a bug, never policy.
            raise ValueError(f"desired route {p} is outside the allow-list")
    mine = owned(actual, allow_list)
    withdraw = sorted((p for p in mine if p not in desired), key=by_version)
    announce = sorted(
        (r for p, r in desired.items() if mine.get(p) != r), key=lambda r: by_version(r.prefix)
    )
    return Plan(tuple(withdraw), tuple(announce))


def after(actual: RouteMap, plan: Plan) -> dict[HostPrefix, Route]:
    """What gobgpd holds once `plan` has been applied to `actual` in full."""
    gone = set(plan.withdraw)
    result = {p: r for p, r in actual.items() if p not in gone}
    for r in plan.announce:
        result[r.prefix] = r
    return result
