"""Learned rounding's own objective: the units' output error on their calibration inputs, against rtn and gptq.

    QSLM_DATA_DIR=../shared/data python bench/learned_rounding_bench.py [--models spikegpt-sst2,spikegpt-wt2,
        spiking-encoder-sst2] [--bits 2,3] [--units 8] [--options iterations=400,learning_rate=0.1,regularisation=10;...]

For the first ``--units`` units with a calibration Hessian of each model (the task's quantizer calibration), each
width and each ``LearnedOptions`` setting (``;``-separated; fields as ``qslm.quant.context.LearnedOptions``), the
sum over units of ``UnitHessian.output_error`` for rtn, gptq and learned rounding, and learned rounding's
seconds. This is how the options' defaults were chosen; it says nothing of the task metric (see
``bench/sub2bit_bench.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qslm.checkpoint import load_model  # noqa: E402
from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.quant.apply import quantize_unit  # noqa: E402
from qslm.quant.context import LearnedOptions, QuantContext  # noqa: E402
from qslm.quant.quantizer import QuantSpec  # noqa: E402
from qslm.quant.unit_inputs import record_hessians  # noqa: E402
from qslm.quant.units import quantizable_units, unit_tensor  # noqa: E402
from qslm.tasks.presets import build_task, default_task  # noqa: E402


def parse_options(text: str) -> list[LearnedOptions]:
    settings = []
    for part in filter(None, text.split(";")):
        fields = dict(item.split("=") for item in part.split(","))
        settings.append(LearnedOptions(**{k: int(v) if k == "iterations" else float(v) for k, v in fields.items()}))
    return settings or [LearnedOptions()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="spikegpt-sst2,spikegpt-wt2,spiking-encoder-sst2")
    parser.add_argument("--bits", default="2,3")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--options", default="")
    parser.add_argument("--data-dir", default=os.environ.get("QSLM_DATA_DIR"))
    args = parser.parse_args()
    settings = parse_options(args.options)
    print("| model | bits | options | rtn | gptq | learned | learned / gptq | learned seconds |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        loaded = load_model(name)
        task = build_task(default_task(loaded), loaded, data_dir=args.data_dir, test_limit=1, validation_size=64)
        hessians = record_hessians(loaded.model, task.quantizer_inputs, reset_neuron_states)
        units = quantizable_units(loaded.model)
        chosen = [u for u in units if u in hessians][:args.units]
        for bits in [int(b) for b in args.bits.split(",")]:
            for options in settings:
                context = QuantContext(hessians, learned=options)
                totals, seconds = {"rtn": 0.0, "gptq": 0.0, "learned": 0.0}, 0.0
                for unit in chosen:
                    weight = unit_tensor(loaded.model, units[unit]).detach()
                    for method in totals:
                        started = time.perf_counter()
                        quantized = quantize_unit(unit, weight, QuantSpec(bits, method=method, scale_dtype="float16"),
                                                  context)
                        if method == "learned":
                            seconds += time.perf_counter() - started
                        totals[method] += hessians[unit].output_error(quantized.dequantize() - weight)
                described = (f"{options.iterations} it, lr {options.learning_rate:g}, "
                             f"reg {options.regularisation:g}")
                print(f"| {name} | {bits} | {described} | {totals['rtn']:.4g} | {totals['gptq']:.4g} | "
                      f"{totals['learned']:.4g} | {totals['learned'] / totals['gptq']:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
