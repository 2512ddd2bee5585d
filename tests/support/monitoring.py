"""What the tests of monitoring/ share: the dashboard's queries and the announcer
metric names an expression uses (not the names of recording rules, `a:b:c`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "announcer.rules.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "announcer.json"
# Grafana's variables, replaced by what they expand to for promtool.
GRAFANA_VARS = {"$__rate_interval": "1m", "$instance": ".*"}
_METRIC = re.compile(r"(?<![:\w])(announcer_[a-z_]+)(?![:\w])")


def metric_names(expr: str) -> set[str]:
    """The announcer_* series an expression reads."""
    return set(_METRIC.findall(expr))


def dashboard_exprs() -> list[str]:
    """Every panel query of the dashboard, its Grafana variables expanded."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            exprs.append(expr)
    return exprs
