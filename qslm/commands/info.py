"""``qslm info``: what a model folder holds: architecture, parameters, bytes per unit (FP32 vs stored)."""
from __future__ import annotations

import argparse

from .common import add_model_argument, print_json, print_table


def model_info(model_ref: str) -> dict:
    from ..checkpoint import load_model
    from ..quant.memory import memory_report

    loaded = load_model(model_ref)
    report = memory_report(loaded.model, loaded.path)
    return {"path": str(loaded.path), "arch": loaded.config.arch, "task": getattr(loaded.config, "task", None),
            **report}


def run(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    if args.json:
        print_json(info)
        return 0
    print(f"{info['path']}  ({info['arch']}, {info['task']})")
    rows = [[u["name"], u["parameters"], u.get("spec", "fp32"), u["bytes_fp32"], u["bytes"]] for u in info["units"]]
    print_table(rows, ["unit", "parameters", "precision", "bytes fp32", "bytes"])
    print(f"total: {info['parameters']:,} parameters, {info['bytes_fp32']:,} bytes fp32, {info['bytes']:,} bytes "
          f"({100 * info['bytes'] / info['bytes_fp32']:.1f}% of fp32)")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="parameters and bytes per unit, FP32 vs the model's plan",
                                   description="Show a model's parameters and bytes per unit and in total.")
    add_model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)
