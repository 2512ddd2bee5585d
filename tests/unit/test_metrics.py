"""Metrics fed per check: the series exposed are those of plain labelled counters."""

from __future__ import annotations

import re

from announcer.metrics import Metrics

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
    expected = series(plain.render())
    assert series(bound.render()) == expected
    assert 'announcer_checks_total{kind="http",result="ok"} 3.0' in expected
    assert 'announcer_checks_total{kind="http",result="fail"} 1.0' in expected
    assert 'announcer_check_duration_seconds_count{kind="http"} 4.0' in expected
    assert 'announcer_check_duration_seconds_bucket{kind="http",le="0.0005"} 2.0' in expected
    # The created series exist for the same label sets.
    created = [line.split(" ")[0] for line in bound.render().decode().splitlines()]
    assert 'announcer_checks_created{kind="tcp",result="ok"}' in created


def test_no_series_before_a_check_of_that_kind_and_result() -> None:
    m = Metrics()
    m.check_done("http", True, 0.001)
    page = m.render().decode()
    assert 'announcer_checks_total{kind="http",result="ok"} 1.0' in page
    assert 'result="fail"' not in page
    assert 'kind="tcp"' not in page
