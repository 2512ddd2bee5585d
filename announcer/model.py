"""Core value types shared by the pure core and the adapters.

Everything here is an immutable value. Nothing in this module does I/O, and the
adapters (DataPlaneAPI, gobgpd, probes) are described by the Protocols at the end
so that the core never imports requests, grpc or socket.
"""

from __future__ import annotations

import enum
import ipaddress
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

from .errors import InvalidRoute
from .health import State

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host prefix: always a /32 (IPv4) or a /128 (IPv6).
HostPrefix = IPNetwork

UINT32_MAX = 2**32 - 1
MAX_PREPEND = 10


_HOST_PREFIXES: dict[IPAddress, HostPrefix] = {}
_HOST_PREFIXES_LIMIT = 1 << 17  # then it starts again: VIPs that came and went


def host_prefix(address: IPAddress) -> HostPrefix:
    """The /32 or /128 of one address.

    Memoised: the planner asks for every VIP on every reconcile, and building an
    ip_network dominated failover at 10 000 VIPs; and every holder of a VIP's prefix
    (planner, routes read back from gobgpd) shares one object. A dict rather than an
    LRU cache: the LRU's links and key tuples cost about 110 bytes a VIP (issue 16).
    """
    prefix = _HOST_PREFIXES.get(address)
    if prefix is None:
        if len(_HOST_PREFIXES) >= _HOST_PREFIXES_LIMIT:
            _HOST_PREFIXES.clear()
        prefix = _HOST_PREFIXES[address] = ipaddress.ip_network(address)  # a /32 or /128
    return prefix


def by_version(x: IPAddress | IPNetwork) -> tuple[int, int, int]:
    """Sort key: IPv4 before IPv6 (the two do not compare with each other), then by value.

    The order of ipaddress's own comparisons (a network by its address, then its
    length), as integers: tuples of ints compare in C, where the objects' `__lt__` is
    Python code. 10 000 shuffled addresses sort in 5 ms instead of 26, prefixes (the
    planner's lists, in the order VIPs went UP) in 8 ms instead of 69.
    """
    if isinstance(x, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return (x.version, int(x), 0)
    return (x.version, int(x.network_address), x.prefixlen)


def is_host_prefix(prefix: IPNetwork) -> bool:
    """True for a /32 or a /128."""
    return prefix.prefixlen == prefix.max_prefixlen


# --------------------------------------------------------------------------- BGP


class Origin(enum.IntEnum):
    """The BGP ORIGIN attribute (mandatory for gobgpd)."""

    IGP = 0
    EGP = 1
    INCOMPLETE = 2


@dataclass(frozen=True, order=True, slots=True)
class Community:
    """A standard RFC 1997 community, written `high:low`."""

    high: int
    low: int

    def __post_init__(self) -> None:
        if not (0 <= self.high <= 0xFFFF and 0 <= self.low <= 0xFFFF):
            raise ValueError(f"community {self.high}:{self.low} out of range (0-65535:0-65535)")

    @property
    def value(self) -> int:
        """The 32-bit wire value."""
        return (self.high << 16) | self.low

    @classmethod
    def from_value(cls, value: int) -> Community:
        return cls(value >> 16, value & 0xFFFF)

    @classmethod
    def parse(cls, text: str) -> Community:
        """Parse `65535:0`; raises ValueError naming the problem."""
        parts = text.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{text!r} is not a community (expected ASN:VALUE)")
        return cls(int(parts[0]), int(parts[1]))

    def __str__(self) -> str:
        return f"{self.high}:{self.low}"


GRACEFUL_SHUTDOWN = Community(65535, 0)  # RFC 8326


@dataclass(frozen=True, order=True, slots=True)
class LargeCommunity:
    """An RFC 8092 large community, written `global:local1:local2`."""

    global_admin: int
    local_data1: int
    local_data2: int

    def __post_init__(self) -> None:
        for v in (self.global_admin, self.local_data1, self.local_data2):
            if not 0 <= v <= UINT32_MAX:
                raise ValueError(f"large community {self} has a part out of range (0-4294967295)")

    @classmethod
    def parse(cls, text: str) -> LargeCommunity:
        parts = text.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{text!r} is not a large community (expected GLOBAL:LOCAL1:LOCAL2)")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))

    def __str__(self) -> str:
        return f"{self.global_admin}:{self.local_data1}:{self.local_data2}"


@dataclass(frozen=True, slots=True)
class Route:
    """One host route as announcer wants it in gobgpd's global RIB.

    `next_hop=None` means "self": gobgpd puts the session's local address there.
    `as_path_prepend` is how many extra copies of gobgpd's own AS to put in front;
    the adapter knows the local AS, the core does not need to.
    Collections are kept sorted and unique so that two equal routes compare equal
    whatever order an API returned them in.
    """

    prefix: HostPrefix
    next_hop: IPAddress | None = None
    origin: Origin = Origin.IGP
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    as_path_prepend: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "communities", tuple(sorted(set(self.communities))))
        object.__setattr__(self, "large_communities", tuple(sorted(set(self.large_communities))))

    @property
    def family(self) -> Literal[4, 6]:
        return 4 if self.prefix.version == 4 else 6


def validate_route(route: Route) -> None:
    """Raise InvalidRoute unless the route is safe to hand to gobgpd.

    gobgpd 3.10 accepts some malformed paths and crashes on others, so every path is
    checked here, at the last point before it leaves the process.
    """
    p = route.prefix
    if not is_host_prefix(p):
        raise InvalidRoute(f"{p}: only /32 and /128 host routes are announced")
    if route.next_hop is not None:
        nh = route.next_hop
        if nh.version != p.version:
            raise InvalidRoute(f"{p}: next hop {nh} is not IPv{p.version}")
        if nh.is_unspecified or nh.is_multicast or nh.is_loopback:
            raise InvalidRoute(f"{p}: next hop {nh} is not a usable unicast address")
    elif p.version == 6:
        # "self" over an IPv4 session puts an IPv4 address in MP_REACH (gobgp notes 2.3.9).
        raise InvalidRoute(f"{p}: an IPv6 route needs an explicit IPv6 next hop")
    if route.med is not None and not 0 <= route.med <= UINT32_MAX:
        raise InvalidRoute(f"{p}: MED {route.med} out of range")
    if route.local_pref is not None and not 0 <= route.local_pref <= UINT32_MAX:
        raise InvalidRoute(f"{p}: local-pref {route.local_pref} out of range")
    if not 0 <= route.as_path_prepend <= MAX_PREPEND:
        raise InvalidRoute(f"{p}: AS-path prepend {route.as_path_prepend} not in 0..{MAX_PREPEND}")
    if not isinstance(route.origin, Origin):
        raise InvalidRoute(f"{p}: origin {route.origin!r} is not IGP/EGP/INCOMPLETE")


class SessionState(enum.Enum):
    UNKNOWN = "unknown"
    IDLE = "idle"
    CONNECT = "connect"
    ACTIVE = "active"
    OPENSENT = "opensent"
    OPENCONFIRM = "openconfirm"
    ESTABLISHED = "established"


@dataclass(frozen=True)
class PeerStatus:
    """One BGP neighbor of gobgpd, as shown by `announcer status`."""

    address: str
    peer_asn: int
    state: SessionState
    admin_down: bool
    uptime_s: float | None = None
    # Graceful restart gobgpd advertises to this router (0: none): if gobgpd dies,
    # the router keeps this LB's routes stale for up to this many seconds.
    graceful_restart_s: int = 0
    bfd: str | None = None  # gobgpd 4.x with BFD on: the BFD session's state ("up", ...)


# ------------------------------------------------------------- DataPlaneAPI view


@dataclass(frozen=True, slots=True)
class RawBind:
    """A bind as DataPlaneAPI reports it: `address` is the raw string (see discovery.py)."""

    name: str
    address: str
    port: int | None = None
    port_range_end: int | None = None
    ssl: bool = False
    accept_proxy: bool = False
    v4v6: bool = False


@dataclass(frozen=True, slots=True)
class Frontend:
    """A HAProxy frontend section as DataPlaneAPI reports it."""

    name: str
    mode: Literal["http", "tcp"] | None = None  # None: unknown (not in the section nor in defaults)
    disabled: bool = False
    monitor_uri: str | None = None
    binds: tuple[RawBind, ...] = ()


@dataclass(frozen=True, slots=True)
class Listener:
    """One literal-IP listener of a frontend: something a health check can target."""

    frontend: str
    bind: str
    port: int | None
    ssl: bool = False
    accept_proxy: bool = False
    mode: Literal["http", "tcp"] | None = None
    monitor_uri: str | None = None


@dataclass(frozen=True, slots=True)
class Vip:
    """A service IP and every listener bound to it (several frontends or ports share one prefix)."""

    address: IPAddress
    listeners: tuple[Listener, ...]

    @property
    def prefix(self) -> HostPrefix:
        return host_prefix(self.address)

    @property
    def frontends(self) -> tuple[str, ...]:
        return tuple(sorted({lst.frontend for lst in self.listeners}))


@dataclass(frozen=True)
class Discovery:
    """What one successful DataPlaneAPI read produced."""

    version: int | None  # configuration version; None if the API did not say
    frontends: tuple[Frontend, ...]


# --------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One health check to run against one listener of a VIP.

    http: GET `path` on address:port (TLS if `tls`), healthy if the status is in
    `expect_status`. tcp: healthy if a connection opens. command: run `command` with
    every `%s` replaced by the VIP address; healthy on exit status 0; argv split with
    shlex and no shell unless `shell` is true.
    """

    kind: Literal["http", "tcp", "command"]
    address: IPAddress
    port: int | None = None
    timeout: float = 1.0
    path: str = "/"
    host: str | None = None  # Host header; the VIP address when None
    expect_status: tuple[int, ...] = (200,)
    tls: bool = False
    tls_verify: bool = False
    command: str | None = None
    shell: bool = False
    # A check is looked up by its spec several times per probe (the schedule, the
    # probes in flight, the idle connections, the core's checks): hashing the fields
    # every time (an IPv6 address hashes through its hex string) was 6 % of the CPU
    # at 10 000 checks a second (issue 16). Worked out once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(_check_key(self)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def target(self) -> str:
        """A short label: `http://192.0.2.10:80/healthz`, `tcp 192.0.2.10:443`, `command ...`."""
        a = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        if self.kind == "http":
            return f"{'https' if self.tls else 'http'}://{a}:{self.port}{self.path}"
        if self.kind == "tcp":
            return f"tcp {a}:{self.port}"
        return f"command {self.command}"


# What makes two CheckSpecs equal, and so their hash.
_CHECK_KEY = tuple(f.name for f in fields(CheckSpec) if f.compare)
_check_key = operator.attrgetter(*_CHECK_KEY)  # the tuple of those fields, in C

# The detail of a probe whose connect was refused (probe_failures.describe).
REFUSED = "connect refused"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one probe; `detail` says why it failed (or the HTTP status).

    `local` names a failure that was this process's, not the VIP's (`emfile`,
    `enobufs`, `loop_stall`, ...): the service does not count it against the VIP.
    """

    ok: bool
    detail: str
    duration: float  # seconds
    local: str | None = None

    @property
    def refused(self) -> bool:
        """Nothing listens on the VIP's port (HAProxy gone, the bind removed)."""
        return not self.ok and self.detail == REFUSED


# ------------------------------------------------------------------- adapters


class RouteTable(Protocol):
    """The GoBGP adapter as the core sees it."""

    def local_routes(self) -> dict[HostPrefix, Route]:
        """Host routes originated locally (not learned from a peer) in gobgpd's global RIB."""
        ...

    def apply(self, withdraw: Sequence[HostPrefix], announce: Sequence[Route]) -> None:
        """Withdraw, then announce; raises GobgpError (with `.done`) on partial failure."""
        ...

    def peers(self) -> list[PeerStatus]:
        """gobgpd's neighbors and their session states."""
        ...


class VipSource(Protocol):
    """The DataPlaneAPI adapter as the core sees it."""

    async def configuration_version(self) -> int:
        """The cheap configuration version number; raises DataPlaneError (within its deadline)."""
        ...

    async def discover(self) -> Discovery:
        """Every frontend with its binds; raises DataPlaneError on any failure or garbage,
        within a bounded time."""
        ...


class Probe(Protocol):
    """The probe adapter as the core sees it."""

    async def run(self, spec: CheckSpec) -> CheckResult:
        """One check; never raises except CancelledError."""
        ...


RouteMap = Mapping[HostPrefix, Route]


class KeeperHandle(Protocol):
    """The fate-sharing keeper process (keeper.py) as the service sees it."""

    def alive(self) -> bool: ...

    def respawn(self) -> None: ...

    def own(self, allow: Sequence[IPNetwork]) -> None:
        """The routes announcer owns grew (a reload): the keeper must withdraw them too."""
        ...

    def release(self) -> None:
        """A clean stop: the keeper exits without touching gobgpd."""
        ...


class Notifier(Protocol):
    """systemd's notify socket (sdnotify.py)."""

    @property
    def watchdog_interval(self) -> float | None: ...

    def ready(self, status: str = "") -> object: ...

    def status(self, text: str) -> object: ...

    def watchdog(self) -> object: ...

    def stopping(self) -> object: ...


class MetricsSink(Protocol):
    """The counters and histograms (metrics.py); gauges come from status.Snapshot."""

    def check_done(self, kind: str, ok: bool, duration: float) -> None: ...

    def transition(self, old: State, new: State) -> None: ...

    def applied(self, withdrawn: int, announced: int) -> None: ...

    def resync(self) -> None: ...

    def gobgp_error(self) -> None: ...

    def dataplane_error(self, kind: str) -> None: ...

    def check_local_failure(self, reason: str) -> None: ...

    def guard_engaged(self) -> None: ...
