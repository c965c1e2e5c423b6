"""What GPTQ and the codebooks fit to: the search's calibration inputs (a slice of the validation data) or
training data of several sizes, measured on the validation slice the search checks and on the reported split.

    python bench/quantizer_calibration_bench.py [--model spikegpt-wt2] [--bits 3] [--methods gptq,codebook]
        [--sizes 8192,16384,32768] [--test-limit 300]

Every unit at one width and one method (embeddings, which have no input Hessian, rtn under gptq). Rows:
"calibration" fits to ``task.calibration`` (the inputs sensitivities are measured on: for the presets, part
of the validation slice itself), the others to the preset's quantizer calibration of that size (SST-2:
the longest training sentences; WikiText-2: the first tokens of its training text). A fit to the
validation slice that looks better there than on the reported split is fitted to what it is checked on.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.checkpoint import load_model  # noqa: E402
from qslm.quant.apply import fake_quantized  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.units import quantizable_units  # noqa: E402
from qslm.search.config import BASE_SPEC  # noqa: E402
from qslm.search.methods import applicable, record_context  # noqa: E402
from qslm.model_inputs import inferences_in  # noqa: E402
from qslm.tasks.presets import build_task, default_task  # noqa: E402


def metrics(model, task, plan, context) -> tuple[float, float]:
    """(validation metric, reported metric) of ``plan``, each from reset neuron states."""
    with torch.no_grad(), fake_quantized(model, plan, context=context):
        reset_neuron_states(model)
        validation = task.metric_of(task.evaluate(model))
        reset_neuron_states(model)
        return validation, task.metric_of(task.test(model), "Task.test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spikegpt-wt2")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--methods", default="gptq,codebook")
    parser.add_argument("--sizes", default=None, help="quantizer calibration sizes (default: the preset's)")
    parser.add_argument("--test-limit", type=int, default=None, help="first N examples / lines of the reported split")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(args.model)
    model = loaded.model.eval()
    name = default_task(loaded)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [None]
    tasks = {size: build_task(name, loaded, data_dir=args.data_dir, test_limit=args.test_limit, quantizer_size=size)
             for size in sizes}
    task = tasks[sizes[0]]
    validation, reported = metrics(model, task, QuantPlan(), None)
    print(f"{args.model}, {args.bits} bits; FP32: validation {validation:.3f}, {task.test_split} {reported:.3f}\n")
    print(f"| fitted to | inferences | method | validation | {task.test_split} | seconds |")
    print("|---|---:|---|---:|---:|---:|")
    sources = {"calibration": task.calibration, **{f"training ({size or 'default'})": t.quantizer_inputs
                                                   for size, t in tasks.items()}}
    for label, inputs in sources.items():
        context = record_context(model, inputs, ("gptq",), reset_neuron_states)
        for method in args.methods.split(","):
            started = time.perf_counter()
            plan = QuantPlan({u: dataclasses.replace(BASE_SPEC, bits=args.bits,
                                                     method=method if applicable(u, args.bits, method, context)
                                                     else "rtn")
                              for u in quantizable_units(model)})
            validation, reported = metrics(model, task, plan, context)
            print(f"| {label} | {sum(inferences_in(item) for item in inputs)} | {method} | {validation:.3f} | "
                  f"{reported:.3f} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
