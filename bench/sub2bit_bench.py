"""Uniform plans at 1, 1.6, 2 and 3 bits with each method, on the bundled models and the own models.

    QSLM_DATA_DIR=../shared/data python bench/sub2bit_bench.py [--models spikegpt-sst2,spiking-encoder-sst2,
        spikegpt-wt2,hand-written,snnTorch,SpikingJelly] [--methods rtn,gptq,codebook,learned] [--bits 2,3]
        [--json bench-out/sub2bit.json]

Every unit at one width and one method (per-channel, symmetric, MSE clipping, float16 scales):

* 1 bit: ``binary`` (the sign times each row's least-squares scale), the only method that takes one bit;
* 1.6 bits: ``ternary`` (rtn's three symmetric 2-bit levels, five weights a byte), and each other grid method
  of ``--methods`` (gptq, learned) on that ternary grid;
* 2 and 3 bits: each of ``--methods``. gptq and learned rounding need a unit's calibration Hessian, so
  units without one (embeddings) stay rtn under them, as a search would have them.

The models and their splits are those of ``bench/peers_bench.py``: SST-2 dev (872 sentences) or WikiText-2
test word perplexity on its first 300 lines as the reported split, and the slice ``qslm.search`` validates on;
the own models' 160 test and 160 validation sequences. Hessians and codebook weights come from the task's
quantizer calibration (training data), never from either split. No plan is chosen here, so no split is
selected on. Seconds: ``fit`` is quantizing every unit (learned rounding's optimisation included), ``eval``
scoring both splits.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.methods_uniform_bench import uniform_plan  # noqa: E402
from bench.peers_bench import bundled_target, own_target  # noqa: E402
from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.quant.apply import WeightCache, fake_quantized  # noqa: E402
from qslm.quant.memory import plan_bytes  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.quantizer import QuantSpec  # noqa: E402
from qslm.search.methods import record_context  # noqa: E402

BUNDLED = ("spikegpt-sst2", "spiking-encoder-sst2", "spikegpt-wt2")
OWN = ("hand-written", "snnTorch", "SpikingJelly")
BASE = QuantSpec(8, scale_dtype="float16")


def rows_to_run(methods: list[str], bits: list[int]) -> list[tuple[str, int, str, bool]]:
    """(width label, bits, method, on the ternary grid) in table order: ``ternary`` is rtn on that grid, and
    every other grid method of ``methods`` runs on it too."""
    on_ternary = [m for m in methods if m not in ("rtn", "codebook")]
    return ([("1", 1, "binary", False), ("1.6", 2, "ternary", False)]
            + [("1.6", 2, m, True) for m in on_ternary]
            + [(str(b), b, m, False) for b in bits for m in methods])


def measure(name: str, methods: list[str], bits: list[int], data_dir: str | None) -> list[dict]:
    target = bundled_target(name, quick=False, data_dir=data_dir) if name in BUNDLED else own_target(name)
    model = target.fresh()
    reset = reset_neuron_states if name in BUNDLED else None
    started = time.perf_counter()
    context = record_context(model, target.task.quantizer_inputs, ("gptq",), reset)
    hessian_s = time.perf_counter() - started
    fp32 = plan_bytes(model, QuantPlan())
    with torch.no_grad():
        rows = [dict(model=name, width="FP32", method="float", memory=100.0, reported=target.reported(model),
                     validation=target.validation(model), fit_s=0.0, eval_s=None, metric=target.metric)]
    print(f"{name}: Hessians recorded in {hessian_s:.1f} s", flush=True)
    for label, width, method, trits in rows_to_run(methods, bits):
        plan = uniform_plan(model, dataclasses.replace(BASE, bits=width, method=method, trits=trits), context)
        started = time.perf_counter()
        with torch.no_grad(), fake_quantized(model, plan, WeightCache(), context=context):
            fitted = time.perf_counter()
            reported, validation = target.reported(model), target.validation(model)
        row = dict(model=name, width=label, method=method + (" ternary" if trits else ""), memory=100.0 * plan_bytes(model, plan) / fp32,
                   reported=reported, validation=validation, fit_s=fitted - started,
                   eval_s=time.perf_counter() - fitted, metric=target.metric,
                   units_rtn=sum(s.method == "rtn" for s in plan.units.values()) if method != "rtn" else None)
        rows.append(row)
        print(markdown_row(row), flush=True)
    return rows


def markdown_row(row: dict) -> str:
    seconds = "" if row["eval_s"] is None else f"{row['fit_s']:.1f} / {row['eval_s']:.0f}"
    return (f"| {row['model']} | {row['width']} | {row['method']} | {row['memory']:.2f} | {row['reported']:.2f} | "
            f"{row['validation']:.2f} | {seconds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUNDLED + OWN))
    parser.add_argument("--methods", default="rtn,gptq,codebook,learned")
    parser.add_argument("--bits", default="2,3", help="the widths every method is run at (1 and 1.6 always run)")
    parser.add_argument("--data-dir", default=os.environ.get("QSLM_DATA_DIR"))
    parser.add_argument("--json", default="bench-out/sub2bit.json")
    args = parser.parse_args()
    methods, bits = args.methods.split(","), [int(b) for b in args.bits.split(",")]
    print("| model | bits | method | memory % FP32 | reported split | validation slice | seconds fit / eval |")
    print("|---|---|---|---:|---:|---:|---|")
    results = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        results.extend(measure(name, methods, bits, args.data_dir))
        out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
