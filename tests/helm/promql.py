"""The metric names a PromQL expression reads, for checking dashboards and alerts against what the
operator really serves. Enough PromQL for the expressions this project writes: selectors,
aggregations with by/without, functions, ranges, comparisons, and Grafana's $variables."""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?")
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "inf",
    "nan",
}
# Series Prometheus makes itself for every target; no exporter serves them.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects (function names, keywords and labels excluded)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue  # a function, or a keyword
        names.add(name)
    return names


_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_MATCHER_LABELS = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def label_names(expr: str) -> set[str]:
    """Every label name `expr` matches on or groups by."""
    text = _STRINGS.sub('""', expr)
    names = set()
    for group in _LABEL_LISTS.findall(text):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    for matchers in _MATCHERS.findall(text):
        names |= set(_MATCHER_LABELS.findall(matchers))
    return names
