"""Reading the PromQL of the dashboard and the alert rules: expressions, metric names, operands."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamkm.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# What Grafana puts in place of its built-in variables. A short window suits a test whose
# Prometheus scrapes every second; $__rate_interval is at least four scrape intervals.
GRAFANA_VARIABLES = {"__rate_interval": "15s", "__interval": "5s", "__range": "1m"}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*(?![\w:]|\s*\()")
_SET_OPERATOR = re.compile(r"(?:and|or|unless)\b")
_COMPARISON = ("==", "!=", ">=", "<=", ">", "<")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL target of a dashboard panel."""

    panel: str
    ref_id: str
    expr: str


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of alerts.yml."""

    name: str
    expr: str
    rule: dict


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict) -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[AlertRule]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [
        AlertRule(rule["alert"], rule["expr"], rule)
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    ]


def substitute_grafana_variables(expr: str) -> str:
    """The query Grafana would send; KeyError for a variable this stack does not define."""
    return _VARIABLE.sub(lambda m: GRAFANA_VARIABLES[m.group(1)], expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside label matchers, ranges,
    grouping clauses and strings that are neither functions nor keywords."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def compared_operands(expr: str) -> list[str]:
    """The parts of an alert expression that carry data, without their thresholds.

    The top-level ``and``/``or``/``unless`` operands, each cut at its top-level comparison:
    ``A > 0 and B > 1000`` gives ``[A, B]``. An alert fires on these series passing a
    threshold, so under normal load the whole expression is rightly empty; the operands
    must not be, or the alert could never fire.
    """
    operands = []
    for part in _split_top_level(expr, _at_set_operator):
        cut = _find_top_level(part, _at_comparison)
        operands.append((part[:cut] if cut is not None else part).strip())
    return operands


def _at_set_operator(text: str, i: int) -> int:
    if (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and (
        m := _SET_OPERATOR.match(text, i)
    ):
        return m.end() - i
    return 0


def _at_comparison(text: str, i: int) -> int:
    for op in _COMPARISON:
        if text.startswith(op, i):
            return len(op)
    return 0


def _scan_top_level(text: str, at_operator) -> Iterator[tuple[int, int]]:
    """(start, length) of each operator outside brackets and strings."""
    depth, quote, i = 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (n := at_operator(text, i)):
            yield i, n
            i += n
            continue
        i += 1


def _split_top_level(text: str, at_operator) -> list[str]:
    parts, start = [], 0
    for i, n in _scan_top_level(text, at_operator):
        parts.append(text[start:i])
        start = i + n
    parts.append(text[start:])
    return parts


def _find_top_level(text: str, at_operator) -> int | None:
    return next((i for i, _ in _scan_top_level(text, at_operator)), None)
