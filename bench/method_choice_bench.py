"""Does a unit's output error on its calibration inputs choose its quantizer as the model's damage does?

    QSLM_DATA_DIR=../shared/data python bench/method_choice_bench.py [--model spikegpt-sst2] [--bits 2,3,4]

For every unit and width, each method that applies is weighed two ways: the model's damage (the unit alone
quantized, the whole model run on the calibration inputs, KL to the float outputs: what the choice used to
measure) and the unit's output error on its quantizer calibration inputs (``UnitHessian.output_error``: no
forward pass). The choice (``qslm.search.methods.MethodChoice``) is made with each, units without a Hessian
keeping the model's damage in both, as in a search. Printed per width: the methods each picks, how many
units they agree on, and the sum of the model's damage of each one's picks (lower is better; the damage
choice is the best this sum can be among the methods of equal bytes), and the seconds the fits and each way
of weighing took.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.analysis.sensitivity import OutputReference  # noqa: E402
from qslm.checkpoint import load_model  # noqa: E402
from qslm.quant.apply import WeightCache, fake_quantized, float_weight  # noqa: E402
from qslm.quant.memory import unit_bytes  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.units import quantizable_units  # noqa: E402
from qslm.search.config import BASE_SPEC, DEFAULT_METHODS  # noqa: E402
from qslm.search.methods import MethodChoice, applicable, output_errors, record_context  # noqa: E402
from qslm.tasks.presets import build_task, default_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spikegpt-sst2")
    parser.add_argument("--bits", default="2,3,4")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    widths = [int(b) for b in args.bits.split(",")]
    loaded = load_model(args.model)
    model = loaded.model.eval()
    task = build_task(default_task(loaded), loaded, data_dir=args.data_dir)
    units = quantizable_units(model)
    context = record_context(model, task.quantizer_inputs, DEFAULT_METHODS, reset_neuron_states)
    reference = OutputReference(model, task.calibration, task.damage_measure, task.output, reset=reset_neuron_states)
    cache = WeightCache()
    error_of = output_errors(model, context, cache)
    damage, error, seconds = {}, {}, Counter()
    for name in units:
        for bits in widths:
            for method in DEFAULT_METHODS:
                if not applicable(name, bits, method, context):
                    continue
                spec = dataclasses.replace(BASE_SPEC, bits=bits, method=method)
                started = time.perf_counter()
                cache.dequantized(name, float_weight(model, name), spec, context)  # the fit, timed apart
                seconds["fits"] += time.perf_counter() - started
                started = time.perf_counter()
                with fake_quantized(model, QuantPlan({name: spec}), cache, context):
                    damage[(name, spec)] = reference.damage()["damage"]
                seconds["damage"] += time.perf_counter() - started
                if context.hessian(name) is not None:
                    started = time.perf_counter()
                    error[(name, spec)] = error_of(name, spec)
                    seconds["error"] += time.perf_counter() - started

    def stored(name, spec):
        return unit_bytes(units[name], spec)

    def choice(by_error: bool):  # the search's own split: the units with a Hessian by ``local``
        return MethodChoice(list(units), widths, DEFAULT_METHODS, BASE_SPEC, context,
                            lambda jobs: [damage[job] for job in jobs], stored,
                            local=(lambda jobs: [error[job] for job in jobs]) if by_error else None).decide_all()

    by_damage, by_error = choice(False), choice(True)
    with_hessian = sum(context.hessian(u) is not None for u in units)
    print(f"{args.model}: {len(units)} units ({with_hessian} with a Hessian), widths {widths}; seconds: fits "
          f"{seconds['fits']:.1f}, model's damage {seconds['damage']:.1f}, output errors {seconds['error']:.1f}\n")
    print("| bits | picks by the model's damage | picks by the output error | same pick | sum of damage, damage picks "
          "| sum of damage, error picks |")
    print("|---:|---|---|---:|---:|---:|")
    for bits in widths:
        def total(chosen):
            return sum(damage[(u, dataclasses.replace(BASE_SPEC, bits=bits, method=chosen[u][bits]))] for u in units)
        counts = [", ".join(f"{m} {n}" for m, n in Counter(c[u][bits] for u in units).most_common())
                  for c in (by_damage, by_error)]
        same = sum(by_damage[u][bits] == by_error[u][bits] for u in units)
        print(f"| {bits} | {counts[0]} | {counts[1]} | {same} of {len(units)} | {total(by_damage):.4g} | "
              f"{total(by_error):.4g} |")


if __name__ == "__main__":
    main()
