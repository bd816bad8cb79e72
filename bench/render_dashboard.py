"""Render the Grafana dashboard's panels to a PNG from a Prometheus holding a run's metrics.

Grafana is not needed: this reads ``deploy/grafana/llmrtc-dashboard.json``, runs every panel's PromQL through
a Prometheus HTTP API (``/api/v1/query_range``), and draws the panels with matplotlib on the dashboard's own
grid (24 columns), in Grafana's dark style. The image names its source and time range.

Three ways to get a Prometheus with the metrics:

1. One already running (the compose stack's, ``ssh -L 9090:127.0.0.1:9090 server``)::

       .venv/bin/python bench/render_dashboard.py --prometheus http://127.0.0.1:9090 --last 30m

2. Record a run here with Debian's ``prometheus`` (``apt-get install prometheus``): start the worker(s) with
   ``METRICS_PORT`` set, run this with their ``host:port`` while the conversations run, then it renders::

       .venv/bin/python bench/render_dashboard.py --scrape 127.0.0.1:9100 --duration 600 \\
           --data-dir /tmp/llmrtc-prom

   (``--scrape`` may repeat, one per worker; ``--scrape-interval`` defaults to 5 s.)

3. Render again later from that recorded data, without scraping (``--data-dir`` alone; the time range of the
   recording is used unless ``--last``/``--start`` is given)::

       .venv/bin/python bench/render_dashboard.py --data-dir /tmp/llmrtc-prom

The output defaults to ``docs/screenshots/dashboard.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "llmrtc-dashboard.json"
OUTPUT = ROOT / "docs" / "screenshots" / "dashboard.png"

# Grafana's dark theme, near enough.
BG = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
GRID = "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#ff9830"]


class PrometheusError(RuntimeError):
    """Prometheus answered with an error, or could not be reached or started."""


@dataclass
class Series:
    """One line of a panel: its legend and its (unix time, value) points."""

    legend: str
    times: list[float]
    values: list[float]


@dataclass
class PanelData:
    panel: dict[str, Any]
    series: list[Series] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------- queries
def substitute(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    """Grafana's template variables replaced the way Grafana does for a Prometheus query."""
    out = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    leftover = re.search(r"\$\{?[A-Za-z_]\w*", out)
    if leftover:
        raise ValueError(f"no value for the dashboard variable {leftover.group(0)!r} in {expr!r}")
    return out


def legend(fmt: str, labels: dict[str, str], expr: str) -> str:
    if not fmt:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return labels.get("__name__", expr) + (f"{{{inner}}}" if inner else "")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def api_get(base: str, path: str, params: dict[str, str], timeout: float = 30.0) -> Any:
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise PrometheusError(f"{url}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusError(f"{url}: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    data = api_get(
        base,
        "/api/v1/query_range",
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
    )
    result: list[dict[str, Any]] = data["result"]
    return result


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def collect(
    dashboard: dict[str, Any],
    base: str,
    start: float,
    end: float,
    step: float,
    variables: dict[str, str] | None = None,
    rate_interval: str = "1m",
) -> list[PanelData]:
    """Every panel with the series its queries return over [start, end]."""
    values = {v["name"]: ".*" for v in dashboard.get("templating", {}).get("list", [])}
    values.update(variables or {})
    out = []
    for panel in panels(dashboard):
        data = PanelData(panel)
        for target in panel.get("targets", []):
            expr = substitute(str(target["expr"]), values, rate_interval)
            for item in query_range(base, expr, start, end, step):
                points = [(float(t), float(v)) for t, v in item["values"]]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if points:
                    data.series.append(
                        Series(
                            legend(str(target.get("legendFormat", "")), item["metric"], expr),
                            [t for t, _ in points],
                            [v for _, v in points],
                        )
                    )
        out.append(data)
    return out


# ------------------------------------------------------------------------------------------------- drawing
def format_value(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value / 1000:.2f} s" if abs(value) >= 1000 else f"{value:.0f} ms"
    if unit == "s":
        return f"{value / 60:.1f} min" if abs(value) >= 600 else f"{value:.1f} s"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def render(
    data: Sequence[PanelData], out: Path, *, title: str, subtitle: str, row_height: float = 0.42
) -> None:
    """Draw the panels on the dashboard grid into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = max(p.panel["gridPos"]["y"] + p.panel["gridPos"]["h"] for p in data)
    width, header = 20.0, 0.9
    height = rows * row_height + header
    fig = plt.figure(figsize=(width, height), dpi=100, facecolor=BG)
    fig.text(0.01, 1 - 0.35 / height, title, color=TEXT, fontsize=16, fontweight="bold", va="center")
    fig.text(0.99, 1 - 0.35 / height, subtitle, color=MUTED, fontsize=10, va="center", ha="right")
    pad_x, pad_y = 0.004, 0.06 / height

    def box(grid: dict[str, int]) -> tuple[float, float, float, float]:
        left = grid["x"] / 24 + pad_x
        w = grid["w"] / 24 - 2 * pad_x
        top = 1 - (header + grid["y"] * row_height) / height
        h = grid["h"] * row_height / height - 2 * pad_y
        return left, top - h - pad_y, w, h

    for item in data:
        panel, grid = item.panel, item.panel["gridPos"]
        left, bottom, w, h = box(grid)
        if panel["type"] == "row":
            fig.text(
                left, bottom + h / 2, panel["title"], color=TEXT, fontsize=13, fontweight="bold", va="center"
            )
            continue
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = str(defaults.get("unit", "none"))
        frame = fig.add_axes((left, bottom, w, h))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        frame.text(
            0.012,
            0.96,
            panel["title"],
            color=TEXT,
            fontsize=10.5,
            fontweight="bold",
            va="top",
            transform=frame.transAxes,
        )
        if not item.series:
            frame.text(
                0.5,
                0.45,
                "No data",
                color=MUTED,
                fontsize=12,
                ha="center",
                va="center",
                transform=frame.transAxes,
            )
            continue
        if panel["type"] == "stat":
            last = item.series[0].values[-1]
            color = PALETTE[0]
            for step in defaults.get("thresholds", {}).get("steps", []):
                if step["value"] is None or last >= step["value"]:
                    color = {"green": PALETTE[0], "orange": PALETTE[3], "red": PALETTE[4]}.get(
                        step["color"], step["color"]
                    )
            spark = fig.add_axes((left + 0.01 * w, bottom + 0.05 * h, 0.98 * w, 0.35 * h))
            spark.axis("off")
            spark.fill_between(
                [t / 86400 for t in item.series[0].times],  # matplotlib dates: days since 1970-01-01
                item.series[0].values,
                color=color,
                alpha=0.25,
                lw=0,
            )
            frame.text(
                0.5,
                0.5,
                format_value(last, unit),
                color=color,
                fontsize=26,
                fontweight="bold",
                ha="center",
                va="center",
                transform=frame.transAxes,
            )
            continue
        margin = 0.75 / width  # room for the y labels, in figure width
        plot = fig.add_axes((left + margin, bottom + 0.2 * h, w - margin - 0.15 / width, 0.62 * h))
        plot.set_facecolor(PANEL)
        for i, series in enumerate(item.series):
            times = [t / 86400 for t in series.times]  # matplotlib dates: days since 1970-01-01
            plot.plot(times, series.values, color=PALETTE[i % len(PALETTE)], lw=1.6, label=series.legend)
        for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
            plot.axhline(step["value"], color=PALETTE[4], lw=1, ls="--")
        if "min" in defaults:
            plot.set_ylim(bottom=defaults["min"])
        if "max" in defaults:
            plot.set_ylim(top=defaults["max"] * 1.05)
        plot.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, unit=unit: format_value(v, unit)))
        span = max(s.times[-1] for s in item.series) - min(s.times[0] for s in item.series)
        dates = mdates.DateFormatter("%H:%M:%S" if span < 600 else "%H:%M", tz=UTC)  # type: ignore[no-untyped-call]
        plot.xaxis.set_major_formatter(dates)
        plot.tick_params(colors=MUTED, labelsize=8)
        plot.grid(color=GRID, lw=0.6)
        for spine in plot.spines.values():
            spine.set_visible(False)
        plot.legend(
            loc="upper left", bbox_to_anchor=(0, -0.14), ncol=4, frameon=False, fontsize=8, labelcolor=TEXT
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=BG)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- a local Prometheus
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def local_prometheus(
    data_dir: Path, targets: Sequence[str] = (), scrape_interval: str = "5s", binary: str | None = None
) -> Iterator[str]:
    """Run Debian's ``prometheus`` on ``data_dir`` (scraping ``targets`` as job llmrtc-worker); yields its URL."""
    exe = binary or shutil.which("prometheus")
    if not exe:
        raise PrometheusError("prometheus is not installed (apt-get install prometheus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "prometheus.yml"
    scrape = (
        [
            {
                "job_name": "llmrtc-worker",
                "scrape_interval": scrape_interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ]
        if targets
        else []
    )
    config.write_text(json.dumps({"global": {"scrape_interval": scrape_interval}, "scrape_configs": scrape}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data_dir / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {proc.returncode}; see {data_dir / 'prometheus.log'}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise PrometheusError("prometheus did not become ready within 30 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def recorded_range(base: str) -> tuple[float, float] | None:
    """The time range a Prometheus's in-memory head block covers (the last two hours or so of a recording)."""
    head = api_get(base, "/api/v1/status/tsdb", {}).get("headStats", {})
    if not head.get("numSeries") or head.get("minTime", 0) <= 0:
        return None
    return float(head["minTime"]) / 1000, float(head["maxTime"]) / 1000


# ------------------------------------------------------------------------------------------------- CLI
def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prometheus", help="base URL of a running Prometheus")
    source.add_argument(
        "--scrape", action="append", default=[], help="host:port of a worker's METRICS_PORT (repeat)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="where the local Prometheus keeps its data (kept afterwards)"
    )
    parser.add_argument(
        "--duration", type=parse_duration, default=600.0, help="with --scrape: how long to record"
    )
    parser.add_argument("--scrape-interval", default="5s")
    parser.add_argument(
        "--last", type=parse_duration, help="render the last DURATION (default: the recorded range)"
    )
    parser.add_argument(
        "--step", type=parse_duration, help="query resolution (default: range / 240, at least 1s)"
    )
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for")
    parser.add_argument("--var", action="append", default=[], help="dashboard variable, NAME=REGEX")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    dashboard = json.loads(args.dashboard.read_text())
    variables = dict(v.split("=", 1) for v in args.var)

    def draw(base: str, label: str) -> int:
        end = time.time()
        if args.last:
            start = end - args.last
        else:
            found = recorded_range(base)
            if found is None:
                print("this Prometheus holds no recent samples: pass --last DURATION", file=sys.stderr)
                return 1
            start, end = found
        step = args.step or max(1.0, (end - start) / 240)
        data = collect(dashboard, base, start, end, step, variables, args.rate_interval)
        empty = [d.panel["title"] for d in data if d.panel["type"] != "row" and not d.series]
        span = f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M}-{datetime.fromtimestamp(end, UTC):%H:%M} UTC"
        render(data, args.out, title=str(dashboard.get("title", "dashboard")), subtitle=f"{label} · {span}")
        print(
            f"wrote {args.out} ({len(data)} panels, {len(empty)} without data{': ' + ', '.join(empty) if empty else ''})"
        )
        return 0

    if args.prometheus:
        return draw(args.prometheus, f"Prometheus {args.prometheus}")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="llmrtc-prom-"))
    with local_prometheus(data_dir, args.scrape, args.scrape_interval) as base:
        if args.scrape:
            print(
                f"recording {', '.join(args.scrape)} for {args.duration:g} s into {data_dir} (Ctrl-C ends early)"
            )
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(args.duration)
        return draw(base, f"recorded from {', '.join(args.scrape) or data_dir}")


if __name__ == "__main__":
    sys.exit(main())
