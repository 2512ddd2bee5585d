"""Metrics without sockets: the series of the counters and the per-VIP page text.

The server and its limits, on real sockets, are in tests/adapters/test_metrics_endpoint.py.
"""

from __future__ import annotations

import ipaddress
import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from announcer.health import State
from announcer.metrics import Metrics, _vip_text
from announcer.model import Route, host_prefix
from announcer.planner import Drain
from announcer.status import Snapshot
from tests.support.fakes import render

CHECKS = [
    ("http", True, 0.0004),
    ("http", False, 0.3),
    ("tcp", True, 0.002),
    ("http", True, 7.0),
    ("command", False, 1.2),
    ("http", True, 0.0004),
]


def series(page: bytes) -> list[str]:
    """The check series of a scrape, without the creation timestamps (they differ)."""
    lines = page.decode().splitlines()
    return [
        line
        for line in lines
        if re.match(r"(# (HELP|TYPE) )?announcer_check", line) and "_created" not in line
    ]


def test_check_done_exposes_the_same_series_as_labelled_metrics() -> None:
    bound = Metrics()
    plain = Metrics()
    for kind, ok, duration in CHECKS:
        bound.check_done(kind, ok, duration)
        plain.checks.labels(kind, "ok" if ok else "fail").inc()
        plain.check_seconds.labels(kind).observe(duration)
    expected = series(render(plain))
    assert series(render(bound)) == expected
    assert 'announcer_checks_total{kind="http",result="ok"} 3.0' in expected
    assert 'announcer_checks_total{kind="http",result="fail"} 1.0' in expected
    assert 'announcer_check_duration_seconds_count{kind="http"} 4.0' in expected
    assert 'announcer_check_duration_seconds_bucket{kind="http",le="0.0005"} 2.0' in expected
    # The created series exist for the same label sets.
    created = [line.split(" ")[0] for line in render(bound).decode().splitlines()]
    assert 'announcer_checks_created{kind="tcp",result="ok"}' in created


def test_no_series_before_a_check_of_that_kind_and_result() -> None:
    m = Metrics()
    m.check_done("http", True, 0.001)
    page = render(m).decode()
    assert 'announcer_checks_total{kind="http",result="ok"} 1.0' in page
    assert 'result="fail"' not in page
    assert 'kind="tcp"' not in page


# ------------------------------------------------------------------ the page


def test_per_vip_text_is_what_prometheus_client_writes() -> None:
    """_vip_text writes the per-VIP families by hand; prometheus_client must agree."""
    a = [ipaddress.ip_address(x) for x in ("192.0.2.10", "2001:db8::10", "192.0.2.11")]
    snap = Snapshot(
        addresses=a,
        states=[State.UP, State.FALLING, State.DOWN],
        wanted=[Route(host_prefix(a[0])), Route(host_prefix(a[1])), None],  # .10 and ::10 announced
        drains=[Drain.NONE, Drain.DRAINING, Drain.DRAINED],
        paths=2,
        drained=(False, False, False),
        gobgp_ok=True,
        synced=True,
        peers=[],
        dataplane_ok=True,
        dataplane_last_ok=None,
        last_sync=None,
        peer_alarms={},
        held=0,
        state_saved=True,
    )

    class Reference:
        def collect(self) -> list[Metric]:
            state = GaugeMetricFamily(
                "announcer_vip_state",
                "1 for each VIP, labelled with its state",
                labels=["vip", "state"],
            )
            ann = GaugeMetricFamily(
                "announcer_vip_announced",
                "Whether announcer wants the VIP's route",
                labels=["vip"],
            )
            drain = GaugeMetricFamily(
                "announcer_vip_drain",
                "1 for each drained VIP, with its phase",
                labels=["vip", "phase"],
            )
            for addr, s, w, d in zip(a, snap.states, snap.announced, snap.drains, strict=True):
                state.add_metric([str(addr), str(s)], 1)
                ann.add_metric([str(addr)], 1 if w else 0)
                if d is not Drain.NONE:
                    drain.add_metric([str(addr), str(d)], 1)
            return [state, ann, drain]

    r = CollectorRegistry()
    r.register(Reference())
    assert _vip_text(snap).encode() == generate_latest(r)


def test_local_failures_are_counted_by_reason() -> None:
    m = Metrics()
    m.check_local_failure("emfile")
    m.check_local_failure("emfile")
    m.check_local_failure("loop_stall")
    page = render(m).decode()
    assert 'announcer_check_local_failures_total{reason="emfile"} 2.0' in page
    assert 'announcer_check_local_failures_total{reason="loop_stall"} 1.0' in page
