"""``qslm profile``: the model -> block -> module tree with parameters, FP32 bytes, measured firing
rates, operation counts and FP32 energy per inference, measured on a small calibration slice
(the SST-2 held-out slice of train, or the held-out tail of WikiText-2 valid; never a reported split).

    qslm profile spikegpt-sst2 --limit 64
    qslm profile runs/spikegpt-lm --task wikitext2 --json
"""
from __future__ import annotations

import argparse
from typing import Callable

from ..errors import QslmError
from .common import add_data_dir_argument, add_device_argument, add_model_argument, print_json, print_table

DEFAULT_LIMIT = {"sst2": 64, "wikitext2": 40}  # examples / lines of the calibration slice


def calibration_runner(loaded, task: str, data_dir=None, limit: int | None = None) -> Callable[[], int]:
    """A function that runs ``loaded.model`` over the calibration slice at batch size 1 (the deployment
    setting: no padding, one sequence per forward) and returns how many sequences it ran.
    ``limit`` keeps the first N examples (sst2) or lines (wikitext2) of the slice."""
    from ..data import sst2, wikitext
    from ..evaluate import evaluate_classification, evaluate_lm

    if limit is not None and limit <= 0:
        raise QslmError(f"--limit must be positive, got {limit}")
    limit = limit or DEFAULT_LIMIT[task]
    if task == "sst2":
        examples = sst2.calibration_examples(data_dir)[:limit]

        def run_model():
            evaluate_classification(loaded.model, loaded.tokenizer, examples, "calibration", batch_size=1)
    else:
        lines = wikitext.calibration_text(data_dir).splitlines(keepends=True)
        text = "".join(lines[:limit])
        if not text.strip():
            raise QslmError(f"the first {limit} lines of the WikiText-2 calibration slice are blank; raise --limit")

        def run_model():
            evaluate_lm(loaded.model, loaded.tokenizer, text, "calibration", batch_size=1)

    def run() -> int:
        sequences = 0

        def count(_module, inputs):
            nonlocal sequences
            sequences += inputs[0].shape[0]

        handle = loaded.model.register_forward_pre_hook(count)
        try:
            run_model()
        finally:
            handle.remove()
        return sequences

    return run


def profile_model(model_ref: str, task: str | None = None, data_dir=None, limit: int | None = None,
                  hardware: str = "default_45nm", device=None) -> dict:
    """Hierarchy, firing rates, op counts and FP32 energy of a model, as one JSON-ready dict."""
    from ..analysis.cost import OpCounter, energy_per_inference, load_hardware_profile, power_mw
    from ..analysis.hierarchy import SpikeRecorder, build_hierarchy
    from ..device import resolve_device
    from ..models.zoo import check_task, load_model

    profile = load_hardware_profile(hardware)
    loaded = load_model(model_ref, resolve_device(device))
    task = check_task(loaded, task, "profiled")
    run = calibration_runner(loaded, task, data_dir, limit)
    hierarchy = build_hierarchy(loaded.model)
    with SpikeRecorder(loaded.model) as spikes, OpCounter(loaded.model) as counter:
        sequences = run()
    hierarchy.attach_firing_rates(spikes.records)
    ops = counter.result(sequences)
    energy = energy_per_inference(ops, None, profile)
    return {"path": str(loaded.path), "arch": loaded.config.arch, "task": task,
            "calibration": {"split": "calibration", "sequences": sequences, "limit": limit or DEFAULT_LIMIT[task]},
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
    print(f"calibration: {info['task']} held-out slice, {info['calibration']['sequences']} sequences; "
          f"energy model {info['hardware']}")

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
    info = profile_model(args.model, args.task, args.data_dir, args.limit, args.hardware, args.device)
    if args.json:
        print_json(info)
    else:
        print_profile(info)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile", help="block/module tree with parameters, bytes, firing rates and energy",
        description="Profile a model into blocks and quantizable modules, and measure firing rates, operation "
                    "counts and FP32 energy on a small calibration slice (never the reported split).")
    add_model_argument(parser)
    parser.add_argument("--task", default=None, choices=["sst2", "wikitext2"],
                        help="calibration data (default: the model's own task)")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"first N calibration examples (sst2, default {DEFAULT_LIMIT['sst2']}) "
                             f"or lines (wikitext2, default {DEFAULT_LIMIT['wikitext2']})")
    parser.add_argument("--hardware", default="default_45nm",
                        help="energy model: a bundled profile (default_45nm, neuromorphic) or a JSON file")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_data_dir_argument(parser)
    add_device_argument(parser)
    parser.set_defaults(func=run)
