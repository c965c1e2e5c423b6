"""Uniform quantization benchmark: every model at 16/8/6/4/3/2 bits (per-channel, symmetric, MSE clipping).

    python bench/quant_bench.py                          # every bundled model, full dev/test sets
    python bench/quant_bench.py --models path/to/folder --limit 50 --out docs/quant_bench.md

For each model and bit-width: size of model.safetensors on disk and as a fraction of FP32, the task
metric (SST-2 dev accuracy or WikiText-2 test word perplexity, via ``qslm eval``'s ``evaluate_model``),
load time, peak RSS, and evaluation latency relative to FP32. Each measurement runs in a fresh
subprocess so ru_maxrss is that model's peak alone; the subprocess first times ``load_model`` on its
own, then runs the evaluation (which loads again), so the evaluation time excludes nothing but the load.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qslm.quant.quantizer import DEFAULT_SCALE_DTYPE, SCALE_DTYPES

DEFAULT_BITS = (16, 8, 6, 4, 3, 2)
TASK_OF = {"lm": "wikitext2", "classification": "sst2"}


def measure(model: str, task: str, limit: int | None, data_dir: str | None, device: str,
            threads: int | None) -> dict:
    """Runs inside the subprocess: load time, metric, evaluation seconds, peak RSS."""
    import torch

    from qslm.checkpoint import load_model
    from qslm.commands.eval import evaluate_model
    from qslm.device import resolve_device

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    loaded = load_model(model, resolve_device(device))
    load_seconds = time.perf_counter() - started
    del loaded
    gc.collect()
    result = evaluate_model(model, task, limit=limit, data_dir=data_dir, device=device)
    return {"load_s": load_seconds, "eval_s": result.seconds, "n": result.n,
            "metric": result.accuracy if task == "sst2" else result.perplexity,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux


def measure_in_subprocess(model: Path, task: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--measure", str(model), "--task", task, "--device", args.device]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    if args.data_dir is not None:
        command += ["--data-dir", args.data_dir]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_model(ref: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    from qslm.checkpoint import WEIGHTS_FILE, read_config
    from qslm.models.zoo import resolve_model_path
    from qslm.quant.api import quantize

    source = resolve_model_path(ref)
    task = TASK_OF[getattr(read_config(source), "task", "classification")]
    fp32_size = (source / WEIGHTS_FILE).stat().st_size
    rows = []
    for bits in (None, *args.bits):
        if bits is None:
            folder, quantize_seconds = source, 0.0
        else:
            folder = workdir / f"{source.name}-int{bits}"
            started = time.perf_counter()
            quantize(source, bits=bits, granularity="per-channel", symmetric=True, observer="mse",
                     scale_dtype=args.scale_dtype, out=folder)
            quantize_seconds = time.perf_counter() - started
        size = (folder / WEIGHTS_FILE).stat().st_size
        row = {"model": source.name, "task": task, "precision": "fp32" if bits is None else f"int{bits}",
               "size_bytes": size, "fraction_of_fp32": size / fp32_size, "quantize_s": quantize_seconds,
               **measure_in_subprocess(folder, task, args)}
        row["latency_vs_fp32"] = row["eval_s"] / rows[0]["eval_s"] if rows else 1.0
        rows.append(row)
        print(f"  {row['model']} {row['precision']}: metric {row['metric']:.4f}", file=sys.stderr)
    return rows


def markdown(rows: list[dict], limit: int | None, scale_dtype: str) -> str:
    lines = ["| model | precision | size (KiB) | % of FP32 | metric | load (s) | peak RSS (MiB) | "
             "eval latency vs FP32 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        metric = (f"acc {100 * r['metric']:.2f}%" if r["task"] == "sst2" else f"ppl {r['metric']:.2f}")
        lines.append(f"| {r['model']} | {r['precision']} | {r['size_bytes'] / 1024:,.1f} | "
                     f"{100 * r['fraction_of_fp32']:.1f}% | {metric} | {r['load_s']:.3f} | "
                     f"{r['peak_rss_mb']:,.0f} | {r['latency_vs_fp32']:.2f}x |")
    scope = (f"first {limit} examples/lines" if limit else "full SST-2 dev / WikiText-2 test")
    lines += ["", f"Uniform per-channel symmetric quantization, MSE clipping; metric on the {scope}. "
              f"Size is model.safetensors (packed codes, {scale_dtype} scales, float32 unquantized tensors)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="model folders or bundled names "
                        "(default: every bundled model)")
    parser.add_argument("--bits", nargs="+", type=int, default=list(DEFAULT_BITS))
    parser.add_argument("--limit", type=int, default=None, help="first N examples (sst2) / lines (wikitext2)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $QSLM_DATA_DIR)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale-dtype", default=DEFAULT_SCALE_DTYPE, choices=list(SCALE_DTYPES),
                        help=f"as qslm quantize --scale-dtype (default {DEFAULT_SCALE_DTYPE})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for evaluation (fix it for comparable latencies)")
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")
    parser.add_argument("--json", default=None, help="also write all measurements as JSON to this file")
    parser.add_argument("--workdir", default=None, help="keep the quantized folders here (default: temporary)")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # subprocess mode
    parser.add_argument("--task", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(args.measure, args.task, args.limit, args.data_dir, args.device, args.threads)))
        return 0
    from qslm.models.zoo import bundled_names

    models = args.models or bundled_names()
    if not models:
        parser.error("no bundled models yet; name model folders with --models")
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as scratch:
        workdir = Path(args.workdir or scratch)
        rows = [row for ref in models for row in bench_model(ref, args, workdir)]
    table = markdown(rows, args.limit, args.scale_dtype)
    sys.stdout.write(table)
    if args.out:
        Path(args.out).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
