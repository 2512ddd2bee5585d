"""The configuration file: YAML in, frozen typed objects (config.py) out, or a ConfigError.

`load_config()` collects *every* problem before raising, each named by its key path
(`bgp.communities[1]: ...`), so `announcer check-config` shows them all at once.
Unknown keys are errors (a typo must not silently fall back to a default).
All defaults live in config.py's dataclasses and nowhere else.

Reading the DataPlaneAPI password is separate (`read_password()`): it is work that
can fail at run time, and the password must never travel on a command line.
"""


from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .checks import command_argv, request_token_ok
from .config import (
    CheckConfig,
    Config,
    DataPlaneConfig,
    DrainConfig,
    GobgpConfig,
    MetricsConfig,
    Override,
    ServiceConfig,
)
from .errors import ConfigError
from .model import (
    MAX_PREPEND,
    UINT32_MAX,
    Community,
    IPAddress,
    IPNetwork,
    LargeCommunity,
    Origin,
)
from .planner import Adjust, RoutePolicy, VipPolicy
from .shrink import ShrinkPolicy
from .target import parse_target
from .text import printable

T = TypeVar("T")


# ------------------------------------------------------------------ the reader


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


class _Section:
    """One mapping of the YAML document, read key by key with its path."""

    def __init__(self, data: object, path: str, problems: _Problems) -> None:
        self.path = path
        self.problems = problems
        self.used: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            problems.add(path or "(top level)", f"expected a mapping, got {_kind(data)}")
            data = {}
        self.data: Mapping[Any, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, conv: Callable[[object, str], T], default: T) -> T:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        try:
            return conv(self.data[name], self.key(name))
        except _Bad as e:
            self.problems.add(e.path, e.message)
            return default

    def sub(self, name: str) -> _Section:
        self.used.add(name)
        return _Section(self.data.get(name), self.key(name), self.problems)

    def finish(self, hint: Mapping[str, str] | None = None) -> None:
        for k in self.data:
            if k not in self.used:
                extra = f" (did you mean {hint[k]!r}?)" if hint and k in hint else ""
                known = ", ".join(sorted(self.used))
                self.problems.add(self.key(str(k)), f"unknown key{extra}; known keys: {known}")


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message


def _kind(v: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(v), type(v).__name__)


# Converters: (value, key path) -> typed value, raising _Bad.


def _str(v: object, path: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad(path, f"expected a non-empty string, got {_kind(v)}")
    return v


def _bool(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise _Bad(path, f"expected true or false, got {_kind(v)}")
    return v


def _int_in(lo: int, hi: int) -> Callable[[object, str], int]:
    def conv(v: object, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(path, f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise _Bad(path, f"{v} is out of range ({lo}..{hi})")
        return v

    return conv


def _seconds(lo: float = 0.001, hi: float = 86400.0) -> Callable[[object, str], float]:
    def conv(v: object, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _Bad(path, f"expected a number of seconds, got {_kind(v)}")
        if not lo <= v <= hi:
            raise _Bad(path, f"{v} is out of range ({lo}..{hi} s)")
        return float(v)

    return conv


def _choice(*options: T) -> Callable[[object, str], T]:
    def conv(v: object, path: str) -> T:
        for o in options:
            if v == o and type(v) is type(o):
                return o
        raise _Bad(path, f"{v!r} is not one of {', '.join(repr(o) for o in options)}")

    return conv


def _list(item: Callable[[object, str], T]) -> Callable[[object, str], tuple[T, ...]]:
    def conv(v: object, path: str) -> tuple[T, ...]:
        if not isinstance(v, list):
            raise _Bad(path, f"expected a list, got {_kind(v)}")
        out: list[T] = []
        bad: list[_Bad] = []
        for i, x in enumerate(v):
            try:
                out.append(item(x, f"{path}[{i}]"))
            except _Bad as e:
                bad.append(e)
        if bad:  # report the first; the rest follow once it is fixed
            raise bad[0]
        return tuple(out)

    return conv


def _network(v: object, path: str) -> IPNetwork:
    if not isinstance(v, str):
        raise _Bad(path, f"expected a prefix like 192.0.2.0/24, got {_kind(v)}")
    try:
        return ipaddress.ip_network(v, strict=True)
    except ValueError as e:
        raise _Bad(path, f"{v!r} is not a network prefix ({e})") from None


def _address(version: int) -> Callable[[object, str], IPAddress]:
    def conv(v: object, path: str) -> IPAddress:
        if not isinstance(v, str):
            raise _Bad(path, f"expected an IPv{version} address, got {_kind(v)}")
        try:
            a = ipaddress.ip_address(v)
        except ValueError:
            raise _Bad(path, f"{v!r} is not an IP address") from None
        if a.version != version:
            raise _Bad(path, f"{v} is not an IPv{version} address")
        if a.is_unspecified or a.is_multicast or a.is_loopback:
            raise _Bad(path, f"{v} is not a usable unicast next hop")
        return a

    return conv


def _next_hop(version: int) -> Callable[[object, str], IPAddress | None]:
    addr = _address(version)

    def conv(v: object, path: str) -> IPAddress | None:
        return None if v == "self" else addr(v, path)

    return conv


def _community(v: object, path: str) -> Community:
    try:
        return Community.parse(str(v) if isinstance(v, str) else "")
    except ValueError:
        raise _Bad(path, f"{v!r} is not a community like 65000:100 (0-65535:0-65535)") from None


def _large_community(v: object, path: str) -> LargeCommunity:
    try:
        return LargeCommunity.parse(v if isinstance(v, str) else "")
    except ValueError:
        raise _Bad(path, f"{v!r} is not a large community like 65000:1:2 (32-bit parts)") from None


def _url(v: object, path: str) -> str:
    s = _str(v, path)
    try:
        parse_target(s)  # the client's own parser: what passes here, the client accepts
    except ValueError as e:
        raise _Bad(path, str(e)) from None  # the message never repeats credentials
    return s.rstrip("/")


def _server_user(v: object, path: str) -> str | int:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v < UINT32_MAX:
            raise _Bad(path, f"{v} is not a uid")
        return v
    s = _str(v, path)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$", s):
        raise _Bad(path, f"{s!r} is not a user name or uid")
    return s


def _http_path(v: object, path: str) -> str:
    s = _str(v, path)
    if not s.startswith("/") or any(c.isspace() for c in s):
        raise _Bad(path, f"{s!r} must start with / and contain no spaces")
    return s


def _gobgp_address(v: object, path: str) -> str:
    s = _str(v, path)
    if s.startswith("unix://"):
        if not s.startswith("unix:///"):
            raise _Bad(
                path, f"{s!r}: a unix socket target needs an absolute path (unix:///run/...)"
            )
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise _Bad(path, f"{s!r} is not host:port or unix:///path")
    return s


def _env_name(v: object, path: str) -> str:
    s = _str(v, path)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s):
        raise _Bad(path, f"{s!r} is not an environment variable name")
    return s


def _path(v: object, path: str) -> Path:
    return Path(_str(v, path))


def _abs_path(v: object, path: str) -> Path:
    p = _path(v, path)
    if not p.is_absolute():
        raise _Bad(path, f"{str(p)!r} must be an absolute path")
    return p


# ---------------------------------------------------------------- the sections


def _dataplane(s: _Section) -> DataPlaneConfig:
    d = DataPlaneConfig()
    tls = s.sub("tls")
    fe = s.sub("frontends")
    cfg = DataPlaneConfig(
        url=s.get("url", _url, d.url),
        api_version=s.get("api_version", _choice("auto", 2, 3), d.api_version),
        username=s.get("username", _str, d.username),
        password_file=s.get("password_file", _path, d.password_file),
        password_env=s.get("password_env", _env_name, d.password_env),
        timeout=s.get("timeout", _seconds(0.1, 120), d.timeout),
        tls_verify=tls.get("verify", _bool, d.tls_verify),
        ca_file=tls.get("ca_file", _path, d.ca_file),
        discovery_timeout=s.get("discovery_timeout", _seconds(1, 3600), d.discovery_timeout),
        max_response_bytes=s.get(
            "max_response_bytes", _int_in(4096, 1 << 34), d.max_response_bytes
        ),
        max_frontends=s.get("max_frontends", _int_in(1, 10_000_000), d.max_frontends),
        max_binds=s.get("max_binds", _int_in(1, 100_000_000), d.max_binds),
        server_users=s.get("server_users", _list(_server_user), d.server_users),
        poll_interval=s.get("poll_interval", _seconds(0.1, 3600), d.poll_interval),
        full_refresh_interval=s.get(
            "full_refresh_interval", _seconds(1, 86400), d.full_refresh_interval
        ),
        include_frontends=fe.get("include", _list(_str), d.include_frontends),
        exclude_frontends=fe.get("exclude", _list(_str), d.exclude_frontends),
        vip_loss=_vip_loss(s.sub("vip_loss")),
    )
    tls.finish()
    fe.finish()
    s.finish({"password": "password_file or password_env: never put the password in the config"})
    if cfg.password_file is not None and cfg.password_env is not None:
        s.problems.add(s.key("password_file"), "give password_file or password_env, not both")
    if cfg.password_file is None and cfg.password_env is None:
        s.problems.add(s.path, "password_file or password_env is required")
    if not cfg.tls_verify and cfg.url.startswith("https:"):
        s.problems.add(
            tls.key("verify"),
            "false would send the password to any server that answers; pin the server's "
            "CA with tls.ca_file instead",
        )
    with contextlib.suppress(ValueError):  # a bad url is reported by _url already
        pinned = parse_target(cfg.url).pinned
        if pinned is not None and cfg.api_version not in ("auto", pinned):
            s.problems.add(s.key("api_version"), f"{cfg.api_version} but url ends in /v{pinned}")
    if not cfg.server_users and not cfg.url.startswith("https:"):
        s.problems.add(s.key("server_users"), "must name at least one user or uid")
    return cfg


def _fraction(v: object, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise _Bad(path, f"expected a fraction from 0 to 1, got {v!r}")
    return float(v)


def _vip_loss(s: _Section) -> ShrinkPolicy:
    d = ShrinkPolicy()
    cfg = ShrinkPolicy(
        enabled=s.get("enabled", _bool, d.enabled),
        max_fraction=s.get("max_fraction", _fraction, d.max_fraction),
        confirmations=s.get("confirmations", _int_in(1, 1000), d.confirmations),
        min_seconds=s.get("min_seconds", _seconds(0, 86400), d.min_seconds),
    )
    s.finish()
    return cfg


def _peer_address(v: object, path: str) -> str:
    s = _str(v, path)
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        raise _Bad(path, f"{s!r} is not a neighbor IP address") from None


def _gobgp(s: _Section) -> GobgpConfig:
    d = GobgpConfig()
    cfg = GobgpConfig(
        address=s.get("address", _gobgp_address, d.address),
        timeout=s.get("timeout", _seconds(0.1, 120), d.timeout),
        batch_size=s.get("batch_size", _int_in(1, 10000), d.batch_size),
        resync_interval=s.get("resync_interval", _seconds(1, 86400), d.resync_interval),
        api_version=s.get("api_version", _choice("auto", 3, 4), d.api_version),
        fate_sharing=s.get("fate_sharing", _bool, d.fate_sharing),
        peers=s.get("peers", _list(_peer_address), d.peers),
        reenable_peers=s.get("reenable_peers", _bool, d.reenable_peers),
    )
    s.finish()
    return cfg


def _health(s: _Section, d: CheckConfig) -> CheckConfig:
    before = len(s.problems.items)
    cfg = CheckConfig(
        type=s.get("type", _choice("auto", "http", "tcp", "command"), d.type),
        path=s.get("path", _http_path, d.path),
        expect_status=s.get("expect_status", _list(_int_in(100, 599)), d.expect_status),
        host=s.get("host", _str, d.host),
        timeout=s.get("timeout", _seconds(0.01, 60), d.timeout),
        tls_verify=s.get("tls_verify", _bool, d.tls_verify),
        command=s.get("command", _str, d.command),
        shell=s.get("shell", _bool, d.shell),
        interval=s.get("interval", _seconds(0.05, 3600), d.interval),
        fast_interval=s.get("fast_interval", _seconds(0.05, 3600), d.fast_interval),
        rise=s.get("rise", _int_in(1, 100), d.rise),
        fall=s.get("fall", _int_in(1, 100), d.fall),
        combine=s.get("combine", _choice("all", "any"), d.combine),
    )
    s.finish()
    if len(s.problems.items) > before:
        return cfg  # cross-checks on defaults that replaced bad values would mislead
    # The probes' own rules (checks.py): what they could not send, we do not accept.
    if cfg.host is not None and not request_token_ok(cfg.host):
        s.problems.add(s.key("host"), f"{printable(cfg.host)!r}: visible ASCII only, no spaces")
    if cfg.path is not None and not request_token_ok(cfg.path):
        s.problems.add(s.key("path"), f"{printable(cfg.path)!r}: visible ASCII only, no spaces")
    if cfg.command is not None:
        try:
            command_argv(cfg.command, cfg.shell, "192.0.2.1")
        except ValueError as e:
            s.problems.add(s.key("command"), f"cannot be split into words: {e}")
    if cfg.type == "command" and cfg.command is None:
        s.problems.add(s.key("command"), "required when type is command")
    if cfg.command is not None and cfg.type != "command":
        s.problems.add(s.key("command"), "only used when type is command")
    if not cfg.expect_status:
        s.problems.add(s.key("expect_status"), "must list at least one status")
    if cfg.fast_interval > cfg.interval:
        s.problems.add(s.key("fast_interval"), "must not be longer than interval")
    if cfg.timeout > cfg.interval:
        s.problems.add(s.key("timeout"), "must not be longer than interval")
    return cfg


_ORIGINS = {"igp": Origin.IGP, "egp": Origin.EGP, "incomplete": Origin.INCOMPLETE}


def _adjust(s: _Section, d: Adjust, *, can_withdraw: bool) -> Adjust:
    cfg = Adjust(
        announce=s.get("announce", _bool, d.announce) if can_withdraw else True,
        med=s.get("med", _int_in(0, UINT32_MAX), d.med),
        local_pref=s.get("local_pref", _int_in(0, UINT32_MAX), d.local_pref),
        communities=s.get("communities", _list(_community), d.communities),
        large_communities=s.get("large_communities", _list(_large_community), d.large_communities),
        as_path_prepend=s.get("as_path_prepend", _int_in(0, MAX_PREPEND), d.as_path_prepend),
    )
    s.finish()
    return cfg


def _bgp(s: _Section, base: VipPolicy) -> VipPolicy:
    d = base.up
    origin = next(k for k, v in _ORIGINS.items() if v is d.origin)
    up = RoutePolicy(
        next_hop=s.get("next_hop", _next_hop(4), d.next_hop),
        next_hop_v6=s.get("next_hop_v6", _next_hop(6), d.next_hop_v6),
        origin=_ORIGINS[s.get("origin", _choice("igp", "egp", "incomplete"), origin)],
        med=s.get("med", _int_in(0, UINT32_MAX), d.med),
        local_pref=s.get("local_pref", _int_in(0, UINT32_MAX), d.local_pref),
        communities=s.get("communities", _list(_community), d.communities),
        large_communities=s.get("large_communities", _list(_large_community), d.large_communities),
        as_path_prepend=s.get("as_path_prepend", _int_in(0, MAX_PREPEND), d.as_path_prepend),
    )
    policy = VipPolicy(
        up=up,
        down=_adjust(s.sub("down"), base.down, can_withdraw=True),
        draining=_adjust(s.sub("draining"), base.draining, can_withdraw=False),
        drained=_adjust(s.sub("drained"), base.drained, can_withdraw=True),
    )
    s.finish()
    return policy


def _drain(s: _Section) -> DrainConfig:
    d = DrainConfig()
    cfg = DrainConfig(
        delay=s.get("delay", _seconds(0, 3600), d.delay),
        disable_file=s.get("disable_file", _path, d.disable_file),
        on_stop=s.get("on_stop", _bool, d.on_stop),
    )
    if "disable_file" in s.data and s.data["disable_file"] is None:
        cfg = DrainConfig(cfg.delay, None, cfg.on_stop)  # explicit null: no disable file
    s.finish()
    return cfg


def _host_port(v: object, path: str) -> str:
    s = _str(v, path)
    host, sep, port = s.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _Bad(path, f"{s!r} is not address:port (an IP address, not a name)") from None
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Bad(path, f"{s!r} is not address:port")
    return s


def _metrics_address(v: object, path: str) -> str:
    s = _str(v, path)
    if not s.startswith("unix://"):
        return _host_port(v, path)
    if not s[len("unix://") :].startswith("/"):
        raise _Bad(path, f"{s!r}: a unix socket needs an absolute path (unix:///run/...)")
    return s


def _metrics(s: _Section) -> MetricsConfig:
    d = MetricsConfig()
    cfg = MetricsConfig(
        enabled=s.get("enabled", _bool, d.enabled),
        address=s.get("address", _metrics_address, d.address),
        min_render_interval=s.get(
            "min_render_interval", _seconds(0, 3600), d.min_render_interval
        ),
        max_connections=s.get("max_connections", _int_in(1, 1024), d.max_connections),
        timeout=s.get("timeout", _seconds(0.1, 600), d.timeout),
        fd_reserve=s.get("fd_reserve", _int_in(0, 1 << 20), d.fd_reserve),
    )
    s.finish()
    return cfg


def _overrides(v: object, path: str, problems: _Problems, cfg: Config) -> tuple[Override, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        problems.add(path, f"expected a list, got {_kind(v)}")
        return ()
    out = []
    for i, item in enumerate(v):
        s = _Section(item, f"{path}[{i}]", problems)
        before = len(problems.items)
        no_patterns: tuple[str, ...] = ()
        no_vips: tuple[IPNetwork, ...] = ()
        frontends = s.get("frontends", _list(_str), no_patterns)
        vips = s.get("vips", _list(_vip_network), no_vips)
        if not frontends and not vips and len(problems.items) == before:
            problems.add(s.path, "needs frontends (name patterns) or vips (addresses) to match")
        health = _health(s.sub("health"), cfg.health)
        policy = _bgp(s.sub("bgp"), cfg.policy)
        s.finish()
        out.append(Override(frontends, vips, health, policy))
    return tuple(out)


def _vip_network(v: object, path: str) -> IPNetwork:
    if isinstance(v, str) and "/" not in v:
        v = f"{v}/128" if ":" in v else f"{v}/32"
    return _network(v, path)


def _service(s: _Section) -> ServiceConfig:
    d = ServiceConfig()
    cfg = ServiceConfig(
        withdraw_on_stop=s.get("withdraw_on_stop", _bool, d.withdraw_on_stop),
        startup_grace=s.get("startup_grace", _seconds(0, 3600), d.startup_grace),
        stop_timeout=s.get("stop_timeout", _seconds(0.1, 3600), d.stop_timeout),
        max_concurrent_probes=s.get(
            "max_concurrent_probes", _int_in(1, 100000), d.max_concurrent_probes
        ),
        max_concurrent_commands=s.get(
            "max_concurrent_commands", _int_in(1, 10000), d.max_concurrent_commands
        ),
        control_socket=s.get("control_socket", _abs_path, d.control_socket),
        state_dir=s.get("state_dir", _abs_path, d.state_dir),
    )
    if "state_dir" in s.data and s.data["state_dir"] is None:
        cfg = replace(cfg, state_dir=None)  # explicit null: drains are not persisted
    s.finish()
    return cfg


def parse_config(document: object) -> Config:
    """Validate a decoded YAML document; raises ConfigError listing every problem."""
    problems = _Problems()
    top = _Section(document, "", problems)
    no_prefixes: tuple[IPNetwork, ...] = ()
    allow = top.get("allowed_prefixes", _list(_network), no_prefixes)
    if "allowed_prefixes" not in top.data:
        problems.add("allowed_prefixes", "required: the networks VIPs may be announced from")
    elif not allow and not any("allowed_prefixes" in p for p in problems.items):
        problems.add("allowed_prefixes", "must list at least one prefix")
    for i, net in enumerate(allow):
        if net.prefixlen == 0:
            problems.add(f"allowed_prefixes[{i}]", f"{net} would allow every address")
    cfg = Config(
        allowed_prefixes=allow,
        dataplaneapi=_dataplane(top.sub("dataplaneapi")),
        gobgp=_gobgp(top.sub("gobgp")),
        health=_health(top.sub("health"), CheckConfig()),
        policy=_bgp(top.sub("bgp"), VipPolicy()),
        service=_service(top.sub("service")),
        drain=_drain(top.sub("drain")),
        metrics=_metrics(top.sub("metrics")),
        log_level=top.get("log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
    )
    top.used.add("overrides")
    cfg = replace(cfg, overrides=_overrides(top.data.get("overrides"), "overrides", problems, cfg))
    top.finish()
    if any(n.version == 6 for n in allow):
        for where, policy in [("bgp", cfg.policy)] + [
            (f"overrides[{i}].bgp", o.policy) for i, o in enumerate(cfg.overrides)
        ]:
            if policy.up.next_hop_v6 is None:
                problems.add(
                    f"{where}.next_hop_v6",
                    "required when allowed_prefixes has IPv6 networks: gobgpd's 'self' puts "
                    "an IPv4 address in an IPv6 route's next hop over an IPv4 session",
                )
                break
    if problems.items:
        raise ConfigError(problems.items)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file; raises ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    return parse_config(document)


def read_password(cfg: DataPlaneConfig, environ: Mapping[str, str] | None = None) -> str:
    """The DataPlaneAPI password from its file or environment variable; raises ConfigError.

    A file's trailing newline is dropped. systemd's LoadCredential puts the file under
    $CREDENTIALS_DIRECTORY; a relative password_file is looked up there first.
    """
    env = os.environ if environ is None else environ
    if cfg.password_env is not None:
        value = env.get(cfg.password_env)
        if not value:
            raise ConfigError(f"dataplaneapi.password_env: ${cfg.password_env} is not set or empty")
        return value
    if cfg.password_file is None:
        raise ConfigError("dataplaneapi: password_file or password_env is required")
    path = cfg.password_file
    creds = env.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds:
        path = Path(creds) / path
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"dataplaneapi.password_file: cannot read {path}: {e}") from None
    if not value:
        raise ConfigError(f"dataplaneapi.password_file: {path} is empty")
    return value


__all__ = ["load_config", "parse_config", "read_password"]
