"""``qslm search``: tiered mixed-precision search (or a baseline strategy) under constraints."""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from ..errors import QslmError
from ..quant.quantizer import SCALE_DTYPES
from ..search.confidence import DEFAULT_CONFIDENCE
from ..search.config import SENSITIVITY_METHODS, SENSITIVITY_TABLES, SearchConfig
from ..search.strategies import strategy_names
from ..tasks.presets import DEFAULT_SIZES
from .common import add_device_argument, add_model_argument, add_overwrite_argument, claim_output, print_table
from .task_options import add_task_arguments, data_options


DEFAULTS = SearchConfig()  # the flags' defaults are the config's, written once there


def parse_bits(text: str) -> list[int]:
    try:
        bits = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise QslmError(f"--bits {text!r}: expected comma-separated integers, e.g. 2,3,4,5,6,8") from None
    if not bits:
        raise QslmError("--bits is empty; expected e.g. 2,3,4,5,6,8")
    return bits


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``--methods rtn,gptq``, ``--grids sym,signed``: the names, checked by SearchConfig (None when not given:
    its default)."""
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


def integer_at_least(least: int):
    """An argparse ``type=``: an integer >= ``least``, so a 0 that would silently mean "the default" is refused
    with the flag's name."""
    expected = "a positive integer" if least == 1 else f"an integer >= {least}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = integer_at_least(1)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``search`` and ``demo``."""
    parser.add_argument("--max-drop", type=float, default=None,
                        help="higher-is-better metrics (sst2 accuracy): max drop in the metric's points vs FP32, "
                             "e.g. 1.0")
    parser.add_argument("--max-relative-increase", type=float, default=None,
                        help="lower-is-better metrics (wikitext2 perplexity): max relative increase vs FP32, "
                             "e.g. 0.03 for +3%%")
    parser.add_argument("--max-ppl-increase", dest="max_relative_increase", type=float, default=None,
                        help=argparse.SUPPRESS)  # the former name, kept so existing commands still run
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                        help="a quality limit holds when the upper bound of the loss at this confidence is within "
                             f"it, on per-example scores (default {DEFAULT_CONFIDENCE}; 0.5: the estimate alone)")
    parser.add_argument("--max-memory", default=None,
                        help="max memory: a fraction of FP32 in (0, 1] (0.125), a percentage (12.5%%) or a size "
                             "with a unit (3MB, 3MiB, 512kB, 3145728B)")
    parser.add_argument("--max-energy", default=None,
                        help="max energy per inference: a fraction of FP32 in (0, 1], a percentage, or an amount "
                             "with a unit (250nJ, 1.5uJ, 4e5pJ)")
    parser.add_argument("--weights", default=None,
                        help="objective weights, default quality=1,memory=1,energy=0.5,latency=0 (latency: "
                             "modelled from the hardware profile)")
    parser.add_argument("--bits", default=None,
                        help=f"candidate bit-widths (default {','.join(map(str, DEFAULTS.bit_choices))})")
    parser.add_argument("--strategy", default=None, choices=strategy_names(),
                        help=f"default {DEFAULTS.strategy}")
    parser.add_argument("--sensitivity", default=None, choices=SENSITIVITY_METHODS,
                        help=f"how a unit's damage is measured (default {DEFAULTS.sensitivity_method}): exact, the "
                             "whole model per measurement; local, each block alone with a Fisher estimate, time "
                             "linear in depth (for deep models)")
    parser.add_argument("--max-evals", type=positive_int, default=None,
                        help="candidate evaluation budget (random/nsga2 default: 60)")
    parser.add_argument("--sensitivity-table", default=None, choices=list(SENSITIVITY_TABLES),
                        help=f"needed (default {DEFAULTS.sensitivity_table}): measure each sensitivity when the "
                             "search first asks for it; full: every unit and block at every bit-width first, all in the report (same plan)")
    parser.add_argument("--calibration-size", type=positive_int, default=None,
                        help=f"sensitivity calibration: examples (sst2, default {DEFAULT_SIZES['sst2']['calibration']}) "
                             f"or tokens (wikitext2, default {DEFAULT_SIZES['wikitext2']['calibration']})")
    parser.add_argument("--quantizer-calibration-size", type=positive_int, default=None,
                        help="what gptq and codebook fit to: training examples (sst2, default "
                             f"{DEFAULT_SIZES['sst2']['quantizer']}) or tokens of training text (wikitext2, default "
                             f"{DEFAULT_SIZES['wikitext2']['quantizer']}); for your files, of the calibration file "
                             "(default: the validation file)")
    parser.add_argument("--validation-size", type=positive_int, default=None,
                        help="candidate checks: held-out whole sentences (sst2, default "
                             f"{DEFAULT_SIZES['sst2']['validation']}) or words (wikitext2, default "
                             f"{DEFAULT_SIZES['wikitext2']['validation']})")
    parser.add_argument("--hardware", default=None,
                        help="energy and latency profile: bundled name (default_45nm, neuromorphic) or JSON path "
                             f"(default {DEFAULTS.hardware})")
    parser.add_argument("--reported-limit", type=positive_int, default=None,
                        help="verify on the first N examples (sst2) / lines (wikitext2) of the reported split only "
                             "(default: all of it)")
    parser.add_argument("--seed", type=integer_at_least(0), default=None, help=f"default {DEFAULTS.seed}")
    parser.add_argument("--methods", default=None, metavar="M,...",
                        help="quantizers a unit may use: rtn (round to nearest), gptq (error compensation from "
                             "calibration inputs), codebook (non-uniform levels per row), ternary (rtn's three "
                             "2-bit levels stored five weights a byte), binary (1 bit: the sign x a scale per row), "
                             "learned (rtn's grid, each weight's rounding learned on the calibration inputs; about "
                             "a second per unit and width); with several, each unit takes per bit-width "
                             "the one that damages its outputs least, in the fewest bytes (default: rtn,gptq,codebook)")
    parser.add_argument("--signed", action="store_true",
                        help="rtn and gptq use every code of a width: [-2**(b-1), 2**(b-1) - 1] x scale "
                             "(2-bit: -2, -1, 0, +1) instead of the symmetric 2**b - 1 levels, in the same bytes")
    parser.add_argument("--grids", default=None, metavar="G,...",
                        help="uniform grids a unit may take, weighed per unit and width like the methods: sym "
                             "(2**b - 1 symmetric levels), signed (every code, as --signed), asym (a zero-point "
                             "per row, a few bytes more), ternary (2 bits only: the three symmetric levels stored 1.6 bits a "
                             "weight, in place of sym there); default: all four, or with --signed the signed grid alone")
    parser.add_argument("--scale-dtype", default=None, choices=list(SCALE_DTYPES),
                        help="how scales are stored: float16 under one power-of-two exponent per unit (default), "
                             "or float32 (2 more bytes per scale)")
    parser.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                        help="keep units matching this glob float (unit names or parameter paths, e.g. '*.pos'; "
                             "repeatable)")
    parser.add_argument("--block-cache", type=integer_at_least(0), default=None, metavar="MIB",
                        help="memory for block outputs reused between measurements, in MiB (default "
                             f"{DEFAULTS.block_cache_mb}; 0: none); the results are the same either way")
    parser.add_argument("--cache-dir", default=None, help="sensitivity cache (default: $QSLM_CACHE_DIR or ~/.cache/qslm)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="measure on N Ray workers on this machine, each with a model replica (default 1: in "
                             "this process; needs pip install 'qslm[ray]'); the plan is the same")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="measure on the Ray cluster at ADDR ('auto', HOST:6379), --workers actors (default: "
                             "one per CPU, or per GPU for a CUDA model)")
    add_device_argument(parser)


def options_from_args(args: argparse.Namespace) -> dict:
    """``run_search``'s keyword arguments: the constraints, one ``SearchConfig`` (the flags given; the rest
    its defaults), one ``DataConfig``, and where measurements run."""
    from ..search.confidence import check_confidence
    from ..search.limits import parse_energy_limit, parse_memory_limit, parse_quality_limit
    from ..search.objective import Constraints, parse_weights
    from ..tasks.data_config import DataConfig

    # Parsed here with the flags' names, so a bad value is reported as the option the user typed.
    constraints = Constraints(parse_quality_limit(args.max_drop, "--max-drop"),
                              parse_quality_limit(args.max_relative_increase, "--max-relative-increase"),
                              parse_memory_limit(args.max_memory, "--max-memory"),
                              parse_energy_limit(args.max_energy, "--max-energy"),
                              check_confidence(args.confidence, "--confidence"))
    spec = DEFAULTS.base_spec
    base_spec = dataclasses.replace(spec, scale_dtype=args.scale_dtype or spec.scale_dtype, all_levels=args.signed)
    given = dict(objective_weights=None if args.weights is None else parse_weights(args.weights),
                 bit_choices=None if args.bits is None else tuple(parse_bits(args.bits)), strategy=args.strategy,
                 max_evaluations=args.max_evals, hardware=args.hardware, seed=args.seed,
                 sensitivity_method=args.sensitivity, sensitivity_table=args.sensitivity_table,
                 ignore=tuple(args.ignore), methods=parse_names(args.methods), base_spec=base_spec,
                 grids=parse_names(args.grids),
                 block_cache_mb=args.block_cache)
    data = DataConfig(calibration_size=args.calibration_size,
                      quantizer_calibration_size=args.quantizer_calibration_size,
                      validation_size=args.validation_size, reported_limit=args.reported_limit, **data_options(args))
    return dict(constraints=constraints, config=SearchConfig(**{k: v for k, v in given.items() if v is not None}),
                data=data, cache_dir=args.cache_dir, device=args.device, overwrite=args.overwrite,
                workers=args.workers, ray_address=args.ray_address)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _figure(value, form: str) -> str:
    """``value`` formatted, or "not finite" for a test figure the report holds as null (NaN, infinity)."""
    return form.format(value) if value is not None and math.isfinite(value) else "not finite"


def print_summary(result) -> None:
    report = result.report
    hib = report["higher_is_better"]
    base, final = report["baseline"], report.get("final")
    if final is None:
        for line in report["headline"]:
            print(line.replace("**", ""))
        print(f"closest plans are listed in {result.out / 'report.md'}")
        return
    split = final["split"] + (f", first {report['reported_limit']}" if report.get("reported_limit") else "")
    rows = [
        ["memory (MB)", f"{base['memory_bytes'] / 1e6:.3f}", f"{final['memory_bytes'] / 1e6:.3f}",
         f"{100 * final['memory_bytes'] / base['memory_bytes']:.1f}% of FP32"],
        ["energy / inference (uJ)", f"{base['energy_pj'] / 1e6:.3f}", f"{final['energy_pj'] / 1e6:.3f}",
         f"{100 * final['energy_pj'] / base['energy_pj']:.1f}% of FP32"],
        ["power (mW)", f"{base['power_mw']:.3f}", f"{final['power_mw']:.3f}",
         f"{100 * final['power_mw'] / base['power_mw']:.1f}% of FP32"],
        [f"{report['metric_name']} ({split})", _figure(base['metric_' + final['split']], "{:.4g}"),
         _figure(final['metric'], "{:.4g}"),
         # 0.0 - loss: a loss of exactly 0 reads +0, where -loss would print -0
         _figure(0.0 - _number(final["quality_loss"]), "{:+.4g}") if hib
         else _figure(100 * _number(final['quality_loss']), "{:+.2f}%")],
    ]
    print_table(rows, ["", "FP32", "QSLM", "change"])
    for line in report["headline"]:
        print(line.replace("**", ""), file=sys.stdout if final["quality_within_limit"] else sys.stderr)
    print(f"{len(report['candidates'])} candidates evaluated in {report['seconds']['total']:.0f} s; "
          f"model and report written to {result.out}")


def run(args: argparse.Namespace) -> int:
    from ..outputs import check_writable_folder
    from ..search.executors import ExecutorChoice
    from ..search.run import run_search

    # Before --out is claimed: --workers 2 without Ray installed, a --ray-address where no cluster answers or
    # lets this process join (the search then uses the cluster joined here).
    with ExecutorChoice(args.workers, args.ray_address) as executors:
        executors.connect()
        # Checked before any work: the search writes its model, reports and journal into --out.
        with claim_output(args.out, "search", args.overwrite, inputs=[args.model]):
            if args.cache_dir is not None:
                check_writable_folder(args.cache_dir, "cache folder")
            result = run_search(args.model, args.task, args.out, **options_from_args(args))
    print_summary(result)
    return 0 if result.report.get("final") else 3


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="search a mixed-precision plan under constraints and write the quantized model + report",
        description="Profile, measure sensitivity, run the tiered (global -> block -> module) search or a "
                    "baseline strategy, verify on the reported split, export the bit-packed model and a report. "
                    "Re-running the same command resumes from OUT/journal.jsonl. Exit code 3: no plan met "
                    "the constraints (the report lists the closest).")
    add_model_argument(parser)
    add_task_arguments(parser, required=True, task_help="sst2 / wikitext2 (presets, read from --data-dir), or "
                       "text-classification / language-modeling over your --data-files")
    parser.add_argument("--out", required=True,
                        help="output folder: quantized model, reports, journal (new, empty, or an earlier search's)")
    add_overwrite_argument(parser)
    add_search_options(parser)
    parser.set_defaults(func=run)
