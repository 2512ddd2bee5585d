"""The healthcheck's options mapped onto announcer's sections: dataplaneapi, health, bgp, drain.

Pure: no I/O. Each function takes the parsed healthcheck (migrate_healthcheck.py), adds
what it did to the `Report` and returns its section of announcer.yaml as plain values
(the YAML document migrate_render.py writes). ExaBGP healthcheck.py's defaults apply
to options not given, so that the result behaves like what ran before.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from .migrate_exabgp import MigrateError
from .migrate_healthcheck import VARIANT_URL, VARIANT_USER, Healthcheck, curl_check
from .model import IPNetwork


@dataclass
class Report:
    """What the report says; lines are plain sentences, secrets never appear in them."""

    mapped: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    allow_list: list[str] = field(default_factory=list)


def dataplane(hc: Healthcheck, doc: dict[str, Any], ref: str, report: Report) -> str | None:
    password = hc.get("api-password")
    doc["dataplaneapi"] = {
        "url": VARIANT_URL,
        "username": VARIANT_USER if hc.variant else "admin",
        "password_file": ref,
    }
    if hc.variant:
        report.mapped.append(
            f"--api-password -> dataplaneapi.password_file: {ref} (the password is in its own "
            f"file, mode 0600, never in the YAML); user {VARIANT_USER} at {VARIANT_URL}, as the "
            "variant script has them"
        )
        if hc.placeholder_password:
            report.unmapped.append(
                "--api-password is a placeholder (<...>): no password file was written; put "
                "DataPlaneAPI's password in it yourself"
            )
            password = None
    else:
        report.differences.append(
            "ExaBGP's own healthcheck knows nothing of DataPlaneAPI: announcer finds the VIPs "
            "there; dataplaneapi.username and the password file must be filled in by hand"
        )
    return password


def health(hc: Healthcheck, report: Report) -> dict[str, Any]:
    h: dict[str, Any] = {}
    interval = float(hc.get("interval") or 5)
    if interval <= 0:
        raise MigrateError(
            f"--interval {interval:g}: healthcheck.py announces once and exits; announcer has "
            "no counterpart"
        )
    fast = min(float(hc.get("fast-interval") or 1), interval)
    timeout = float(hc.get("timeout") or 5)
    cmd = hc.get("command")
    http = curl_check(cmd) if cmd is not None else None
    if http is not None:
        h["type"] = "http"
        h["path"] = http.path
        if http.timeout is not None:
            timeout = min(timeout, http.timeout)
        report.mapped.append(
            f"--cmd (curl --fail of http://%s{http.path}) -> health.type: http, path: {http.path}"
        )
        report.differences.append(
            "the native http check probes every port the VIP's frontends bind (health.combine: "
            "all), not only the port in the curl URL"
            + (f" ({http.port})" if http.port not in (None, 80) else " (80)")
        )
    elif cmd is not None:
        h["type"] = "command"
        h["command"] = cmd
        h["shell"] = True
        report.mapped.append(
            "--cmd -> health.type: command, shell: true (ExaBGP runs it through sh; %s = the VIP)"
        )
        if "%s" not in cmd:
            report.differences.append("--cmd has no %s: the same command decides for every VIP")
    else:
        report.unmapped.append(
            "no --cmd: healthcheck.py then checks nothing; announcer's default check is used "
            "(auto: the frontend's monitor-uri, else a TCP connect)"
        )
    if timeout > interval:
        report.differences.append(
            f"check timeout {timeout:g}s cut to the interval, {interval:g}s (announcer's rule)"
        )
        timeout = interval
    h.update(timeout=_num(timeout), interval=_num(interval), fast_interval=_num(fast))
    h.update(rise=int(hc.get("rise") or 3), fall=int(hc.get("fall") or 3))
    for opt, key in (
        ("interval", "interval"),
        ("fast-interval", "fast_interval"),
        ("rise", "rise"),
        ("fall", "fall"),
    ):
        how = "" if hc.has(opt) else " (not given: healthcheck.py's default)"
        report.mapped.append(f"--{opt} {hc.get(opt)} -> health.{key}: {h[key]}{how}")
    how = "" if hc.has("timeout") else " (not given: healthcheck.py's default)"
    why = " (the smaller of it and curl's --max-time)" if http is not None and http.timeout else ""
    report.mapped.append(
        f"--timeout {hc.get('timeout')}{how} -> health.timeout: {h['timeout']}{why}"
    )
    report.differences.append(
        "health.require_local: announcer announces a VIP only while the kernel delivers it to "
        "this host"
        + (
            ""
            if hc.has("no-ip-setup")
            else "; healthcheck.py added missing VIPs to lo itself, announcer never does"
        )
    )
    return h


def _num(v: float) -> int | float:
    return int(v) if v == int(v) else v


def _prepend(path: str | None, local_as: int, option: str, report: Report) -> int | None:
    """ExaBGP sends --as-path as written (no own AS added): N copies of ours = N-1 prepends."""
    if path is None:
        return None
    asns = path.replace("[", " ").replace("]", " ").split()
    if asns and all(a == str(local_as) for a in asns) and len(asns) <= 11:
        report.mapped.append(f"--{option} {path} -> as_path_prepend: {len(asns) - 1}")
        return len(asns) - 1
    report.unmapped.append(f"--{option} {path}: announcer only prepends its own AS; not mapped")
    return None


def _communities(text: str | None, option: str, large: bool, report: Report) -> list[str]:
    if text is None:
        return []
    words = text.replace("[", " ").replace("]", " ").split()
    shape = r"^\d+:\d+:\d+$" if large else r"^\d+:\d+$"
    good = [w for w in words if re.match(shape, w)]
    for bad in set(words) - set(good):
        report.unmapped.append(f"--{option} {bad}: not a numeric community; not mapped")
    return good


def bgp(
    hc: Healthcheck,
    local_as: int,
    local_addresses: tuple[str, ...],
    allowed: tuple[IPNetwork, ...],
    report: Report,
) -> dict[str, Any]:
    b: dict[str, Any] = {"next_hop": hc.get("next-hop") or "self"}
    how = "" if hc.has("next-hop") else " (not given: healthcheck.py's default)"
    report.mapped.append(f"--next-hop {b['next_hop']}{how} -> bgp.next_hop: {b['next_hop']}")
    if any(n.version == 6 for n in allowed):
        v6 = [a for a in local_addresses if ipaddress.ip_address(a).version == 6]
        if not v6:
            raise MigrateError("IPv6 VIPs but no IPv6 local-address: give next_hop_v6 by hand")
        b["next_hop_v6"] = v6[0]
    b["med"] = int(hc.get("up-metric") or 100)
    report.mapped.append(f"--up-metric {b['med']} -> bgp.med (healthcheck.py's default is 100)")
    ips = hc.all("ip")
    if len(ips) > 1 and int(hc.get("increase") or 0):
        report.differences.append(
            f"healthcheck.py gave each further --ip a MED {hc.get('increase')} higher; announcer "
            f"gives every VIP bgp.med {b['med']}"
        )
    if int(hc.get("local-preference") or -1) >= 0:
        b["local_pref"] = int(hc.get("local-preference") or 0)
        report.mapped.append("--local-preference -> bgp.local_pref")
    for opt, key, large in (
        ("community", "communities", False),
        ("large-community", "large_communities", True),
    ):
        if got := _communities(hc.get(opt), opt, large, report):
            b[key] = got
            report.mapped.append(f"--{opt} -> bgp.{key}")
    up_path = hc.get("up-as-path") or hc.get("as-path")
    up_opt = "up-as-path" if hc.has("up-as-path") else "as-path"
    if (n := _prepend(up_path, local_as, up_opt, report)) is not None:
        b["as_path_prepend"] = n
    extra = _communities(hc.get("disabled-community"), "disabled-community", False, report)
    if hc.has("withdraw-on-down"):
        b["down"] = {"announce": False}
        b["drained"] = {"announce": False}
        report.mapped.append(
            "--withdraw-on-down -> bgp.down.announce: false, bgp.drained.announce: false"
        )
    else:
        down: dict[str, Any] = {"announce": True, "med": int(hc.get("down-metric") or 1000)}
        drained: dict[str, Any] = {"announce": True, "med": int(hc.get("disabled-metric") or 500)}
        for opt, d in (
            ("down-as-path", down),
            ("disabled-as-path", drained),
        ):
            if (n := _prepend(hc.get(opt) or hc.get("as-path"), local_as, opt, report)) is not None:
                d["as_path_prepend"] = n
        if extra:
            down["communities"], drained["communities"] = extra, extra
            report.differences.append(
                "--disabled-community replaced --community on DOWN and disabled routes; announcer "
                "adds bgp.down/drained.communities to bgp.communities"
            )
        b["down"], b["drained"] = down, drained
        report.mapped.append(
            f"no --withdraw-on-down, --down-metric {down['med']} -> bgp.down {{announce: true, "
            f"med: {down['med']}}}; --disabled-metric {drained['med']} -> bgp.drained "
            f"{{announce: true, med: {drained['med']}}}"
        )
        report.differences.append(
            f"ExaBGP announces DOWN VIPs with MED {down['med']} unless --withdraw-on-down, and "
            "so does this configuration (announcer's own default withdraws them): the routers "
            "prefer a healthy LB's MED-100 route only over routes from the same neighbour AS "
            "(MED is compared only then); with one LB left, or LBs in different ASes, the "
            "DOWN VIP still gets traffic. bgp.down.announce: false withdraws instead"
        )
    return b


def drain(hc: Healthcheck, report: Report) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if (f := hc.get("disable")) is not None:
        d["disable_file"] = f
        report.mapped.append(f"--disable {f} -> drain.disable_file")
    else:
        d["disable_file"] = None
        report.mapped.append("no --disable -> drain.disable_file: null (no disable file)")
    report.differences.append(
        "a drain (disable file or `announcer drain`) first re-announces with 65535:0 "
        "(GRACEFUL_SHUTDOWN) for drain.delay (10 s), then applies bgp.drained; healthcheck.py "
        "switched to the disabled metric (or withdrew) at once"
    )
    return d


_IGNORED = {
    "silent": "logging: announcer logs to stderr/journal",
    "syslog-facility": "logging: announcer logs to stderr/journal",
    "no-syslog": "logging: announcer logs to stderr/journal",
    "no-ack": "ExaBGP's API acknowledgements do not exist with gobgpd",
    "sudo": "announcer never adds addresses, so needs no sudo",
    "name": "a label for healthcheck.py's logs",
    "pid": "systemd tracks announcer",
    "user": "announcer.service runs as a dynamic user",
    "group": "announcer.service runs as a dynamic user",
    "config": "options in that file were NOT read: migrate them by hand",
    "deaggregate-networks": "announcer announces host routes only",
    "no-ip-setup": "announcer never adds addresses (health.require_local)",
    "dynamic-ip-setup": "announcer never adds or removes addresses",
    "label": "announcer finds VIPs in DataPlaneAPI, not by loopback label",
    "start-ip": "announcer finds VIPs in DataPlaneAPI",
    "extended-community": "announcer sends no extended communities",
    "path-id": "no ADD-PATH path id in announcer",
    "neighbor": "announcer announces to every gobgpd peer",
    "execute": "no hooks on state changes (use the metrics or `announcer status`)",
    "up-execute": "no hooks on state changes",
    "down-execute": "no hooks on state changes",
    "disabled-execute": "no hooks on state changes",
    "help": "prints help",
    "increase": "announcer gives every VIP the same bgp.med",
}
_MAPPED = frozenset(
    [
        "interval",
        "fast-interval",
        "timeout",
        "rise",
        "fall",
        "command",
        "next-hop",
        "ip",
        "local-preference",
        "up-metric",
        "down-metric",
        "disabled-metric",
        "community",
        "large-community",
        "disabled-community",
        "as-path",
        "up-as-path",
        "down-as-path",
        "disabled-as-path",
        "withdraw-on-down",
        "disable",
        "api-password",
        "debug",
    ]
)


def leftovers(hc: Healthcheck, report: Report) -> None:
    for name, value in hc.given:
        if name in _MAPPED:
            continue
        shown = f"--{name}" + (f" {value}" if value else "")
        report.unmapped.append(f"{shown}: not mapped ({_IGNORED.get(name, 'no counterpart')})")
    if hc.has("ip"):
        report.mapped.append(f"--ip {' '.join(hc.all('ip'))} -> allowed_prefixes")
