"""The Grafana dashboard: loads in a schema check, lays out cleanly, and queries only metrics the worker exports."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from tests.unit.deploy.dashboard import (
    DASHBOARD,
    EXPORTED_FAMILIES,
    dashboard_metric_names,
    iter_panels,
    load_dashboard,
    metric_family,
    panel_queries,
    promql_metric_names,
)
from tests.unit.deploy.files import SCHEMAS, load_json


def dashboard_errors(dashboard: dict[str, Any]) -> list[str]:
    schema = load_json(SCHEMAS / "grafana-dashboard.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return [
        f"{e.json_path}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(dashboard)
    ]


def test_dashboard_passes_the_schema_check() -> None:
    assert dashboard_errors(load_dashboard()) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["panels"][1].update(type="graph-old"),
        lambda d: d["panels"][1]["targets"][0].pop("expr"),
        lambda d: d["panels"][1]["gridPos"].update(w=30),
        lambda d: d.pop("uid"),
        lambda d: d["panels"][1].update(targets=[]),
    ],
)
def test_the_schema_check_catches_mistakes(mutate: Any) -> None:
    broken = copy.deepcopy(load_dashboard())
    mutate(broken)
    assert dashboard_errors(broken)


def test_panels_query_only_metrics_the_worker_exports() -> None:
    names = dashboard_metric_names(DASHBOARD)
    assert names, "no metric found in the dashboard"
    assert {metric_family(n) for n in names} <= EXPORTED_FAMILIES, names
    for name in names:
        if name.endswith(("_bucket", "_sum", "_count")):
            assert name.rsplit("_", 1)[0].endswith("_ms"), f"{name}: only the timings are histograms"


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    families = {metric_family(n) for n in dashboard_metric_names(DASHBOARD)}
    # turn latency, errors by code, rooms, load, VAD lag, shed and usage
    assert families == EXPORTED_FAMILIES
    queries = [q for p in iter_panels(load_dashboard()) for q in panel_queries(p)]
    first_audio = [q for q in queries if "llmrtc_turn_first_audio_ms_bucket" in q]
    assert any("histogram_quantile(0.5," in q for q in first_audio)
    assert any("histogram_quantile(0.95," in q for q in first_audio)
    assert any("by (component, code)" in q and "llmrtc_errors_total" in q for q in queries)


def test_panel_ids_are_unique_and_the_grid_has_no_overlap() -> None:
    panels = list(iter_panels(load_dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_filters_by_the_worker_variable() -> None:
    dashboard = load_dashboard()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"instance"}
    for panel in iter_panels(dashboard):
        for expr in panel_queries(panel):
            assert '{instance=~"$instance"}' in expr, (panel["title"], expr)
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("histogram_quantile(0.95, sum by (le) (rate(a_ms_bucket[5m])))", {"a_ms_bucket"}),
        ("sum(rate(x_total[1m])) by (job) / on(instance) group_left(code) y", {"x_total", "y"}),
        ('z{code=~"a|b", path="{x}"} offset 5m', {"z"}),
        ("count(up) > bool 2 and on() absent(w)", {"up", "w"}),
        ("rate(q_total[$__rate_interval]) * 1e3", {"q_total"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names
