"""The one configuration: frozen typed objects, every default in one place.

Cheap to build and to compare (the uvicorn shape): the work that can fail, reading
and validating YAML, is configfile.py's (`load_config`, `parse_config`, which name
every problem by its key path). What a reload (SIGHUP) takes at once and what waits
for a restart is `reloaded()` here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .damping import DampingPolicy
from .guard import GuardPolicy
from .health import HealthParams
from .model import IPAddress, IPNetwork
from .planner import VipPolicy
from .shrink import ShrinkPolicy

# ----------------------------------------------------------------- the objects


@dataclass(frozen=True)
class DataPlaneConfig:
    url: str = "http://127.0.0.1:5555"
    api_version: Literal["auto", 2, 3] = "auto"
    username: str = "admin"
    password_file: Path | None = None
    password_env: str | None = None
    # The total deadline of one request (connect, server proof, headers and body), not a
    # per-read timeout: a server dripping one byte a second cannot stretch it.
    timeout: float = 5.0
    tls_verify: bool = True  # false is refused: the certificate is an https server's proof
    ca_file: Path | None = None
    discovery_timeout: float = 30.0  # the deadline of one whole discovery (all its requests)
    max_response_bytes: int = 32 * 1024 * 1024  # read for one answer, headers included
    max_frontends: int = 20_000  # v2 makes one request per frontend
    max_binds: int = 100_000
    # Who may own the DataPlaneAPI socket (http:// loopback and unix://): names or uids.
    # The password is sent only after the server end proves to be one of them.
    server_users: tuple[str | int, ...] = ("root", "haproxy")
    poll_interval: float = 2.0  # how often the cheap configuration version is read
    full_refresh_interval: float = 60.0  # full re-read even if the version did not move
    include_frontends: tuple[str, ...] = ("*",)
    exclude_frontends: tuple[str, ...] = ()
    # A discovery losing more than max_fraction of the VIPs at once is held until
    # confirmed (shrink.py): one empty or truncated answer must not withdraw them.
    vip_loss: ShrinkPolicy = field(default_factory=ShrinkPolicy)


@dataclass(frozen=True)
class GobgpConfig:
    # host:port or unix:///path. The default is the socket of the shipped gobgpd drop-in,
    # reachable only by root and the announcer-gobgp group: gobgpd's API has no
    # authentication, and on TCP any local user could steer the routers through it.
    address: str = "unix:///run/gobgpd/api.sock"
    timeout: float = 5.0
    batch_size: int = 500
    resync_interval: float = 30.0  # full read-back of gobgpd's paths
    api_version: Literal["auto", 3, 4] = "auto"  # GoBGP gRPC API; auto: detected at connect
    # Fate-sharing: enable gobgpd's peers (configured admin-down) only after the full
    # set is injected, and have the keeper disable them if announcer dies.
    fate_sharing: bool = True
    peers: tuple[str, ...] = ()  # the neighbors fate-sharing manages; empty: all
    # A managed peer found admin-down that announcer had enabled: someone (an operator
    # with `gobgp neighbor X disable`) took this LB off that router. false: leave it
    # so and raise the alarm (ERROR, status, metrics); true: enable it again.
    reenable_peers: bool = False


@dataclass(frozen=True)
class CheckConfig(HealthParams):
    """How each listener of a VIP is checked, and how its checks combine.

    The hysteresis (rise, fall, interval, fast_interval) is HealthParams' own fields and
    defaults, inherited rather than repeated: a CheckConfig is what the health state
    machine takes. The YAML keeps them flat, beside the probe's settings.
    """

    type: Literal["auto", "http", "tcp", "command"] = "auto"
    path: str | None = None  # used when the frontend has no monitor-uri
    expect_status: tuple[int, ...] = (200,)
    host: str | None = None
    timeout: float = 1.0
    tls_verify: bool = False
    command: str | None = None
    shell: bool = False
    combine: Literal["all", "any"] = "all"
    # Announce only while the kernel delivers the VIP to this host (locality.py).
    require_local: bool = True


@dataclass(frozen=True)
class ServiceConfig:
    withdraw_on_stop: bool = True
    # Before the first change to gobgpd, wait until every check has a verdict (or
    # this long): a restarted announcer then leaves healthy routes untouched.
    startup_grace: float = 10.0
    stop_timeout: float = 10.0
    max_concurrent_probes: int = 1000
    max_concurrent_commands: int = 32
    control_socket: Path = Path("/run/announcer/control.sock")
    state_dir: Path | None = Path("/var/lib/announcer")  # drains survive a restart
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"  # eventloop.py; fixed at start


@dataclass(frozen=True)
class DrainConfig:
    """Maintenance: the drain sequence is GRACEFUL_SHUTDOWN for `delay`, then withdraw."""

    delay: float = 10.0
    disable_file: Path | None = Path("/etc/announcer/disable")  # present: drain the host
    on_stop: bool = True  # a graceful stop drains first (when service.withdraw_on_stop)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    # host:port of the Prometheus endpoint, or unix:///path for a socket (mode 0660)
    address: str = "127.0.0.1:9642"
    min_render_interval: float = 2.0  # scrapes within this share one rendered page
    max_connections: int = 16  # more at once are closed at once
    timeout: float = 5.0  # a connection's whole life: request, render, response
    # File descriptors below RLIMIT_NOFILE kept for the probes: the metrics and
    # control servers refuse connections that would use them (announcer/fds.py).
    fd_reserve: int = 512


@dataclass(frozen=True)
class Override:
    """Settings for the VIPs matched by frontend name pattern or by address."""

    frontends: tuple[str, ...]  # shell patterns (fe_api*); a VIP matches if one frontend does
    vips: tuple[IPNetwork, ...]
    health: CheckConfig
    policy: VipPolicy

    def matches(self, address: IPAddress, frontends: tuple[str, ...]) -> bool:
        if any(address.version == n.version and address in n for n in self.vips):
            return True
        return any(fnmatch.fnmatchcase(f, p) for f in frontends for p in self.frontends)


@dataclass(frozen=True)
class Config:
    allowed_prefixes: tuple[IPNetwork, ...]
    dataplaneapi: DataPlaneConfig = field(default_factory=DataPlaneConfig)
    gobgp: GobgpConfig = field(default_factory=GobgpConfig)
    health: CheckConfig = field(default_factory=CheckConfig)
    policy: VipPolicy = field(default_factory=VipPolicy)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    drain: DrainConfig = field(default_factory=DrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    guard: GuardPolicy = field(default_factory=GuardPolicy)  # guard.py
    damping: DampingPolicy = field(default_factory=DampingPolicy)  # damping.py
    overrides: tuple[Override, ...] = ()
    log_level: str = "INFO"

    def settings_for(
        self, address: IPAddress, frontends: tuple[str, ...]
    ) -> tuple[CheckConfig, VipPolicy, int | None]:
        """The check and route policy of one VIP: the first matching override, or the
        global settings. The third item is the override's index, for `status`."""
        for i, o in enumerate(self.overrides):
            if o.matches(address, frontends):
                return o.health, o.policy, i
        return self.health, self.policy, None


# What a reload (SIGHUP) takes at once, per section; everything else in these
# sections waits for a restart (the adapters and servers were built with it). The
# other sections (health, bgp, overrides, drain, allowed_prefixes) are live.
LIVE_ON_RELOAD: dict[str, tuple[str, ...]] = {
    "dataplaneapi": (
        "poll_interval",
        "full_refresh_interval",
        "include_frontends",
        "exclude_frontends",
        "vip_loss",
    ),
    "gobgp": ("resync_interval", "peers", "reenable_peers"),
    "service": ("withdraw_on_stop", "stop_timeout"),
    "metrics": (),
}


def reloaded(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The configuration a reload runs with: `new`, except what needs a restart, which
    stays as in `old`; and the key paths of those (`gobgp.address`), for the log."""
    ignored: list[str] = []
    sections: dict[str, Any] = {}
    for section, live in LIVE_ON_RELOAD.items():
        old_v, new_v = getattr(old, section), getattr(new, section)
        merged = replace(old_v, **{k: getattr(new_v, k) for k in live})
        if merged != new_v:
            changed = [k for k in vars(old_v) if getattr(old_v, k) != getattr(new_v, k)]
            ignored.extend(f"{section}.{k}" for k in changed if k not in live)
        sections[section] = merged
    return replace(new, **sections), ignored


__all__ = [
    "LIVE_ON_RELOAD",
    "CheckConfig",
    "Config",
    "DataPlaneConfig",
    "DrainConfig",
    "GobgpConfig",
    "MetricsConfig",
    "Override",
    "ServiceConfig",
    "reloaded",
]
