"""Uniform quantization of the bundled models with each method: size (% of FP32) and the task metric.

    python bench/methods_uniform_bench.py [--models spikegpt-sst2,spiking-encoder-sst2,spikegpt-wt2]
        [--bits 2,3,4] [--test-limit N] [--methods rtn,gptq,codebook] [--grids sym,signed,asym]

Every unit at one width and one method (rtn, gptq, codebook; per-channel, symmetric, MSE clipping for rtn
and gptq; ``--grids`` adds the signed grid that uses every code, and the asymmetric one). GPTQ's Hessians and the codebooks' weighting come from the task's quantizer calibration (the
sst2 / wikitext2 presets: training sentences / text, as the search uses); the metric is measured on
the reported split (SST-2 dev accuracy, WikiText-2 test word perplexity, or its first N examples / lines),
which the calibration never saw. Embeddings have no input Hessian, so under gptq they are rtn-quantized.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.checkpoint import load_model  # noqa: E402
from qslm.quant.apply import fake_quantized  # noqa: E402
from qslm.quant.memory import plan_bytes  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.quantizer import QuantSpec  # noqa: E402
from qslm.quant.units import quantizable_units  # noqa: E402
from qslm.search.config import BASE_SPEC  # noqa: E402
from qslm.search.methods import applicable, record_context  # noqa: E402
from qslm.tasks.presets import build_task, default_task  # noqa: E402

METHODS = ("rtn", "gptq", "codebook")
GRIDS = {"sym": ("sym", True, False), "signed": ("signed", True, True), "asym": ("asym", False, False)}


def uniform_plan(model, spec: QuantSpec, context) -> QuantPlan:
    """Every unit at ``spec``; a unit its method cannot serve (gptq or learned rounding on an embedding,
    which has no Hessian) at rtn with the same settings, as a search would leave it."""
    return QuantPlan({u: spec if applicable(u, spec.bits, spec.method, context)
                      else dataclasses.replace(spec, method="rtn") for u in quantizable_units(model)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="spikegpt-sst2,spiking-encoder-sst2,spikegpt-wt2")
    parser.add_argument("--bits", default="2,3,4")
    parser.add_argument("--test-limit", type=int, default=None, help="first N examples / lines of the reported split")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--grids", default="sym", help="of sym (2**b - 1 levels), signed (every code), asym")
    args = parser.parse_args()
    bits_list = [int(b) for b in args.bits.split(",")]
    grids = [GRIDS[g] for g in args.grids.split(",")]
    print("| model | bits | method | grid | memory (% of FP32) | metric (reported split) | seconds |")
    print("|---|---:|---|---|---:|---:|---:|")
    for name in args.models.split(","):
        loaded = load_model(name)
        model = loaded.model
        task = build_task(default_task(loaded), loaded, data_dir=args.data_dir, test_limit=args.test_limit)
        context = record_context(model, task.quantizer_inputs, METHODS, reset_neuron_states)
        fp32 = plan_bytes(model, QuantPlan())
        started = time.perf_counter()
        print(f"| {name} | 32 | float | - | 100.0 | {task.metric_of(task.test(model), 'Task.test'):.2f} | {time.perf_counter() - started:.0f} |",
              flush=True)
        for bits, method, (grid, symmetric, all_levels) in itertools.product(
                bits_list, args.methods.split(","), grids):
            if method == "codebook" and grid != "sym":
                continue  # a codebook's levels are free: no grid to choose
            plan = uniform_plan(model, dataclasses.replace(BASE_SPEC, bits=bits, symmetric=symmetric,
                                                           all_levels=all_levels, method=method), context)
            started = time.perf_counter()
            with torch.no_grad(), fake_quantized(model, plan, context=context):
                metric = task.metric_of(task.test(model), "Task.test")
            print(f"| {name} | {bits} | {method} | {grid} | {100 * plan_bytes(model, plan) / fp32:.2f} | {metric:.2f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
