"""Re-run every row of the README's results table from an empty sensitivity cache, copy each run's report
into docs/results/, and write the table (docs/results/table.md, and into README.md between its markers).

    python bench/readme_results.py [--rows demo,sst2-8,...] [--data-dir D] [--no-readme]

Each row is one `qslm` command, run cold (its own empty cache folder, a fresh output folder) one at a
time, so the wall times compare. Nothing here computes a figure: every number in the table is read from
the run's report.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
KEPT_FILES = ["report.json", "report.md", "quant_plan.json", "pareto.png", "bitwidths.png", "sensitivity.png"]

# name -> (folder under docs/results, what the row limits, the command after `qslm`)
ROWS = {
    "demo": ("spikegpt-sst2", "drop ≤ 1.0 pt, memory ≤ 12.5%", ["demo"]),
    "sst2-8": ("spikegpt-sst2-8pct", "drop ≤ 1.0 pt, memory ≤ 8%",
               ["search", "spikegpt-sst2", "--task", "sst2", "--max-drop", "1.0", "--max-memory", "8%"]),
    "sst2-8-opt-in": ("spikegpt-sst2-8pct-opt-in", "drop ≤ 1.0 pt, memory ≤ 8%; opt-in: one bit, learned rounding",
                      ["search", "spikegpt-sst2", "--task", "sst2", "--max-drop", "1.0", "--max-memory", "8%",
                       "--bits", "1,2,3,4,5,6,8", "--methods", "rtn,gptq,codebook,binary,learned"]),
    "encoder": ("spiking-encoder-sst2", "drop ≤ 1.0 pt, memory ≤ 12.5%",
                ["search", "spiking-encoder-sst2", "--task", "sst2", "--max-drop", "1.0", "--max-memory", "12.5%"]),
    "encoder-10": ("spiking-encoder-sst2-10pct", "drop ≤ 1.0 pt, memory ≤ 10%",
                   ["search", "spiking-encoder-sst2", "--task", "sst2", "--max-drop", "1.0", "--max-memory", "10%"]),
    "wt2-11": ("spikegpt-wt2-11pct", "perplexity ≤ +3%, memory ≤ 11%",
               ["search", "spikegpt-wt2", "--task", "wikitext2", "--max-relative-increase", "0.03",
                "--max-memory", "11%"]),
}


def change(loss: dict | None, higher_is_better: bool) -> str:
    """A loss as the metric's change with its 95% interval: points for accuracy, percent for perplexity."""
    if loss is None:
        return "n/a"
    sign = -1 if higher_is_better else 100
    unit = "" if higher_is_better else "%"
    low, high = sorted(sign * v for v in loss["interval95"]) if loss.get("interval95") else (None, None)
    text = f"{sign * loss['estimate']:+.2f}{unit}"
    return text if low is None else f"{text} [{low:+.2f}, {high:+.2f}]"


def row(name: str, report: dict) -> str:
    folder, limit, command = ROWS[name]
    base, final, quality = report["baseline"], report["final"], report["quality"]
    hib = report["higher_is_better"]
    if final is None:
        return f"| `{report['model']}` | {limit} | no plan: {why_no_plan(report)} | | | | `qslm {' '.join(command)}` |"
    split = final["split"]
    metric = "SST-2 dev" if hib else "WikiText-2 test word perplexity"
    return (f"| `{report['model']}` | {limit} | {100 * final['memory_bytes'] / base['memory_bytes']:.2f}% "
            f"({base['memory_bytes'] / 1e6:.2f} → {final['memory_bytes'] / 1e6:.2f} MB) | "
            f"{100 * final['energy_pj'] / base['energy_pj']:.1f}% | "
            f"{metric} {base['metric_' + split]:.2f} → {final['metric']:.2f} ({change(quality['test'], hib)}) | "
            f"{change(quality['validation'], hib)} | `qslm {' '.join(command)}` |")


def why_no_plan(report: dict) -> str:
    quality, higher_is_better = report["quality"], report["higher_is_better"]
    turned = (quality.get("selection") or {}).get("turned_down", [])
    if turned:  # no plan kept: each failed at its try's confidence (qslm.search.selection)
        best = turned[0]
        sizes = sorted(100 * t["memory_fraction"] for t in turned)
        bound = best["confirmation"]["upper"]
        return (f"the {len(turned)} plans within the limit on the search half ({sizes[0]:.2f}–{sizes[-1]:.2f}% of "
                f"FP32) failed it on the confirmation half (the best bounded there at "
                + (f"a drop of {bound:.2f} points" if higher_is_better else f"{100 * bound:+.2f}%")
                + f" at {best['confidence']:g})")
    certifiable = quality.get("certifiable")
    if certifiable:
        bound = certifiable["certifiable_loss"]
        return ("the validation data certify no less than "
                + (f"a drop of {bound:.2f} points" if higher_is_better else f"{100 * bound:+.2f}%"))
    within = [c["memory_fraction"] for c in report["candidates"]
              if not any(v.startswith("quality") for v in c["violations"])]
    if within:
        return f"every plan within the quality limit was over the memory limit (the smallest {100 * min(within):.2f}%)"
    return "see the report"


HEADER = ("| model | limits | memory (% of FP32) | energy (% of FP32) | reported split: FP32 → QSLM (change, 95% "
          "interval) | validation change (95% interval) | reproduce |\n|---|---|---:|---:|---|---|---|")


def run_row(name: str, data_dir: str | None, qslm: str) -> dict:
    folder, _, command = ROWS[name]
    with tempfile.TemporaryDirectory(prefix="qslm-readme-") as scratch:
        out = Path(scratch) / "out"
        env = dict(os.environ, QSLM_CACHE_DIR=str(Path(scratch) / "cache"))
        argv = [qslm, *command, "--out", str(out)] + (["--data-dir", data_dir] if data_dir else [])
        print(f"$ qslm {' '.join(command)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        if done.returncode not in (0, 3):  # 3: no plan met the constraints, still a result
            sys.exit(f"row {name}: `qslm {' '.join(command)}` exited {done.returncode}")
        target = RESULTS / folder
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for file in KEPT_FILES:
            if (out / file).is_file():
                shutil.copy2(out / file, target / file)
        return json.loads((out / "report.json").read_text())


def write_table(lines: list[str], update_readme: bool) -> None:
    table = HEADER + "\n" + "\n".join(lines) + "\n"
    (RESULTS / "table.md").write_text(f"Re-run {time.strftime('%Y-%m-%d')} by `python bench/readme_results.py`.\n\n"
                                      + table)
    if update_readme:
        text = README.read_text()
        if BEGIN not in text or END not in text:
            sys.exit(f"{README} has no {BEGIN} ... {END} markers around its results table")
        head, rest = text.split(BEGIN, 1)
        README.write_text(head + BEGIN + "\n" + table + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $QSLM_DATA_DIR)")
    parser.add_argument("--no-readme", action="store_true", help="write docs/results/table.md only")
    args = parser.parse_args()
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    qslm = shutil.which("qslm") or str(Path(sys.executable).parent / "qslm")
    lines = []
    for name in ROWS:  # the table keeps its order; rows not asked for are read from their last reports
        if name in names:
            report = run_row(name, args.data_dir, qslm)
        else:
            path = RESULTS / ROWS[name][0] / "report.json"
            report = json.loads(path.read_text()) if path.is_file() else {}
            if "quality" not in report:  # never run, or run before reports carried bounds
                continue
        lines.append(row(name, report))
        print(lines[-1], flush=True)
    write_table(lines, update_readme=not args.no_readme)


if __name__ == "__main__":
    main()
