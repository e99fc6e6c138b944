"""Metric names used by a PromQL expression (for checking dashboards and alert rules).

A small lexer, not a parser: string literals, label matchers ``{...}``, range/subquery brackets
``[...]`` and the label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/
``group_right`` are removed; every remaining identifier that is not a function call, keyword or
number is a metric name. Enough for the expressions in ``deploy/`` (checked by the tests).
"""

from __future__ import annotations

import re

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names selected by ``expr`` (e.g. ``{"ocrstream_messages_in_total", "up"}``)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):  # not the m of 10m
        name = match.group()
        if name.lower() in KEYWORDS or re.match(r"\s*\(", text[match.end():]):
            continue
        if text[max(0, match.start() - 1)] == "$":  # a Grafana variable like $__rate_interval
            continue
        names.add(name)
    return names


def selectors(expr: str) -> list[str]:
    """The instant-vector selectors of ``expr`` with their label matchers, e.g.
    ``ocrstream_group_lag{stage=~".*"}`` (Grafana variables must be substituted first)."""
    found = []
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?", expr):
        name = match.group(1)
        if name in metric_names(expr) and not re.match(r"\s*\(", expr[match.end():]):
            found.append(name + (match.group(2) or ""))
    return sorted(set(found))
