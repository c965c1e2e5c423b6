"""``qslm profile``: the model -> block -> module tree with parameters, FP32 bytes, measured firing
rates, operation counts and FP32 energy per inference, measured on the task's profile inputs at batch
size 1 (presets: the SST-2 held-out slice of train, or the held-out tail of WikiText-2 valid; your files:
the calibration file, else the validation file; never a reported split).

    qslm profile spikegpt-sst2 --limit 64
    qslm profile runs/spikegpt-lm --task wikitext2 --json
    qslm profile MODEL --task text-classification --data-files validation=val.jsonl
"""
from __future__ import annotations

import argparse

from ..errors import QslmError
from ..tasks.presets import DEFAULT_SIZES, PRESETS, default_task
from .common import add_device_argument, add_model_argument, print_json, print_table
from .task_options import add_task_arguments, parse_data_files, task_from_args


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit <= 0:
        raise QslmError(f"--limit must be positive, got {limit}")


def profile_task(loaded, task, profile) -> dict:
    """Hierarchy, firing rates, op counts and FP32 energy of ``loaded`` on ``task``'s profile inputs under
    the hardware ``profile``, as one JSON-ready dict."""
    from ..analysis.energy import energy_per_inference, power_mw
    from ..analysis.hierarchy import SpikeRecorder, build_hierarchy
    from ..analysis.ops import OpCounter
    from ..model_inputs import run_inputs

    hierarchy = build_hierarchy(loaded.model)
    with SpikeRecorder(loaded.model) as spikes, OpCounter(loaded.model) as counter:
        sequences = run_inputs(loaded.model, task.profiling)
    hierarchy.attach_firing_rates(spikes.records)
    ops = counter.result(sequences)
    energy = energy_per_inference(ops, None, profile)
    return {"path": str(loaded.path), "arch": loaded.config.arch, "task": task.name,
            "calibration": {"split": "calibration", "sequences": sequences, "inputs": len(task.profiling)},
            "hardware": profile.name, "hierarchy": hierarchy.to_dict(), "groups": hierarchy.groups(),
            "op_counts": ops.to_dict(), "energy_fp32": energy.to_dict(),
            "energy_fp32_by_group": energy.by_group(hierarchy.groups()),
            "power_fp32_mw": power_mw(energy.total_pj, profile), "inference_rate_hz": profile.inference_rate_hz}


def _rate(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def print_profile(info: dict) -> None:
    tree, ops, energy = info["hierarchy"], info["op_counts"]["units"], info["energy_fp32"]["units"]
    print(f"{info['path']}  ({info['arch']}, {tree['model']}): {tree['parameters']:,} parameters, "
          f"{tree['bytes_fp32']:,} bytes fp32; {tree['quantizable_parameters']:,} in {len(ops)} quantizable units")
    print(f"calibration: {info['task']} {info['calibration']['source']}, {info['calibration']['sequences']} "
          f"sequences; energy model {info['hardware']}")

    def unit_row(unit: dict, indent: str) -> list:
        op = ops[unit["name"]]
        rate = op["input_rate"] if op["input"] in ("spikes", "mixed") else None
        return [indent + unit["name"], unit["kind"], f"{unit['parameters']:,}", f"{unit['bytes_fp32']:,}",
                op["input"], _rate(rate), _count(op["macs"]), _count(op["acs"]),
                f"{energy[unit['name']]['total_pj'] / 1e3:.2f}"]

    rows = []
    top_level = {u["name"]: u for u in tree["top_level"]}
    blocks = {b["name"]: b for b in tree["blocks"]}
    for group, members in info["groups"].items():
        if group in top_level:
            rows.append(unit_row(top_level[group], ""))
            continue
        block = blocks[group]
        rows.append([group, "block", f"{block['parameters']:,}", f"{block['bytes_fp32']:,}", "",
                     _rate(block["firing_rate"]), _count(sum(ops[m]["macs"] for m in members)),
                     _count(sum(ops[m]["acs"] for m in members)),
                     f"{info['energy_fp32_by_group'][group] / 1e3:.2f}"])
        rows.extend(unit_row(unit, "  ") for unit in block["modules"])
    print()
    print_table(rows, ["unit", "kind", "parameters", "bytes fp32", "input", "firing rate", "MACs/inf",
                       "ACs/inf", "energy fp32 nJ"])
    total = info["energy_fp32"]
    print()
    print(f"per inference (one sequence), fp32: {total['total_pj'] / 1e3:.2f} nJ "
          f"(compute {total['compute_pj'] / 1e3:.2f}, weight memory {total['memory_pj'] / 1e3:.2f}); "
          f"power at {info['inference_rate_hz']:g} inferences/s: {info['power_fp32_mw']:.4g} mW")
    print("firing rate: spikes per neuron output per time step (blocks); nonzero fraction of a unit's spike input")


def run(args: argparse.Namespace) -> int:
    from ..analysis.hardware import load_hardware_profile
    from ..checkpoint import load_model
    from ..device import resolve_device

    _check_limit(args.limit)
    profile = load_hardware_profile(args.hardware)
    loaded = load_model(args.model, resolve_device(args.device))
    name = args.task or default_task(loaded)
    task = task_from_args(args, loaded, name, action="profiled", profile_size=args.limit)
    info = profile_task(loaded, task, profile)
    info["calibration"]["source"] = "held-out slice" if name in PRESETS else _profiled_file(args)
    if args.json:
        print_json(info)
    else:
        print_profile(info)
    return 0


def _profiled_file(args: argparse.Namespace) -> str:
    files = parse_data_files(args.data_files)
    role = "calibration" if "calibration" in files else "validation"
    return f"{role} file {files[role]}"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile", help="block/module tree with parameters, bytes, firing rates and energy",
        description="Profile a model into blocks and quantizable modules, and measure firing rates, operation "
                    "counts and FP32 energy on a small calibration slice (never the reported split).")
    add_model_argument(parser)
    add_task_arguments(parser, task_help="the task whose calibration data is profiled (default: the model's "
                                         "own preset, sst2 or wikitext2)")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"first N calibration examples (default {DEFAULT_SIZES['sst2']['profile']}) "
                             f"or lines of text (default {DEFAULT_SIZES['wikitext2']['profile']})")
    parser.add_argument("--hardware", default="default_45nm",
                        help="energy model: a bundled profile (default_45nm, neuromorphic) or a JSON file")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_device_argument(parser)
    parser.set_defaults(func=run)
