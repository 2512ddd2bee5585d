"""The alert rules against a real Prometheus (Debian's), scraping both LBs of the netns lab.

A monitoring namespace `mon` on the rack LAN (198.51.100.100, a documentation address
in a namespace the lab made) runs `prometheus` with monitoring/announcer.rules.yml,
scraping announcer's metrics on lb1 and lb2 (their rack addresses) every second. The
rules are the shipped ones with every duration divided by 60 (`for: 2m` -> 2s, a
`[15m]` window -> 15s, the 300 s staleness threshold -> 5 s): the same expressions,
labels and templates on a time scale a test can wait for.

Faults, each asserted through Prometheus' HTTP API (/api/v1/alerts) going pending,
then firing, then gone after the recovery:

* lb1's announcer killed (SIGKILL)           -> AnnouncerDown{instance="lb1"}
* lb1's api backend stopped (VIP 192.0.2.11) -> AnnouncerVIPWithdrawnOnThisLB
* lb1's DataPlaneAPI stopped                 -> AnnouncerDataPlaneAPIFailing

and the dashboard's queries reference only metrics this live Prometheus has.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.lab import LBS, RACK_ADDR, Lab, Netns, add_veth, wait_until
from tests.integration.stack import LbStack
from tests.support.labroutes import wait_all
from tests.support.monitoring import RULES, dashboard_exprs, metric_names

pytestmark = pytest.mark.lab

MON = "198.51.100.100"
PROM = f"http://{MON}:9090"
METRICS_PORT = 9642


def scaled_rules(text: str) -> str:
    """The rules with every duration divided by 60 (minutes -> seconds, hours -> minutes)
    and the DataPlaneAPI staleness threshold (300 s) to 5 s."""

    def scale(m: re.Match[str]) -> str:
        n, unit = int(m.group(1)), m.group(2)
        return {"m": f"{n}s", "h": f"{n}m", "s": f"{max(1, n // 60)}s"}[unit]

    text = re.sub(r"(?<=for: )(\d+)([smh])\b", scale, text)
    text = re.sub(r"(?<=\[)(\d+)([smh])(?=\])", scale, text)
    assert "announcer_dataplaneapi_last_success_timestamp_seconds > 300" in text
    return text.replace(
        "announcer_dataplaneapi_last_success_timestamp_seconds > 300",
        "announcer_dataplaneapi_last_success_timestamp_seconds > 5",
    )


def test_scaled_rules_keep_the_expressions() -> None:
    text = RULES.read_text()
    scaled = scaled_rules(text)
    assert "for: 2s" in scaled and "for: 4m" in scaled and "[15s]" in scaled
    assert "for: 2m" not in scaled and "[15m]" not in scaled
    strip = re.compile(r"for: \S+|\[\d+[smh]\]|> 300|> 5\b")
    assert strip.sub("", text) == strip.sub("", scaled)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    prom = shutil.which("prometheus")
    assert prom, "prometheus not installed (scripts/deps installs Debian's)"
    with Lab(enable_peers=False, wait_established=False) as lab:
        assert lab.tmp is not None
        stacks = {}
        for lb in LBS:
            s = LbStack(lab, lb)
            s.write_announcer_cfg(metrics={"address": f"{RACK_ADDR[lb][0]}:{METRICS_PORT}"})
            stacks[lb] = s.start()
        lab.stacks = stacks  # type: ignore[attr-defined]
        # The monitoring host: its own namespace on the rack LAN, removed with the lab.
        mon = Netns(lab.prefix + "mon")
        mon.add()
        lab.created.append(mon)
        lab.nodes["mon"] = mon
        mon.prepare()
        add_veth(mon, "rack", lab.ns("sw"), "rack-mon")
        lab.ns("sw").ip("link", "set", "rack-mon", "master", "rack")
        mon.add_addr("rack", f"{MON}/24")
        d = lab.tmp / "mon"
        d.mkdir()
        (d / "announcer.rules.yml").write_text(scaled_rules(RULES.read_text()))
        targets = [f"{RACK_ADDR[lb][0]}:{METRICS_PORT}" for lb in LBS]
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "900ms",
            },
            "rule_files": [str(d / "announcer.rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "announcer",
                    "static_configs": [
                        {"targets": [t], "labels": {"instance": lb}}
                        for t, lb in zip(targets, LBS, strict=True)
                    ],
                }
            ],
        }
        (d / "prometheus.yml").write_text(yaml.safe_dump(config))
        lab.start(
            "mon",
            [
                prom,
                f"--config.file={d / 'prometheus.yml'}",
                f"--storage.tsdb.path={d / 'data'}",
                f"--web.listen-address={MON}:9090",
                "--web.enable-lifecycle",
            ],
            name="prometheus",
        )
        wait_all(lab)
        wait_until(
            lambda: {
                t["labels"]["instance"]: t["health"] for t in api(lab, "targets")["activeTargets"]
            },
            30,
            0.5,
            check=lambda h: h == {"lb1": "up", "lb2": "up"},
            what="Prometheus scraping lb1 and lb2",
        )
        yield lab


def api(lab: Lab, path: str, **params: str) -> Any:
    """GET /api/v1/PATH from the monitoring namespace (where Prometheus listens)."""
    url = f"{PROM}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    out = lab.exec("mon", ["curl", "-sf", "--max-time", "5", url], check=True).stdout
    answer = json.loads(out)
    assert answer["status"] == "success", answer
    return answer["data"]


def alerts(lab: Lab, name: str) -> dict[str, str]:
    """instance (or vip) -> state (pending, firing) of the active alerts named `name`."""
    return {
        a["labels"].get("instance", a["labels"].get("vip", "")): a["state"]
        for a in api(lab, "alerts")["alerts"]
        if a["labels"]["alertname"] == name
    }


def goes_pending_then_firing(lab: Lab, name: str, key: str, timeout: float = 60) -> list[str]:
    """Poll until alert `name` for `key` fires; the states seen on the way (in order)."""
    seen: list[str] = []

    def state() -> str:
        s = alerts(lab, name).get(key, "inactive")
        if not seen or seen[-1] != s:
            seen.append(s)
        return s

    wait_until(state, timeout, 0.2, check=lambda s: s == "firing", what=f"{name}{{{key}}} firing")
    return seen


def clears(lab: Lab, name: str, key: str, timeout: float = 60) -> None:
    wait_until(
        lambda: alerts(lab, name).get(key),
        timeout,
        0.5,
        check=lambda s: s is None,
        what=f"{name}{{{key}}} resolved",
    )


def stack(lab: Lab, lb: str) -> LbStack:
    return lab.stacks[lb]  # type: ignore[attr-defined,no-any-return]


def test_quiet_when_all_is_well(lab: Lab) -> None:
    time.sleep(3)  # longer than every scaled `for:` of the warning alerts but one
    active = [a["labels"]["alertname"] for a in api(lab, "alerts")["alerts"]]
    assert active == [], active
    # The recording rules see both LBs announcing each VIP.
    lbs = api(lab, "query", query="vip:announcer_lbs_announcing:count")["result"]
    assert {r["metric"]["vip"]: r["value"][1] for r in lbs} == {
        "192.0.2.10": "2", "192.0.2.11": "2", "192.0.2.12": "2", "2001:db8:0:1::10": "2",
    }  # fmt: skip


def test_announcer_killed_fires_announcer_down(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    lab.signal(s1.name("announcer"), signal.SIGKILL)
    try:
        seen = goes_pending_then_firing(lab, "AnnouncerDown", "lb1")
        assert seen[-2:] == ["pending", "firing"], seen
        assert "lb2" not in alerts(lab, "AnnouncerDown")
    finally:
        lab.stop(s1.name("announcer"))  # reap the killed process's record
        s1.start_announcer()
    wait_all(lab)
    clears(lab, "AnnouncerDown", "lb1")


def test_vip_failing_on_one_lb_fires_withdrawn_on_this_lb(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    s1.stop_backend("api")
    try:
        seen = goes_pending_then_firing(lab, "AnnouncerVIPWithdrawnOnThisLB", "lb1")
        assert seen[-2:] == ["pending", "firing"], seen
        firing = [
            a["labels"]
            for a in api(lab, "alerts")["alerts"]
            if a["labels"]["alertname"] == "AnnouncerVIPWithdrawnOnThisLB"
        ]
        assert [(a["instance"], a["vip"]) for a in firing] == [("lb1", "192.0.2.11")], firing
        assert alerts(lab, "AnnouncerVIPWithdrawnEverywhere") == {}  # lb2 still has it
    finally:
        s1.start_backend("api")
    clears(lab, "AnnouncerVIPWithdrawnOnThisLB", "lb1")


def test_dataplaneapi_stopped_fires_failing(lab: Lab) -> None:
    s1 = stack(lab, "lb1")
    lab.stop(s1.name("dpapi"))
    try:
        seen = goes_pending_then_firing(lab, "AnnouncerDataPlaneAPIFailing", "lb1")
        assert seen[-2:] == ["pending", "firing"], seen
        # The routes stay: a DataPlaneAPI outage withdraws nothing.
        assert (
            api(lab, "query", query='announcer_paths_announced{instance="lb1"}')["result"][0][
                "value"
            ][1]
            == "4"
        )
    finally:
        s1.start_emulator()
    clears(lab, "AnnouncerDataPlaneAPIFailing", "lb1")


def test_dashboard_queries_use_metrics_this_prometheus_has(lab: Lab) -> None:
    have = set(api(lab, "label/__name__/values"))
    used = {name for e in dashboard_exprs() for name in metric_names(e)}
    # Families that exist only once something happened (a drain, a peer alarm, a
    # local probe failure) have no series in a quiet lab; everything else must.
    only_on_events = {
        "announcer_vip_drain",
        "announcer_bgp_peer_alarm",
        "announcer_check_local_failures_total",
    }
    assert used - only_on_events <= have, sorted(used - only_on_events - have)
