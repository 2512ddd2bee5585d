"""monitoring/: the Prometheus rules, checked and unit-tested by Debian's promtool.

* `promtool check rules` and `promtool test rules` (monitoring/tests/): every alert
  fires in one case and is quiet in another at the edges of its `for:`.
* Each alert has a severity we use, a summary and a description, and appears in the
  tests both firing and quiet (a new alert without tests fails here).
* Every announcer metric the rules use is one announcer exports (names read from
  announcer/metrics.py; the lab test reads a live scrape as well).
* A copy of the rules with one `for:` changed fails the tests: they can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.monitoring import DASHBOARD, RULES, dashboard_exprs, metric_names

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "monitoring" / "tests" / "announcer.rules.test.yml"
SEVERITIES = {"page", "warning", "info"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool not installed (scripts/deps installs Debian's prometheus)"
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def test_rules_check() -> None:
    cp = promtool("check", "rules", str(RULES))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"SUCCESS: {len(rules())} rules found" in cp.stdout, cp.stdout


def test_rules_unit_tests_pass() -> None:
    cp = promtool("test", "rules", TESTS.name, cwd=TESTS.parent)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "SUCCESS" in cp.stdout


def test_every_alert_is_documented_and_has_a_severity() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        for key in ("summary", "description"):
            assert len(rule["annotations"][key]) > 20, (name, key)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    doc = yaml.safe_load(TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(alerts()) <= firing, set(alerts()) - firing
    assert set(alerts()) <= quiet, set(alerts()) - quiet


def exported_metrics() -> set[str]:
    """Series names announcer exports: every family name in announcer/metrics.py, with
    _total for counters and _bucket/_sum/_count for the histogram."""
    source = (REPO / "announcer" / "metrics.py").read_text()
    names = set(re.findall(r"\"(announcer_\w+)\"", source))
    counters = re.findall(r"Counter\(\s*\"(announcer_\w+)\"", source)
    histograms = re.findall(r"Histogram\(\s*\"(announcer_\w+)\"", source)
    names |= {f"{c}_total" for c in counters}
    names |= {f"{h}_{s}" for h in histograms for s in ("bucket", "sum", "count")}
    return names


def test_rules_use_only_exported_metrics() -> None:
    exported = exported_metrics()
    assert "announcer_vip_announced" in exported and "announcer_gobgp_resyncs_total" in exported
    recorded = {r["record"] for r in rules() if "record" in r}
    used = {name for r in rules() for name in metric_names(r["expr"])} - recorded
    assert used and used <= exported, used - exported


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            'expr: up{job="announcer"} == 0\n        for: 2m',
            'expr: up{job="announcer"} == 0\n        for: 3m',
        ),
        ("severity: page", "severity: warning"),
        (
            "increase(announcer_gobgp_resyncs_total[15m]) > 3",
            "increase(announcer_gobgp_resyncs_total[15m]) > 5",
        ),
    ],
    ids=["for", "severity", "threshold"],
)
def test_the_unit_tests_can_fail(tmp_path: Path, old: str, new: str) -> None:
    text = RULES.read_text()
    assert text.count(old) == 1, old
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(TESTS, tmp_path / "tests" / TESTS.name)
    cp = promtool("test", "rules", TESTS.name, cwd=tmp_path / "tests")
    assert cp.returncode != 0 and "FAILED" in cp.stdout + cp.stderr, cp.stdout


# ---------------------------------------------------------------- the Grafana dashboard


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    assert not [e for e in exprs if "$" in e], "a Grafana variable this test does not expand"
    # promtool parses expressions as rules: one recording rule per panel query.
    group = {"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
    ]}  # fmt: skip
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    cp = promtool("check", "rules", str(path))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # And the check can fail: one broken query is refused.
    group["rules"].append({"record": "dashboard:broken", "expr": "sum by (vip announcer_vips"})
    path.write_text(yaml.safe_dump({"groups": [group]}))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_dashboard_uses_only_exported_metrics() -> None:
    used = {name for e in dashboard_exprs() for name in metric_names(e)}
    assert len(used) >= 20 and used <= exported_metrics(), used - exported_metrics()


def test_dashboard_panels_say_what_they_show() -> None:
    doc = json.loads(DASHBOARD.read_text())
    graphs = [p for p in doc["panels"] if p["type"] != "row"]
    assert graphs and all(len(p.get("description", "")) > 20 for p in graphs)
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
