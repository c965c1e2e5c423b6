"""Quantization methods benchmark: rtn vs gptq vs codebook, per unit and end to end.

    python bench/methods_bench.py                           # spikegpt-sst2, 2/3/4 bits
    python bench/methods_bench.py --model path/to/folder --bits 3 --units 'blocks.0.*' --act-order

1. Timing: GPTQ on one 768x768 unit (per-channel, 4-bit) from a Hessian of 4096 correlated inputs.
2. Per unit: Hessians are recorded on calibration batches of SST-2 train sentences, then each unit is
   quantized per-channel (symmetric, MSE clipping) by each method and scored by
   * weight error  ||W - Q||^2 / ||W||^2;
   * output error  tr((W - Q) H (W - Q)^T) / tr(W H W^T), with H the second moment of the unit's
     inputs on *held-out* batches (SST-2 dev), i.e. the relative squared error of the unit's outputs.
   Embeddings take no float inputs, so they have no output error and no gptq ("-").
3. End to end: every unit at one method and width, the relative squared error of the model's logits
   on the held-out batches.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qslm.checkpoint import load_model  # noqa: E402
from qslm.data.batching import collate, encode_examples  # noqa: E402
from qslm.data.tokenizer import pad_id  # noqa: E402
from qslm.quant.apply import fake_quantized, quantize_unit  # noqa: E402
from qslm.quant.context import GptqOptions, QuantContext
from qslm.quant.methods.gptq import gptq_quantize  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.quantizer import QuantSpec  # noqa: E402
from qslm.quant.unit_inputs import record_hessians  # noqa: E402
from qslm.quant.units import quantizable_units, unit_tensor  # noqa: E402
from qslm.tasks.datasets.sst2 import load_sst2  # noqa: E402

METHODS = ("rtn", "gptq", "codebook")


def time_gptq(size: int = 768, samples: int = 4096, repeats: int = 3) -> float:
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(size, size, generator=generator) / size ** 0.5
    mixing = torch.eye(size) + torch.randn(size, size, generator=generator) / size ** 0.5
    x = torch.randn(samples, size, generator=generator) @ mixing
    hessian = 2 * x.double().t() @ x.double() / samples
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        gptq_quantize(w, QuantSpec(4, method="gptq"), hessian)
        best = min(best, time.perf_counter() - started)
    return best


def sst2_batches(loaded, split: str, count: int, size: int, data_dir: str | None) -> list[tuple]:
    examples = load_sst2(split, data_dir)[:count * size]
    items = encode_examples(loaded.tokenizer, examples, loaded.config.ctx_len)
    pad = pad_id(loaded.tokenizer)
    batches = []
    for start in range(0, len(items), size):
        ids, mask, _ = collate(items[start:start + size], pad)
        batches.append((ids, mask) if loaded.config.task == "classification" else (ids,))
    return batches


def spec_for(method: str, bits: int) -> QuantSpec:
    return QuantSpec(bits, method=method)


def relative(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def unit_errors(model, name, unit, bits, context, held_out) -> dict[str, tuple[float, float | None]]:
    """method -> (weight error, output error or None) for one unit at ``bits``."""
    w = unit_tensor(model, unit).detach().to(torch.float32)
    matrix = w.reshape(w.shape[0], -1)
    h = held_out.get(name)
    h = None if h is None else h.hessian.to(torch.float32)
    errors = {}
    for method in METHODS:
        if method == "gptq" and context.hessian(name) is None:
            continue
        d = (w - quantize_unit(name, w, spec_for(method, bits), context).dequantize()).reshape(matrix.shape)
        weight_error = relative(float(d.square().sum()), float(matrix.square().sum()))
        output_error = (None if h is None else
                        relative(float(torch.einsum("ij,jk,ik->", d, h, d)),
                                 float(torch.einsum("ij,jk,ik->", matrix, h, matrix))))
        errors[method] = (weight_error, output_error)
    return errors


def cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return f"{'-':>17}"
    weight_error, output_error = value
    return f"{weight_error:8.4f} {('-' if output_error is None else f'{output_error:.4f}'):>8}"


def logits_error(model, plan: QuantPlan, context: QuantContext, batches, reference) -> float:
    num = den = 0.0
    with torch.no_grad(), fake_quantized(model, plan, context=context):
        for batch, ref in zip(batches, reference):
            num += float((model(*batch) - ref).square().sum())
            den += float(ref.square().sum())
    return relative(num, den)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spikegpt-sst2")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--units", default="*", help="glob of unit names for the per-unit table")
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--held-out-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--act-order", action="store_true")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    print(f"GPTQ 768x768 int4 per-channel: {time_gptq():.3f} s (best of 3)\n")

    loaded = load_model(args.model)
    model = loaded.model.eval()
    calibration = sst2_batches(loaded, "train", args.calibration_batches, args.batch_size, args.data_dir)
    held_out_batches = sst2_batches(loaded, "dev", args.held_out_batches, args.batch_size, args.data_dir)
    context = QuantContext(record_hessians(model, calibration), GptqOptions(act_order=args.act_order))
    held_out = record_hessians(model, held_out_batches)
    units = {name: unit for name, unit in quantizable_units(model).items() if fnmatch.fnmatchcase(name, args.units)}

    print(f"{args.model}: {len(calibration)} calibration and {len(held_out_batches)} held-out batches of "
          f"{args.batch_size}; per-channel sym mse, act-order {'on' if args.act_order else 'off'}")
    print("relative squared error: weight / unit output (held-out inputs)")
    print(f"{'unit':28} {'bits':>4}  " + "  ".join(f"{m:>17}" for m in METHODS))
    totals = {(bits, method): [] for bits in args.bits for method in METHODS}
    for name, unit in units.items():
        for bits in args.bits:
            errors = unit_errors(model, name, unit, bits, context, held_out)
            for method, (_, output_error) in errors.items():
                if output_error is not None:
                    totals[bits, method].append(output_error)
            print(f"{name:28} {bits:>4}  " + "  ".join(cell(errors.get(method)) for method in METHODS))
    print("\nmean unit output error over units with inputs")
    for bits in args.bits:
        print(f"  int{bits}: " + "  ".join(
            f"{method} {sum(v) / len(v):.4f}" for method in METHODS if (v := totals[bits, method])))

    with torch.no_grad():
        reference = [model(*batch) for batch in held_out_batches]
    print("\nend to end (every unit; embeddings rtn where the method is gptq): relative logits error")
    for bits in args.bits:
        row = []
        for method in METHODS:
            plan = QuantPlan({name: spec_for("rtn" if method == "gptq" and context.hessian(name) is None else method,
                                             bits) for name in quantizable_units(model)})
            row.append(f"{method} {logits_error(model, plan, context, held_out_batches, reference):.4f}")
        print(f"  int{bits}: " + "  ".join(row))


if __name__ == "__main__":
    main()
