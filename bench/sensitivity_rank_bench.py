"""Does block-local sensitivity order the units as the exact measure does?

    QSLM_DATA_DIR=../shared/data python bench/sensitivity_rank_bench.py --model spikegpt-sst2

For every unit inside a block and every bit-width, measures the exact damage (quantize the unit, run the
whole model on the calibration set, KL to the float outputs) and the block-local estimate (re-run only the
unit's block, diagonal Fisher), then prints the Spearman rank correlation between the two lists and the
seconds each took. Only the order matters to the tiered search, which checks every move it makes.
"""
from __future__ import annotations

import argparse
import time

import torch

from qslm.analysis.hierarchy import build_hierarchy
from qslm.analysis.local_sensitivity import BlockLocalSensitivity, rank_correlation
from qslm.analysis.sensitivity import OutputReference
from qslm.checkpoint import load_model
from qslm.models.neuron_state import reset_neuron_states
from qslm.quant.apply import WeightCache, fake_quantized
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.tasks.presets import build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="spikegpt-sst2", help="an SST-2 classifier (bundled name or folder)")
    parser.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--examples", type=int, default=32, help="calibration sentences (the sst2 preset's)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $QSLM_DATA_DIR)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    model = loaded.model
    task = build_task("sst2", loaded, data_dir=args.data_dir, calibration_size=args.examples, test_limit=1,
                      validation_size=64)
    hierarchy = build_hierarchy(model)

    started = time.perf_counter()
    reference = OutputReference(model, task.calibration, "kl", reset=reset_neuron_states)
    local = BlockLocalSensitivity(model, [block.name for block in hierarchy.blocks], reference)
    cache = WeightCache()
    exact, estimate, exact_s = [], [], 0.0
    for block in hierarchy.blocks:
        for unit in block.modules:
            for bits in args.bits:
                with fake_quantized(model, QuantPlan({unit: QuantSpec(bits)}), cache):
                    t0 = time.perf_counter()
                    exact.append(reference.damage()["damage"])
                    t1 = time.perf_counter()
                    estimate.append(local.damage(block.name)["damage"])
                    exact_s += t1 - t0
    local_s = time.perf_counter() - started - exact_s
    print(f"{args.model}: {len(exact)} (unit, bit-width) pairs over {len(hierarchy.blocks)} blocks, "
          f"bits {args.bits}, {len(task.calibration)} calibration batches")
    print(f"Spearman rank correlation, local vs exact: {rank_correlation(exact, estimate):.3f}")
    print(f"seconds: exact {exact_s:.1f}, local {local_s:.1f} (recording included)")


if __name__ == "__main__":
    main()
