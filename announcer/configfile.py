"""The configuration file: YAML in, frozen typed objects (config.py) out, or a ConfigError.

This is the announcer's half of the reader: which sections and keys there are, the
checks across keys, and the file itself. The generic half, reading key by key with
key paths, refusing unknown keys and converting each value, is configvalues.py's;
`load_config()` collects *every* problem before raising, so `announcer check-config`
shows them all at once. All defaults live in config.py's dataclasses and nowhere else.

Reading the DataPlaneAPI password is separate (`read_password()`): it is work that
can fail at run time, and the password must never travel on a command line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

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
from .configvalues import (
    Problems,
    Section,
    abs_path,
    boolean,
    choice,
    community,
    env_name,
    file_path,
    fraction,
    gobgp_address,
    http_path,
    int_in,
    kind_of,
    large_community,
    list_of,
    metrics_address,
    network,
    next_hop,
    nonempty_str,
    number_in,
    peer_address,
    seconds,
    server_user,
    url,
    vip_network,
)
from .damping import DampingPolicy
from .errors import ConfigError
from .guard import GuardPolicy
from .model import MAX_PREPEND, UINT32_MAX, IPNetwork, Origin
from .planner import Adjust, RoutePolicy, VipPolicy
from .shrink import ShrinkPolicy
from .target import parse_target
from .text import printable

# ---------------------------------------------------------------- the sections


def _dataplane(s: Section) -> DataPlaneConfig:
    d = DataPlaneConfig()
    tls = s.sub("tls")
    fe = s.sub("frontends")
    cfg = DataPlaneConfig(
        url=s.get("url", url, d.url),
        api_version=s.get("api_version", choice("auto", 2, 3), d.api_version),
        username=s.get("username", nonempty_str, d.username),
        password_file=s.get("password_file", file_path, d.password_file),
        password_env=s.get("password_env", env_name, d.password_env),
        timeout=s.get("timeout", seconds(0.1, 120), d.timeout),
        tls_verify=tls.get("verify", boolean, d.tls_verify),
        ca_file=tls.get("ca_file", file_path, d.ca_file),
        discovery_timeout=s.get("discovery_timeout", seconds(1, 3600), d.discovery_timeout),
        max_response_bytes=s.get(
            "max_response_bytes", int_in(4096, 1 << 34), d.max_response_bytes
        ),
        max_frontends=s.get("max_frontends", int_in(1, 10_000_000), d.max_frontends),
        max_binds=s.get("max_binds", int_in(1, 100_000_000), d.max_binds),
        server_users=s.get("server_users", list_of(server_user), d.server_users),
        poll_interval=s.get("poll_interval", seconds(0.1, 3600), d.poll_interval),
        full_refresh_interval=s.get(
            "full_refresh_interval", seconds(1, 86400), d.full_refresh_interval
        ),
        include_frontends=fe.get("include", list_of(nonempty_str), d.include_frontends),
        exclude_frontends=fe.get("exclude", list_of(nonempty_str), d.exclude_frontends),
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
    with contextlib.suppress(ValueError):  # a bad url is reported by the url converter
        pinned = parse_target(cfg.url).pinned
        if pinned is not None and cfg.api_version not in ("auto", pinned):
            s.problems.add(s.key("api_version"), f"{cfg.api_version} but url ends in /v{pinned}")
    if not cfg.server_users and not cfg.url.startswith("https:"):
        s.problems.add(s.key("server_users"), "must name at least one user or uid")
    return cfg


def _vip_loss(s: Section) -> ShrinkPolicy:
    d = ShrinkPolicy()
    cfg = ShrinkPolicy(
        enabled=s.get("enabled", boolean, d.enabled),
        max_fraction=s.get("max_fraction", fraction, d.max_fraction),
        confirmations=s.get("confirmations", int_in(1, 1000), d.confirmations),
        min_seconds=s.get("min_seconds", seconds(0, 86400), d.min_seconds),
    )
    s.finish()
    return cfg


def _guard(s: Section) -> GuardPolicy:
    d = GuardPolicy()
    cfg = GuardPolicy(
        enabled=s.get("enabled", boolean, d.enabled),
        max_down_fraction=s.get("max_down_fraction", fraction, d.max_down_fraction),
        min_vips=s.get("min_vips", int_in(1, 1_000_000), d.min_vips),
        as_path_prepend=s.get("as_path_prepend", int_in(1, MAX_PREPEND), d.as_path_prepend),
        release_after=s.get("release_after", seconds(0, 3600), d.release_after),
        window=s.get("window", seconds(0.1, 3600), d.window),
    )
    s.finish()
    return cfg


def _damping(s: Section) -> DampingPolicy:
    d = DampingPolicy()
    cfg = DampingPolicy(
        enabled=s.get("enabled", boolean, d.enabled),
        penalty=s.get("penalty", number_in(1, 1e6), d.penalty),
        suppress=s.get("suppress", number_in(1, 1e6), d.suppress),
        reuse=s.get("reuse", number_in(1, 1e6), d.reuse),
        half_life=s.get("half_life", seconds(1, 86400), d.half_life),
        max_hold=s.get("max_hold", seconds(1, 86400), d.max_hold),
    )
    before = len(s.problems.items)
    s.finish()
    if len(s.problems.items) == before:
        for key, why in cfg.problems():
            s.problems.add(s.key(key), why)
    return cfg


def _gobgp(s: Section) -> GobgpConfig:
    d = GobgpConfig()
    cfg = GobgpConfig(
        address=s.get("address", gobgp_address, d.address),
        timeout=s.get("timeout", seconds(0.1, 120), d.timeout),
        batch_size=s.get("batch_size", int_in(1, 10000), d.batch_size),
        resync_interval=s.get("resync_interval", seconds(1, 86400), d.resync_interval),
        api_version=s.get("api_version", choice("auto", 3, 4), d.api_version),
        fate_sharing=s.get("fate_sharing", boolean, d.fate_sharing),
        peers=s.get("peers", list_of(peer_address), d.peers),
        reenable_peers=s.get("reenable_peers", boolean, d.reenable_peers),
    )
    s.finish()
    return cfg


def _health(s: Section, d: CheckConfig) -> CheckConfig:
    before = len(s.problems.items)
    cfg = CheckConfig(
        type=s.get("type", choice("auto", "http", "tcp", "command"), d.type),
        path=s.get("path", http_path, d.path),
        expect_status=s.get("expect_status", list_of(int_in(100, 599)), d.expect_status),
        host=s.get("host", nonempty_str, d.host),
        timeout=s.get("timeout", seconds(0.01, 60), d.timeout),
        tls_verify=s.get("tls_verify", boolean, d.tls_verify),
        command=s.get("command", nonempty_str, d.command),
        shell=s.get("shell", boolean, d.shell),
        interval=s.get("interval", seconds(0.05, 3600), d.interval),
        fast_interval=s.get("fast_interval", seconds(0.05, 3600), d.fast_interval),
        rise=s.get("rise", int_in(1, 100), d.rise),
        fall=s.get("fall", int_in(1, 100), d.fall),
        combine=s.get("combine", choice("all", "any"), d.combine),
        require_local=s.get("require_local", boolean, d.require_local),
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


def _adjust(s: Section, d: Adjust, *, can_withdraw: bool) -> Adjust:
    cfg = Adjust(
        announce=s.get("announce", boolean, d.announce) if can_withdraw else True,
        med=s.get("med", int_in(0, UINT32_MAX), d.med),
        local_pref=s.get("local_pref", int_in(0, UINT32_MAX), d.local_pref),
        communities=s.get("communities", list_of(community), d.communities),
        large_communities=s.get("large_communities", list_of(large_community), d.large_communities),
        as_path_prepend=s.get("as_path_prepend", int_in(0, MAX_PREPEND), d.as_path_prepend),
    )
    s.finish()
    return cfg


def _bgp(s: Section, base: VipPolicy) -> VipPolicy:
    d = base.up
    origin = next(k for k, v in _ORIGINS.items() if v is d.origin)
    up = RoutePolicy(
        next_hop=s.get("next_hop", next_hop(4), d.next_hop),
        next_hop_v6=s.get("next_hop_v6", next_hop(6), d.next_hop_v6),
        origin=_ORIGINS[s.get("origin", choice("igp", "egp", "incomplete"), origin)],
        med=s.get("med", int_in(0, UINT32_MAX), d.med),
        local_pref=s.get("local_pref", int_in(0, UINT32_MAX), d.local_pref),
        communities=s.get("communities", list_of(community), d.communities),
        large_communities=s.get("large_communities", list_of(large_community), d.large_communities),
        as_path_prepend=s.get("as_path_prepend", int_in(0, MAX_PREPEND), d.as_path_prepend),
    )
    policy = VipPolicy(
        up=up,
        down=_adjust(s.sub("down"), base.down, can_withdraw=True),
        draining=_adjust(s.sub("draining"), base.draining, can_withdraw=False),
        drained=_adjust(s.sub("drained"), base.drained, can_withdraw=True),
    )
    s.finish()
    return policy


def _drain(s: Section) -> DrainConfig:
    d = DrainConfig()
    cfg = DrainConfig(
        delay=s.get("delay", seconds(0, 3600), d.delay),
        disable_file=s.get("disable_file", file_path, d.disable_file),
        on_stop=s.get("on_stop", boolean, d.on_stop),
    )
    if "disable_file" in s.data and s.data["disable_file"] is None:
        cfg = DrainConfig(cfg.delay, None, cfg.on_stop)  # explicit null: no disable file
    s.finish()
    return cfg


def _metrics(s: Section) -> MetricsConfig:
    d = MetricsConfig()
    cfg = MetricsConfig(
        enabled=s.get("enabled", boolean, d.enabled),
        address=s.get("address", metrics_address, d.address),
        min_render_interval=s.get(
            "min_render_interval", seconds(0, 3600), d.min_render_interval
        ),
        max_connections=s.get("max_connections", int_in(1, 1024), d.max_connections),
        timeout=s.get("timeout", seconds(0.1, 600), d.timeout),
        fd_reserve=s.get("fd_reserve", int_in(0, 1 << 20), d.fd_reserve),
    )
    s.finish()
    return cfg


def _overrides(v: object, path: str, problems: Problems, cfg: Config) -> tuple[Override, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        problems.add(path, f"expected a list, got {kind_of(v)}")
        return ()
    out = []
    for i, item in enumerate(v):
        s = Section(item, f"{path}[{i}]", problems)
        before = len(problems.items)
        no_patterns: tuple[str, ...] = ()
        no_vips: tuple[IPNetwork, ...] = ()
        frontends = s.get("frontends", list_of(nonempty_str), no_patterns)
        vips = s.get("vips", list_of(vip_network), no_vips)
        if not frontends and not vips and len(problems.items) == before:
            problems.add(s.path, "needs frontends (name patterns) or vips (addresses) to match")
        health = _health(s.sub("health"), cfg.health)
        policy = _bgp(s.sub("bgp"), cfg.policy)
        s.finish()
        out.append(Override(frontends, vips, health, policy))
    return tuple(out)


def _service(s: Section) -> ServiceConfig:
    d = ServiceConfig()
    cfg = ServiceConfig(
        withdraw_on_stop=s.get("withdraw_on_stop", boolean, d.withdraw_on_stop),
        startup_grace=s.get("startup_grace", seconds(0, 3600), d.startup_grace),
        stop_timeout=s.get("stop_timeout", seconds(0.1, 3600), d.stop_timeout),
        max_concurrent_probes=s.get(
            "max_concurrent_probes", int_in(1, 100000), d.max_concurrent_probes
        ),
        max_concurrent_commands=s.get(
            "max_concurrent_commands", int_in(1, 10000), d.max_concurrent_commands
        ),
        control_socket=s.get("control_socket", abs_path, d.control_socket),
        state_dir=s.get("state_dir", abs_path, d.state_dir),
        event_loop=s.get("event_loop", choice("auto", "uvloop", "asyncio"), d.event_loop),
    )
    if "state_dir" in s.data and s.data["state_dir"] is None:
        cfg = replace(cfg, state_dir=None)  # explicit null: drains are not persisted
    s.finish()
    return cfg


def parse_config(document: object) -> Config:
    """Validate a decoded YAML document; raises ConfigError listing every problem."""
    problems = Problems()
    top = Section(document, "", problems)
    no_prefixes: tuple[IPNetwork, ...] = ()
    allow = top.get("allowed_prefixes", list_of(network), no_prefixes)
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
        guard=_guard(top.sub("guard")),
        damping=_damping(top.sub("damping")),
        log_level=top.get("log_level", choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
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
    $CREDENTIALS_DIRECTORY; a relative password_file is a credential name, looked up
    there and nowhere else.
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
    if not path.is_absolute():
        if not creds:
            # Not the working directory: that would read whatever file of that name is
            # where the command happens to run.
            raise ConfigError(
                f"dataplaneapi.password_file: {path} is a credential name (a relative "
                "path) and $CREDENTIALS_DIRECTORY is not set: run it under systemd with "
                f"LoadCredential={path}:FILE (docs/operations.md, Install), or give an "
                "absolute path"
            )
        path = Path(creds) / path
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"dataplaneapi.password_file: cannot read {path}: {e}") from None
    if not value:
        raise ConfigError(f"dataplaneapi.password_file: {path} is empty")
    return value


__all__ = ["load_config", "parse_config", "read_password"]
