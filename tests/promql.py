"""Metric names in PromQL expressions and the queries of a Grafana dashboard, for the tests
that hold dashboards and rules to the metrics the operator really exports."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# Words of PromQL that are not metric names (aggregation modifiers, set operators, ...).
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects: identifiers that are not functions (followed by
    "("), label names (inside {} or by/without (...)), strings, durations or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges: [5m], [$__rate_interval]
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    text = re.sub(r"(?<![\w.])(?:\d+(?:ms|[smhdwy]))+\b", "", text)  # durations: offset 5m
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", "", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Every PromQL query of a dashboard: panel targets (rows included) and variables."""

    def panels(items: Any) -> Iterator[Mapping[str, Any]]:
        for panel in items or []:
            yield panel
            yield from panels(panel.get("panels"))

    for panel in panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield str(target["expr"])
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        if variable.get("type") == "query" and text:
            inner = re.fullmatch(r"\s*label_values\((.*?)(?:,\s*\w+)?\)\s*", str(text))
            yield inner.group(1) if inner else str(text)
