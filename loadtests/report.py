"""report.html: the verdict and the run's timeline as charts, in one file that opens without a network.

`python -m loadtests.report RUN_DIR` rebuilds RUN_DIR/report.html from RUN_DIR/verdict.json;
`python -m loadtests.report --compare RUN_A RUN_B` writes one page with both runs on the same axes.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

# Chart size: wide enough for a 2-minute run at one point a second, short enough for six charts on a laptop.
CHART_HEIGHT_PX = 300
# Faults are drawn as translucent spans: readable through, visible at a glance.
FAULT_COLOR, FAULT_OPACITY = "crimson", 0.15
# Runs of a comparison: solid for the first, dashed for the second.
COMPARE_DASHES = ("solid", "dash")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Chart:
    """One chart: its title, y-axis titles, and (timeline key, trace name, axis) per line; axis 2 is the right one."""

    key: str
    title: str
    y_title: str
    traces: tuple[tuple[str, str, int], ...]
    y2_title: str = ""
    scale: float = 1.0  # the samples' unit per plotted unit (bytes -> KiB)


CHARTS = (
    Chart(
        "rate",
        "Lines per second: written by the users vs landed in PostgreSQL",
        "lines/s",
        (("written_per_s", "written/s", 1), ("landed_per_s", "landed/s", 1)),
    ),
    Chart(
        "cumulative",
        "Lines written vs rows landed (cumulative)",
        "lines",
        (
            ("lines_written", "written", 1),
            ("rows_landed", "landed", 1),
            ("lines_dropped", "dropped", 1),
            ("rejected", "rejected", 1),
        ),
    ),
    Chart(
        "pipe",
        "Pipe fill against its capacity",
        "KiB",
        (("pipe_bytes", "bytes waiting", 1), ("pipe_capacity", "capacity", 1)),
        scale=1024,
    ),
    Chart(
        "latency",
        "Write latency of each second, and time blocked on a full pipe",
        "ms",
        (
            ("latency_p50_ms", "p50", 1),
            ("latency_p99_ms", "p99", 1),
            ("latency_max_ms", "max", 1),
            ("blocked_s", "blocked s (all users)", 2),
        ),
        y2_title="seconds blocked",
    ),
    Chart(
        "collector",
        "Collector memory and CPU",
        "RSS MiB",
        (("collector_rss_mib", "RSS MiB", 1), ("collector_cpu_percent", "CPU %", 2)),
        y2_title="CPU %",
    ),
    Chart(
        "journal",
        "Journal on disk and its uncommitted backlog; the database's state",
        "MiB",
        (
            ("journal_bytes", "journal MiB", 1),
            ("journal_lag_bytes", "uncommitted MiB", 1),
            ("database_up", "database up (1) / retrying (0)", 2),
        ),
        y2_title="database up",
        scale=MIB,
    ),
)


def figure(chart: Chart, runs: Sequence[tuple[str, dict]]) -> go.Figure:
    """One chart of one or more runs (name, verdict dict), faults shaded."""
    fig = go.Figure()
    for index, (name, verdict) in enumerate(runs):
        samples = verdict.get("timeline") or []
        xs = [s["t_s"] for s in samples]
        for key, label, axis in chart.traces:
            ys = [_scaled(s.get(key), chart.scale if axis == 1 else 1.0) for s in samples]
            if all(y is None for y in ys):
                continue
            shown = f"{name}: {label}" if len(runs) > 1 else label
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    name=shown,
                    mode="lines",
                    yaxis="y2" if axis == 2 else "y",
                    line={
                        "dash": COMPARE_DASHES[index % len(COMPARE_DASHES)],
                        "shape": "hv" if key == "database_up" else "linear",
                    },
                )
            )
        for span in verdict.get("fault_spans") or []:
            label = f"{name}: {span['fault']}" if len(runs) > 1 else span["fault"]
            if span["end_s"] > span["start_s"]:
                fig.add_vrect(
                    x0=span["start_s"],
                    x1=span["end_s"],
                    fillcolor=FAULT_COLOR,
                    opacity=FAULT_OPACITY,
                    line_width=0,
                    annotation_text=label,
                    annotation_position="top left",
                )
            else:
                fig.add_vline(
                    x=span["start_s"],
                    line_color=FAULT_COLOR,
                    line_dash="dot",
                    annotation_text=label,
                    annotation_position="top left",
                )
        drain = next((s["t_s"] for s in samples if s.get("phase") != "load"), None)
        if drain is not None and len(runs) == 1:
            fig.add_vline(
                x=drain,
                line_color="gray",
                line_dash="dash",
                annotation_text="users stopped",
                annotation_position="bottom right",
            )
    layout: dict = {
        "title": {"text": chart.title},
        "height": CHART_HEIGHT_PX,
        "margin": {"t": 50, "b": 40},
        "xaxis": {"title": {"text": "seconds since the run started"}},
        "yaxis": {"title": {"text": chart.y_title}, "rangemode": "tozero"},
        "legend": {"orientation": "h", "y": -0.25},
    }
    if chart.y2_title:
        layout["yaxis2"] = {
            "title": {"text": chart.y2_title},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
        }
    fig.update_layout(**layout)
    return fig


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value / scale, 3)


def charts_html(runs: Sequence[tuple[str, dict]]) -> str:
    """Every chart as a div with its plotting call (plotly.js itself comes once, in the page's head)."""
    parts = []
    for chart in CHARTS:
        fig = figure(chart, runs)
        if not fig.data:
            continue  # nothing measured (no journal, no collector of ours): no empty chart
        parts.append(
            f'<section class="chart" data-chart="{chart.key}">'
            + fig.to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=f"chart-{chart.key}",
                config={"displaylogo": False, "responsive": True},
            )
            + "</section>"
        )
    if not parts:
        parts.append("<p>No timeline in this verdict (a run before timelines, or one that never started).</p>")
    return "\n".join(parts)


def verdict_html(v: dict) -> str:
    """The verdict's head: status, figures, expectations, faults, then the per-source table."""
    status = v.get("status", "")
    totals = v.get("totals") or {}
    latency = v.get("latency") or {}
    out = [
        f'<h1 class="status {html.escape(status.lower())}">{html.escape(status or "running")} · run '
        f"{html.escape(str(v.get('run_id', '')))} ({html.escape(str(v.get('scenario', '')))})</h1>"
    ]
    if totals:
        out.append(
            "<p>"
            + html.escape(
                f"{v.get('duration_s', 0)} s; sent {totals.get('sent')}, landed {totals.get('landed')}, lost "
                f"{totals.get('lost')}, duplicated {totals.get('duplicated')}, torn or rejected "
                f"{totals.get('torn_or_rejected')}; {v.get('lines_per_s')} lines/s written, "
                f"{v.get('rows_per_s')} rows/s end to end; write latency p50 {latency.get('p50_ms')} ms, "
                f"p99 {latency.get('p99_ms')} ms, max "
                f"{latency.get('max_ms')} ms; blocked {latency.get('blocked_s')} s; collector peak RSS "
                f"{v.get('collector_peak_rss_mib')} MiB"
            )
            + "</p>"
        )
    out.extend(f'<p class="failure">{html.escape(f)}</p>' for f in v.get("failures") or [])
    if v.get("expectations"):
        out.append(
            _table(
                ["", "expectation", "observed", "expected", "what"],
                (
                    ["✓" if e["passed"] else "✗", e["name"], e["observed"], f"{e['op']} {e['threshold']}", e["what"]]
                    for e in v["expectations"]
                ),
                "expectations",
            )
        )
    if v.get("faults"):
        out.append("<ul class=faults>" + "".join(f"<li>fault: {html.escape(f)}</li>" for f in v["faults"]) + "</ul>")
    return "\n".join(out)


def sources_html(v: dict) -> str:
    """The per-source table."""
    if not v.get("sources"):
        return ""
    cols = ["source", "generated", "sent", "dropped", "landed", "missing", "duplicated", "out_of_order", "corrupt"]
    return "<h2>Per source</h2>" + _table(cols, ([s.get(c, "") for c in cols] for s in v["sources"]), "sources")


def _table(header: Sequence[str], rows: Iterable[Sequence], css: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1.pass{color:#17803d}h1.fail,h1.interrupted{color:#b3261e}.failure{color:#b3261e;font-weight:bold}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.runs{display:flex;gap:2em}.runs>div{flex:1}"""


def page(title: str, body: str, refresh_s: int | None = None) -> str:
    """A whole HTML page with plotly.js inlined: it opens from disk, offline."""
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{refresh}<title>{html.escape(title)}'
        f"</title><style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>\n{body}\n</body></html>\n"
    )


def build(verdict: dict, refresh_s: int | None = None) -> str:
    """report.html of one run."""
    body = verdict_html(verdict) + "\n" + charts_html([("run", verdict)]) + "\n" + sources_html(verdict)
    return page(f"namedpiper run {verdict.get('run_id', '')}", body, refresh_s)


def build_compare(a: dict, b: dict) -> str:
    """Two runs: their verdicts side by side, then every chart with both runs on the same axes."""
    names = (f"A {a.get('run_id', '')}", f"B {b.get('run_id', '')}")
    heads = "".join(
        f"<div><h2>{html.escape(n)}</h2>{verdict_html(v)}</div>" for n, v in zip(names, (a, b), strict=True)
    )
    body = f'<div class="runs">{heads}</div>\n' + charts_html(list(zip(names, (a, b), strict=True)))
    return page(f"namedpiper: {names[0]} vs {names[1]}", body)


def write_html(verdict: dict, path: Path) -> Path:
    """Write report.html for a verdict."""
    path.write_text(build(verdict), encoding="utf-8")
    return path


def load_verdict(run_dir: Path) -> dict:
    """RUN_DIR/verdict.json; ValueError with the path and the fix when it is missing or not a verdict."""
    path = run_dir / "verdict.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(
            f"cannot read {path}: {exc.strerror}; give a run's report folder, e.g. reports/<run id>"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); was the run interrupted while writing it?") from None
    if not isinstance(data, dict) or "run_id" not in data:
        raise ValueError(f"{path} is not a namedpiper verdict (no run_id)")
    return data


def main(argv: list[str] | None = None) -> int:
    """Rebuild a run's report.html, or compare two runs; exit 2 with one line on a bad folder."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run's report folder (reports/<run id>)")
    parser.add_argument(
        "--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"), help="two runs' report folders: one page with both"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="where to write (default RUN_DIR/report.html, or compare-A-B.html beside RUN_B)",
    )
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.compare is None):
        parser.error("give RUN_DIR or --compare RUN_A RUN_B")
    try:
        if args.compare:
            a, b = (load_verdict(d) for d in args.compare)
            out = args.output or args.compare[1].parent / f"compare-{a['run_id']}-{b['run_id']}.html"
            out.write_text(build_compare(a, b), encoding="utf-8")
        else:
            out = write_html(load_verdict(args.run_dir), args.output or args.run_dir / "report.html")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
