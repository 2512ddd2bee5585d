"""From ExaBGP to announcer: a parsed ExaBGP configuration in, a `Migration` out.

Pure: no I/O. `migrate()` maps what `read_config` (migrate_exabgp.py) and
`parse_healthcheck` (migrate_healthcheck.py) read onto gobgpd's neighbors and
announcer's settings, and writes down, for the report, every option it mapped, every
one it could not, and every way the result behaves differently from ExaBGP. Rendering
the files is migrate_render.py's.

Safety rules kept here: the allow-list comes only from what the input says (the
healthcheck's `--ip`, the routers' import route-filters, or the operator's
`--allowed-prefix`), never from a guess; no secret reaches the report, the YAML or an
error message (the DataPlaneAPI password becomes its own file, the md5 password stays
only in gobgpd.toml, which gobgpd needs it in).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from .configfile import parse_config
from .errors import ConfigError
from .migrate_exabgp import ExaConfig, MigrateError, Neighbor, Process
from .migrate_healthcheck import Healthcheck, merge, parse_healthcheck
from .migrate_options import Report, bgp, dataplane, drain, health, leftovers
from .model import IPNetwork


@dataclass(frozen=True)
class Peer:
    address: str
    peer_as: int
    description: str | None
    local_address: str | None
    hold_time: int | None
    families: tuple[str, ...]
    md5_password: str | None


@dataclass(frozen=True)
class GobgpPlan:
    local_as: int
    router_id: str
    local_addresses: tuple[str, ...]
    peers: tuple[Peer, ...]
    allowed: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class Migration:
    source: str
    process: str
    gobgp: GobgpPlan
    announcer: dict[str, Any]  # the YAML document, section by section
    password: str | None  # DataPlaneAPI's, for its own file; None when unknown
    report: Report


DEFAULT_PASSWORD_REF = "dataplaneapi-password"  # the credential name announcer.service loads


def junos_route_filters(text: str) -> list[IPNetwork]:
    """Prefixes a Junos `set` configuration's BGP import policies accept by route-filter."""
    imports = set(re.findall(r"^set protocols bgp group \S+ import (\S+)", text, re.M))
    out: list[IPNetwork] = []
    for policy, prefix, rest in re.findall(
        r"^set policy-options policy-statement (\S+) term \S+ from route-filter (\S+) (.*)$",
        text,
        re.M,
    ):
        if policy in imports and rest.rstrip().endswith("accept"):
            try:
                out.append(ipaddress.ip_network(prefix))
            except ValueError:
                raise MigrateError(f"junos route-filter {prefix!r}: not a network") from None
    return out


def pick_processes(cfg: ExaConfig, name: str | None) -> list[Process]:
    """The healthcheck processes to migrate: the one named, else every one neighbors use
    (several: ExaBGP's one-process-per-service setup, merged by `merge`)."""
    if name is not None:
        if name not in cfg.processes:
            raise MigrateError(f"--process {name}: no such process (have: {_names(cfg)})")
        return [cfg.processes[name]]
    used = list(dict.fromkeys(p for nb in cfg.neighbors for p in nb.processes))
    if used:
        return [cfg.processes[p] for p in used]
    if len(cfg.processes) == 1:
        return list(cfg.processes.values())
    raise MigrateError(f"no neighbor uses a process: give --process (one of: {_names(cfg)})")


def _names(cfg: ExaConfig) -> str:
    return ", ".join(cfg.processes) or "none"


def migrate(
    cfg: ExaConfig,
    *,
    source: str,
    process: str | None = None,
    allowed_prefixes: tuple[IPNetwork, ...] = (),
    router_filters: tuple[IPNetwork, ...] = (),
    password_ref: str = DEFAULT_PASSWORD_REF,
) -> Migration:
    """Map an ExaBGP configuration onto gobgpd + announcer; raises MigrateError."""
    procs = pick_processes(cfg, process)
    names = [p.name for p in procs]
    hc = merge([(p.name, parse_healthcheck(p.argv)) for p in procs])
    report = Report()
    if len(procs) > 1:
        report.mapped.append(
            f"processes {', '.join(names)} (one per service) -> one announcer: their options "
            "are the same but for --ip (joined), --name, and the address in --cmd (%s)"
        )
    if not hc.by_name:
        report.differences.append(
            f"{hc.program} is taken as a variant of ExaBGP's healthcheck.py, since every "
            "option it is given is one of healthcheck.py's: check that it means the same"
        )
    for other in cfg.processes.values():
        if other.name not in names:
            report.unmapped.append(f"process {other.name}: not migrated (only {', '.join(names)})")
    for u in cfg.unmapped:
        report.unmapped.append(f"{u.where}: `{u.directive}` ({u.pos}): no counterpart, dropped")
    gobgp = _gobgp(cfg, names, report)
    allowed = _allow_list(hc, allowed_prefixes, router_filters, report)
    gobgp = GobgpPlan(gobgp.local_as, gobgp.router_id, gobgp.local_addresses, gobgp.peers, allowed)
    doc: dict[str, Any] = {"allowed_prefixes": [str(n) for n in allowed]}
    password = dataplane(hc, doc, password_ref, report)
    doc["gobgp"] = {"address": "unix:///run/gobgpd/api.sock", "fate_sharing": True}
    doc["health"] = health(hc, report)
    doc["bgp"] = bgp(hc, gobgp.local_as, gobgp.local_addresses, allowed, report)
    doc["drain"] = drain(hc, report)
    report.differences.append(
        "announcer's mass-withdrawal guard (most VIPs failing at once stay announced, worse) "
        "and flap damping are on (guard, damping: their defaults); ExaBGP had neither"
    )
    if hc.has("debug"):
        doc["log_level"] = "DEBUG"
        report.mapped.append("--debug -> log_level: DEBUG")
    leftovers(hc, report)
    try:  # what migrate writes, announcer reads: the same reader as check-config
        parse_config(doc)
    except ConfigError as e:
        raise MigrateError(
            [f"the migrated announcer.yaml would be invalid: {p}" for p in e.problems]
        ) from None
    return Migration(source, ", ".join(names), gobgp, doc, password, report)


# ---------------------------------------------------------------- gobgpd


def _one(nbs: tuple[Neighbor, ...], key: str) -> str | None:
    values = {nb.values[key][0] for nb in nbs if key in nb.values}
    if len(values) > 1:
        raise MigrateError(
            f"neighbors differ in {key} ({', '.join(sorted(values))}): one gobgpd has one"
        )
    return values.pop() if values else None


def _int(text: str, what: str, lo: int, hi: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise MigrateError(f"{what} {text!r}: not a number") from None
    if not lo <= v <= hi:
        raise MigrateError(f"{what} {v}: not in {lo}..{hi}")
    return v


def _gobgp(cfg: ExaConfig, names: list[str], report: Report) -> GobgpPlan:
    nbs = cfg.neighbors
    local_as = _one(nbs, "local-as")
    if local_as is None:
        raise MigrateError("no neighbor has local-as")
    router_id = _one(nbs, "router-id")
    local_addrs = tuple(
        dict.fromkeys(nb.values["local-address"][0] for nb in nbs if "local-address" in nb.values)
    )
    if router_id is None:
        v4 = [a for a in local_addrs if ipaddress.ip_address(a).version == 4]
        if not v4:
            raise MigrateError("no router-id and no IPv4 local-address to take it from")
        router_id = v4[0]
        report.differences.append(
            f"no router-id given: gobgpd's is {router_id} (the local-address)"
        )
    report.mapped.append(
        f"local-as {local_as} -> gobgpd global as; router-id {router_id} -> router-id"
    )
    if local_addrs:
        report.mapped.append(
            f"local-address {', '.join(local_addrs)} -> gobgpd local-address-list and each "
            "neighbor's transport local-address"
        )
    peers = []
    for nb in nbs:
        v = {k: val for k, (val, _) in nb.values.items()}
        if "peer-as" not in v:
            raise MigrateError(f"{nb.pos}: neighbor {nb.address} has no peer-as")
        families = nb.families
        if not families:
            families = ("ipv6-unicast",) if ":" in nb.address else ("ipv4-unicast",)
            report.differences.append(
                f"neighbor {nb.address} has no family block: ExaBGP negotiates every family it "
                f"knows, gobgpd gets {families[0]} only"
            )
        hold = _int(v["hold-time"], "hold-time", 3, 65535) if "hold-time" in v else None
        peers.append(Peer(nb.address, _int(v["peer-as"], "peer-as", 1, 4294967295),
                          v.get("description"), v.get("local-address"), hold, families,
                          v.get("md5-password")))  # fmt: skip
        if not set(names) & set(nb.processes):
            report.differences.append(
                f"neighbor {nb.address} did not get {', '.join(names)}'s routes from ExaBGP; "
                "announcer announces to every gobgpd peer (remove it from gobgpd.toml to keep that)"
            )
        if "md5-password" in v:
            report.mapped.append(
                f"neighbor {nb.address} md5-password -> gobgpd auth-password (gobgpd.toml is "
                "written mode 0600; the password is not shown here)"
            )
    report.mapped.append(
        "each neighbor -> a gobgpd neighbor: peer-as, description, hold-time (keepalive a third "
        "of it), family ipv4/ipv6 unicast"
    )
    report.differences += [
        "gobgpd's neighbors start admin-down: announcer enables them once the complete set is "
        "injected, and its keeper disables them if announcer dies (fate-sharing). Without "
        "announcer running, no session comes up; ExaBGP's came up on its own",
        "gobgpd is passive-mode: the routers dial it (gobgpd waits 5-10 s before each connect "
        "of its own). ExaBGP dialled. Remove passive-mode if the routers only listen",
        "gobgpd exports only /32 and /128 inside allowed_prefixes (its export policy); ExaBGP "
        "sent whatever the process printed",
    ]
    return GobgpPlan(
        _int(local_as, "local-as", 1, 4294967295), router_id, local_addrs, tuple(peers), ()
    )


# ---------------------------------------------------------------- announcer


def _host_nets(ips: list[str]) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for ip in ips:
        try:
            net = ipaddress.ip_network(ip, strict=False)
        except ValueError:
            raise MigrateError(
                f"healthcheck option --ip {ip!r}: not an address or network"
            ) from None
        out.append(net)
    return out


def _allow_list(
    hc: Healthcheck,
    given: tuple[IPNetwork, ...],
    filters: tuple[IPNetwork, ...],
    report: Report,
) -> tuple[IPNetwork, ...]:
    ips = _host_nets(hc.all("ip"))
    if given:
        allowed, why = list(given), "the --allowed-prefix options"
    elif ips:
        allowed, why = ips, "the healthcheck's --ip addresses (exactly what ExaBGP announced)"
    elif filters:
        allowed, why = list(filters), "the routers' import route-filters (--junos-config)"
    else:
        raise MigrateError(
            "no allow-list: the healthcheck has no --ip (its VIPs come from DataPlaneAPI); give "
            "--allowed-prefix NET or --junos-config FILE with the routers' import route-filters"
        )
    for n in allowed:
        if n.prefixlen == 0:
            raise MigrateError(f"allow-list from {why}: {n} would allow every address")
    report.allow_list.append(f"allowed_prefixes from {why}: {', '.join(map(str, allowed))}")
    report.allow_list.append(
        "announcer never announces a VIP outside them, whatever DataPlaneAPI lists"
    )
    if filters:
        outside = [str(n) for n in allowed if not any(_inside(n, f) for f in filters)]
        if outside:
            report.differences.append(
                f"{', '.join(outside)} not inside the routers' route-filters: they would reject it"
            )
    return tuple(allowed)


def _inside(n: IPNetwork, f: IPNetwork) -> bool:
    return n.version == f.version and n.prefixlen >= f.prefixlen and n.network_address in f
