"""QSLM's tiered search against the baselines, under the same constraints, evaluator and cache.

    QSLM_DATA_DIR=../shared/data python bench/strategies_bench.py --model spikegpt-sst2 --task sst2 \
        --max-drop 1.0 --max-memory 0.125 --out bench-out/strategies-spikegpt-sst2

Runs, in one process and on the same held-out validation slice: tiered (QSLM), uniform INT8,
uniform INT4, HAWQ-V3 style, INC-style greedy fallback, random search and NSGA-II with N and 3N
candidate evaluations, N being the number tiered used. Each strategy's chosen plan is verified on
the reported split (optionally its first ``--reported-limit`` examples/lines). Writes
``results.json``, ``results.md`` (one table) and ``pareto.png`` (all candidates of all strategies).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qslm.report import pareto_front  # noqa: E402
from qslm.search.objective import Constraints  # noqa: E402
from qslm.search.config import SENSITIVITY_METHODS  # noqa: E402
from qslm.search.run import run_search  # noqa: E402


def run_one(name: str, args, out: Path, memory_limit: bool = True, **overrides) -> dict:
    """One strategy's search, verified plan and costs. ``memory_limit=False`` leaves the memory constraint
    out of the search (fixed uniform plans), and the table then says whether the plan meets it."""
    started = time.perf_counter()
    max_memory = args.max_memory if memory_limit else None
    options = dict(constraints=Constraints(args.max_drop, args.max_relative_increase, max_memory),
                   data_dir=args.data_dir, progress=False, reported_limit=args.reported_limit,
                   cache_dir=args.cache_dir, seed=args.seed, validation_size=args.validation_size,
                   sensitivity_method=args.sensitivity)
    options.update(overrides)
    result = run_search(args.model, args.task, out / name, **options)
    report = result.report
    final = report.get("final") or {}
    split = "dev" if args.task == "sst2" else "test"
    status = report["status"]
    if status == "feasible" and args.max_memory is not None and not memory_limit:
        limit_bytes = Constraints(max_memory=args.max_memory).memory_limit_bytes(report["baseline"]["memory_bytes"])
        status = "feasible" if final["memory_bytes"] <= limit_bytes else "over memory limit"
    return {"strategy": name, "status": status, "evaluations": len(report["candidates"]),
            "wall_s": time.perf_counter() - started, "search_s": report["seconds"]["search"],
            "memory_fraction": final.get("memory_bytes", float("nan")) / report["baseline"]["memory_bytes"],
            "energy_fraction": final.get("energy_pj", float("nan")) / report["baseline"]["energy_pj"],
            "metric": final.get("metric"), "baseline_metric": report["baseline"][f"metric_{split}"],
            "quality_loss": final.get("quality_loss"),
            "candidates": [(c["memory_fraction"], c["quality_loss"]) for c in report["candidates"]]}


def table(rows: list[dict], task: str) -> str:
    metric = "accuracy" if task == "sst2" else "word ppl"
    lines = [f"| strategy | status | memory % FP32 | energy % FP32 | {metric} | quality loss | evaluations | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        value = ("n/a" if r["metric"] is None else
                 f"{100 * r['metric']:.2f}%" if task == "sst2" else f"{r['metric']:.2f}")
        loss = "n/a" if r["quality_loss"] is None else f"{r['quality_loss']:+.3g}"
        lines.append(f"| {r['strategy']} | {r['status']} | {100 * r['memory_fraction']:.2f} | "
                     f"{100 * r['energy_fraction']:.2f} | {value} | {loss} | {r['evaluations']} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, task: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        points = r["candidates"]
        front = sorted(pareto_front(points), key=lambda i: points[i][0])
        ax.plot([100 * points[i][0] for i in front], [points[i][1] for i in front], marker="o", ms=3,
                label=f"{r['strategy']} ({r['evaluations']} evals)")
    ax.set_xlabel("memory (% of FP32)")
    ax.set_ylabel("accuracy drop (points)" if task == "sst2" else "perplexity increase (relative)")
    ax.set_title("Pareto fronts of evaluated candidates (validation slice)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--task", required=True, choices=["sst2", "wikitext2"])
    parser.add_argument("--max-drop", type=float, default=None)
    parser.add_argument("--max-relative-increase", type=float, default=None)
    parser.add_argument("--max-memory", default=None, help="as qslm search --max-memory (0.125, 12.5%%, 3MB)")
    parser.add_argument("--reported-limit", type=int, default=None)
    parser.add_argument("--validation-size", type=int, default=None, help="as qslm search --validation-size")
    parser.add_argument("--sensitivity", default="exact", choices=SENSITIVITY_METHODS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    rows = [run_one("tiered", args, out)]
    budget = rows[0]["evaluations"]
    rows.append(run_one("uniform-int8", args, out, memory_limit=False, strategy="uniform", bit_choices=[8]))
    rows.append(run_one("uniform-int4", args, out, memory_limit=False, strategy="uniform", bit_choices=[4]))
    rows.append(run_one("hawq", args, out, strategy="hawq"))
    rows.append(run_one("greedy", args, out, strategy="greedy"))
    for factor in (1, 3):
        for strategy in ("random", "nsga2"):
            rows.append(run_one(f"{strategy}-{factor}x", args, out, strategy=strategy, max_evaluations=factor * budget))
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "results.md").write_text(table(rows, args.task))
    plot(rows, out / "pareto.png", args.task)
    print(table(rows, args.task))


if __name__ == "__main__":
    main()
