"""``qslm quantize``: write a bit-packed quantized copy of a float model folder.

    qslm quantize spikegpt-wikitext2 --bits 4 --out spikegpt-int4
    qslm quantize spikegpt-sst2 --bits 3 --granularity group:32 --asymmetric --observer minmax --out m3
    qslm quantize spikegpt-sst2 --plan plan.json --bits 8 --neuron-bits 8 --out mixed

The output folder loads with ``qslm eval`` and ``qslm info`` like any model folder.
"""
from __future__ import annotations

import argparse

from ..quant.quantizer import SCALE_DTYPES
from .common import add_model_argument, add_overwrite_argument, print_json


def run(args: argparse.Namespace) -> int:
    from ..quant.api import quantize

    result = quantize(args.model, bits=args.bits, granularity=args.granularity,
                      symmetric=True if args.signed else args.symmetric, all_levels=args.signed or None,
                      observer=args.observer, percentile=args.percentile, scale_dtype=args.scale_dtype, plan=args.plan,
                      neuron_bits=args.neuron_bits, strict=args.strict, out=args.out,
                      overwrite=args.overwrite, method=args.method)
    if args.json:
        print_json(result.to_dict())
        return 0
    quantized = result.plan.quantized
    specs = sorted({spec.describe() for spec in quantized.values()})
    print(f"wrote {result.path}: {result.bytes:,} bytes, {100 * result.bytes / result.bytes_fp32:.1f}% of "
          f"{result.bytes_fp32:,} bytes fp32")
    print(f"  {len(quantized)} of {len(result.plan.units)} units quantized ({'; '.join(specs) or 'none'}), "
          f"{len(result.plan.neurons)} neuron states in fixed point")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="quantize a model's weights (and optionally neuron state) and write a packed folder",
        description="Uniform integer post-training quantization; writes config.json, model.safetensors "
                    "(bit-packed), quant_plan.json and tokenizer.json. --bits sets every unit the plan does "
                    "not mention; --plan sets units one by one.")
    add_model_argument(parser)
    parser.add_argument("--bits", type=int, default=None, help="weight bit-width: 1 (with --method binary), 2, 3, 4, "
                        "5, 6, 8 or 16")
    parser.add_argument("--method", default=None, metavar="M",
                        help="quantizer method for --bits: rtn (default), codebook, ternary (2 bits stored at 1.6) "
                             "or binary (1 bit: sign x mean |w| per row); gptq needs calibration, see qslm search")
    parser.add_argument("--granularity", default=None, metavar="per-channel|per-tensor|group:G",
                        help="one scale per output channel (default), per tensor, or per G input values")
    symmetry = parser.add_mutually_exclusive_group()
    symmetry.add_argument("--symmetric", dest="symmetric", action="store_true", default=None,
                          help="codes centred on 0, no zero-point, 2**bits - 1 levels (default)")
    symmetry.add_argument("--signed", action="store_true",
                          help="no zero-point, every code used: [-2**(bits-1), 2**(bits-1) - 1] x scale "
                               "(2-bit: -2, -1, 0, +1)")
    symmetry.add_argument("--asymmetric", dest="symmetric", action="store_false",
                          help="min/max range with an integer zero-point per group")
    parser.add_argument("--observer", default=None, choices=["mse", "minmax", "percentile"],
                        help="clipping range: MSE-optimal (default), full min/max, or a percentile")
    parser.add_argument("--percentile", type=float, default=None,
                        help="with --observer percentile: the percentile kept (default 99.9)")
    parser.add_argument("--scale-dtype", default=None, choices=list(SCALE_DTYPES),
                        help="how scales are stored: float16 under one power-of-two exponent per unit (default), "
                             "or float32")
    parser.add_argument("--plan", default=None, metavar="PLAN.json", help="per-unit plan (quant_plan.json format)")
    parser.add_argument("--neuron-bits", type=int, default=None, metavar="K",
                        help="fixed-point LIF state with K bits over +-2 thresholds, for every neuron")
    parser.add_argument("--strict", action="store_true",
                        help="fail unless the plan (with --bits) covers every quantizable unit")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output model folder: new, empty, or an earlier quantize output")
    add_overwrite_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)
