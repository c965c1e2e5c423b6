"""Ternary storage against two-bit codes: every unit of each bundled model at the symmetric two-bit grid
(three levels), stored by rtn (2 bits a weight) and by the ternary method (1.6 bits a weight), with the
reported split's metric of each packed model (the same values, so the same metric, in fewer bytes).

    QSLM_DATA_DIR=../shared/data python bench/ternary_bench.py [--models spikegpt-sst2,...] [--limit N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qslm  # noqa: E402
from qslm.checkpoint import load_model  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.quantizer import QuantSpec  # noqa: E402
from qslm.quant.units import find_units  # noqa: E402
from qslm.tasks.presets import evaluate_split  # noqa: E402

MODELS = {"spikegpt-sst2": ("sst2", "dev"), "spiking-encoder-sst2": ("sst2", "dev"),
          "spikegpt-wt2": ("wikitext2", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--limit", type=int, default=None, help="first N examples / lines of the split")
    args = parser.parse_args()
    print("| model | storage | bytes | % of FP32 | accuracy % / word perplexity | seconds |\n"
          "|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        task, split = MODELS[name]
        float_model = load_model(name)
        units = list(find_units(float_model.model))
        for method in ("rtn", "ternary"):
            spec = QuantSpec(2, method=method, scale_dtype="float16")
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                result = qslm.quantize(name, plan=QuantPlan({u: spec for u in units}), out=Path(tmp) / "q")
                packed = load_model(result.path)
                evaluated = evaluate_split(packed.model, packed.tokenizer, task, split, limit=args.limit)
                metric = (100 * evaluated.accuracy if evaluated.accuracy is not None  # accuracy in %
                          else evaluated.perplexity)
                print(f"| {name} | {method} 2-bit ({'1.6' if method == 'ternary' else '2'} bits a weight) | "
                      f"{result.bytes:,} | {100 * result.bytes / result.bytes_fp32:.2f} | {metric:.2f} | "
                      f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
