"""Read the Grafana dashboard: its panels, their PromQL queries and the metric names those queries use.

``dashboard_metric_names(path)`` is what a test against a real ``/metrics`` scrape reuses: every name it returns
must appear in the scrape (histogram names come back as the series the query reads, e.g. ``..._bucket``), and
``scrape_sample_names(text)`` gives the names a scrape holds::

    assert dashboard_metric_names() <= scrape_sample_names(metrics_text)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "llmrtc-dashboard.json"

EXPORTED_FAMILIES: frozenset[str] = frozenset(
    {
        # histograms in milliseconds (_bucket, _sum, _count)
        "llmrtc_turn_first_audio_ms",
        "llmrtc_stt_duration_ms",
        "llmrtc_llm_ttft_ms",
        "llmrtc_tts_ttfb_ms",
        "llmrtc_turn_duration_ms",
        "llmrtc_vad_lag_ms",
        # counters
        "llmrtc_turns_total",
        "llmrtc_errors_total",
        "llmrtc_turn_interruptions_total",
        "llmrtc_worker_shed_total",
        "llmrtc_llm_tokens_total",
        "llmrtc_tts_characters_total",
        "llmrtc_stt_audio_seconds_total",
        "llmrtc_vad_windows_total",
        # gauges
        "llmrtc_worker_rooms",
        "llmrtc_worker_humans",
        "llmrtc_worker_load",
    }
)
"""The metric families the worker exports (the names agreed for issue 15; see llmrtc.metrics.MetricNames)."""

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that are not metric names: aggregation modifiers, set operators, literals.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "atan2"}
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_TOKEN = re.compile(
    r"[A-Za-z_:][A-Za-z0-9_:]*|[0-9][A-Za-z0-9_.]*|\(|\)|\{|\}|\[|\]|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`[^`]*`|\S"
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (selectors), without functions, labels or keywords.

    Grafana variables (``$instance``, ``$__rate_interval``) may appear inside label matchers and ranges.
    """
    names: set[str] = set()
    tokens = _TOKEN.findall(expr)
    depth_brace = depth_bracket = 0
    skip_group_depth: int | None = None  # the paren depth of a by(...)/on(...) label list
    paren = 0
    for i, tok in enumerate(tokens):
        if tok == "{":
            depth_brace += 1
            continue
        if tok == "}":
            depth_brace -= 1
            continue
        if tok == "[":
            depth_bracket += 1
            continue
        if tok == "]":
            depth_bracket -= 1
            continue
        if depth_brace or depth_bracket:
            continue  # label matchers and range durations
        if tok == "(":
            paren += 1
            continue
        if tok == ")":
            if skip_group_depth == paren:
                skip_group_depth = None
            paren -= 1
            continue
        if skip_group_depth is not None or not re.match(r"[A-Za-z_:]", tok):
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok.lower() in _GROUPING:
            if nxt == "(":
                skip_group_depth = paren + 1
            continue
        if tok.lower() in _KEYWORDS or nxt == "(" or nxt.lower() in ("by", "without"):
            continue  # a keyword, a function call, or an aggregation (`sum by (le) (...)`)
        names.add(tok)
    return names


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(panel: dict[str, Any]) -> list[str]:
    return [str(t["expr"]) for t in panel.get("targets", []) if t.get("expr")]


def template_queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL inside template variables (``label_values(metric, label)`` reads ``metric``)."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_]\w*\s*\)\s*", text)
        if match:
            out.append(match.group(1))
        elif text and var.get("type") == "query":
            out.append(text)
    return out


def dashboard_metric_names(path: Path | str = DASHBOARD) -> set[str]:
    """Every metric name the dashboard's panels and variables query (series names, e.g. ``x_ms_bucket``)."""
    dashboard = load_dashboard(Path(path))
    names: set[str] = set()
    for panel in iter_panels(dashboard):
        for expr in panel_queries(panel):
            names |= promql_metric_names(expr)
    for expr in template_queries(dashboard):
        names |= promql_metric_names(expr)
    return names


def metric_family(series: str) -> str:
    """``llmrtc_x_ms_bucket`` -> ``llmrtc_x_ms``; counters and gauges are their own family."""
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in EXPORTED_FAMILIES:
            return series[: -len(suffix)]
    return series


def scrape_sample_names(text: str) -> set[str]:
    """Every sample name in a Prometheus text exposition (``x_bucket``, ``x_sum``, ``x_total``, gauges ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
