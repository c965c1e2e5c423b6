"""Cold searches with and without the block output cache, in one run: time per phase, cache hits, and
whether the plan and the packed bytes are identical (they must be).

    QSLM_DATA_DIR=../shared/data python bench/block_cache_bench.py [--model spikegpt-sst2] [--task sst2]
        [--max-drop 1.0 | --max-relative-increase 0.03] [--max-memory 12.5%] [--out bench-out/block-cache]

Each search starts from an empty sensitivity cache (a folder of its own), so nothing is reused from an
earlier run; the one with the cache runs first.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from qslm.search.config import DEFAULT_BLOCK_CACHE_MB
from qslm.search.objective import Constraints
from qslm.search.run import run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spikegpt-sst2")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--max-drop", type=float, default=None)
    parser.add_argument("--max-relative-increase", type=float, default=None)
    parser.add_argument("--max-memory", default="12.5%")
    parser.add_argument("--validation-size", type=int, default=None)
    parser.add_argument("--out", default="bench-out/block-cache")
    args = parser.parse_args()
    if args.max_drop is None and args.max_relative_increase is None:
        args.max_drop = 1.0
    constraints = Constraints(max_drop=args.max_drop, max_relative_increase=args.max_relative_increase,
                              max_memory=args.max_memory)
    root = Path(args.out)
    if root.exists():
        shutil.rmtree(root)
    rows, files = [], {}
    for megabytes in (DEFAULT_BLOCK_CACHE_MB, 0):
        out, cache = root / f"cache-{megabytes}" / "out", root / f"cache-{megabytes}" / "sensitivity"
        started = time.perf_counter()
        result = run_search(args.model, args.task, out, constraints, block_cache_mb=megabytes, cache_dir=cache,
                            validation_size=args.validation_size, progress=False)
        wall = time.perf_counter() - started
        report, seconds = result.report, result.report["seconds"]
        blocks = report["block_cache"] or {}
        rows.append((megabytes, wall, seconds["sensitivity"], seconds["search"], seconds["verify"],
                     blocks.get("hits"), blocks.get("misses"), report["final"]["memory_bytes"],
                     report["final"]["metric"]))
        files[megabytes] = ((out / "model.safetensors").read_bytes(), (out / "quant_plan.json").read_bytes())
    print("| block cache (MiB) | wall s | sensitivity s | search s | verify s | hits | misses | bytes | metric |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {} | {} | {:,} | {:.4f} |".format(*row))
    same = files[DEFAULT_BLOCK_CACHE_MB] == files[0]
    print(f"speed-up {rows[1][1] / rows[0][1]:.2f}x; plan and model.safetensors identical: {same}")
    if not same:
        raise SystemExit("the plans differ: the block cache changed a result")


if __name__ == "__main__":
    main()
