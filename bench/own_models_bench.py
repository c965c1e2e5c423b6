"""Models qslm has never seen, searched through the Python API with their own metric: a hand-written spiking
classifier (bare-parameter projections, a tied embedding/head, a learnable-threshold neuron), an snnTorch
model and a SpikingJelly model (the ones tests/search/test_engine.py uses), trained briefly on a synthetic
token task. For each: units found, FP32 bytes against the model's unique tensor bytes, the packed file's
tensor bytes, the metric before and after, and the metric of a fresh instance loaded from the written files.

    python bench/own_models_bench.py [--out bench-out/own-models] [--max-memory 25%] [--methods rtn,gptq,codebook]
        [--bits 2,3,4,5,6,8] [--grids sym,signed,asym]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qslm  # noqa: E402
from qslm.quant.units import find_units  # noqa: E402
from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data  # noqa: E402
from tests.search.test_engine import SnnTorchClassifier, SpikingJellyClassifier, sj_accuracy, unique_fp32_bytes  # noqa: E402


def train(model, ids, labels, steps, reset=None):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        if reset:
            reset(model)
        F.cross_entropy(model(ids), labels).backward()
        optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/own-models")
    parser.add_argument("--max-memory", default="25%")
    parser.add_argument("--methods", default="rtn", help="quantizers the search may use (comma-separated)")
    parser.add_argument("--bits", default=None, help="widths the search may use (default: SearchConfig's)")
    parser.add_argument("--grids", default=None, help="grids the search may use (default: SearchConfig's)")
    args = parser.parse_args()
    settings = {} if args.bits is None else {"bit_choices": tuple(int(b) for b in args.bits.split(","))}
    if args.grids is not None:
        settings["grids"] = tuple(args.grids.split(","))
    config = qslm.SearchConfig(methods=tuple(args.methods.split(",")), **settings)
    from spikingjelly.activation_based import functional

    torch.manual_seed(0)
    ids, labels = make_data(n=960)
    kinds = [("hand-written", HandwrittenSpikingClassifier, accuracy, None),
             ("snnTorch", SnnTorchClassifier, accuracy, None),
             ("SpikingJelly", SpikingJellyClassifier, sj_accuracy, functional.reset_net)]
    print("| model | units | FP32 bytes (unique tensors) | packed bytes (% of FP32) | validation | test FP32 → packed "
          "| reloaded test | seconds |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name, make, metric, reset in kinds:
        torch.manual_seed(0)
        model = train(make(), ids[:640], labels[:640], steps=150, reset=reset)
        task = qslm.Task(evaluate=lambda m: metric(m, ids[640:800], labels[640:800]),
                         calibration=[ids[i:i + 64] for i in range(0, 256, 64)],
                         test=lambda m: metric(m, ids[800:], labels[800:]),
                         profile_inputs=[ids[i:i + 1] for i in range(32)])
        started = time.perf_counter()
        result = qslm.search(model, task, out=Path(args.out) / name, overwrite=True, progress=False,
                             constraints=qslm.Constraints(max_drop=1.0, max_memory=args.max_memory),
                             config=config, cache_dir=Path(args.out) / "cache")
        seconds = time.perf_counter() - started
        report = result.report
        assert report["baseline"]["memory_bytes"] == unique_fp32_bytes(model)
        if report["final"] is None:
            print(f"| {name} | {len(find_units(model))} | {report['baseline']['memory_bytes']:,} | no plan | | | | "
                  f"{seconds:.0f} |")
            continue
        fresh = qslm.load_quantized(make(), Path(args.out) / name)
        base, final = report["baseline"], report["final"]
        print(f"| {name} | {len(find_units(model))} | {base['memory_bytes']:,} | {final['memory_bytes']:,} "
              f"({100 * final['memory_bytes'] / base['memory_bytes']:.1f}%) | {report['chosen']['metric']:.2f} | "
              f"{base['metric_test']:.2f} → {final['metric']:.2f} | {metric(fresh, ids[800:], labels[800:]):.2f} | "
              f"{seconds:.0f} |")


if __name__ == "__main__":
    main()
