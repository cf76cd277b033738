"""One more collector run under cProfile or pyinstrument, and its top entries as data and text."""

from __future__ import annotations

import pstats
import sys
from pathlib import Path

from loadtests.bench.collector import run_collector
from loadtests.bench.dataset import Bench

# A collector run under a profiler: `python -c CODE OUTFILE --fifo ...`.
PROFILE_CODE = {
    "cprofile": """
import cProfile, sys
from reference.collector.cli import main
out = sys.argv.pop(1)
profiler = cProfile.Profile()
profiler.enable()
try:
    code = main(sys.argv[1:])
finally:
    profiler.disable()
    profiler.dump_stats(out)
raise SystemExit(code)
""",
    "pyinstrument": """
import sys
from pyinstrument import Profiler
from reference.collector.cli import main
out = sys.argv.pop(1)
profiler = Profiler(interval=0.0005)
profiler.start()
try:
    code = main(sys.argv[1:])
finally:
    profiler.stop()
    with open(out, "w") as f:
        f.write(profiler.output_text(unicode=False, color=False))
raise SystemExit(code)
""",
}


def top_entries(stats: pstats.Stats, count: int) -> list[dict]:
    """The count functions with the most own time, as plain data."""
    # total_tt and stats are documented pstats attributes that typeshed does not declare.
    total = getattr(stats, "total_tt", 0) or 1e-9
    table = getattr(stats, "stats", {})
    entries = []
    for func in sorted(table, key=lambda f: table[f][2], reverse=True)[:count]:
        _cc, calls, own, cumulative, _callers = table[func]
        filename, line, name = func
        where = f"{'/'.join(Path(filename).parts[-2:])}:{line}({name})" if filename != "~" else name
        entries.append(
            {
                "function": where,
                "calls": calls,
                "own_s": round(own, 3),
                "own_pct": round(100 * own / total, 1),
                "cumulative_s": round(cumulative, 3),
            }
        )
    return entries


def render_profile(entries: list[dict]) -> str:
    """The top entries as text."""
    lines = [f"{'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>9}  function"]
    lines += [
        f"{e['own_s']:>7.3f} {e['own_pct']:>6.1f} {e['cumulative_s']:>7.3f} {e['calls']:>9}  {e['function']}"
        for e in entries
    ]
    return "\n".join(lines)


def profile_collector(bench: Bench, tool: str, top: int) -> dict:
    """One more collector run under cProfile or pyinstrument (main thread: read, split, parse, batch)."""
    out = bench.workdir / f"profile.{tool}"
    launcher = [sys.executable, "-c", PROFILE_CODE[tool], str(out)]
    result = run_collector(bench, f"profile-{tool}", launcher)
    report: dict = {"tool": tool, "rows_per_s_under_profiler": round(result["rows_per_s"])}
    if tool == "cprofile":
        report["top"] = top_entries(pstats.Stats(str(out)), top)
        report["text"] = render_profile(report["top"])
    else:
        report["text"] = "\n".join(out.read_text().splitlines()[: 12 + 4 * top])
    return report
