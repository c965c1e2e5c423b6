"""``qslm demo``: the main job on the bundled default model, with default constraints."""
from __future__ import annotations

import argparse

from .common import add_data_dir_argument, add_overwrite_argument
from .search import add_search_options, options_from_args, print_summary

DEMO_MODEL = "spikegpt-sst2"
DEMO_TASK = "sst2"
DEMO_CONSTRAINTS = {"max_drop": 1.0, "max_memory": 0.125}


def run(args: argparse.Namespace) -> int:
    from ..search.run import run_search

    for name, value in DEMO_CONSTRAINTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.data_files = args.text_column = args.label_column = args.labels = None  # the demo's task is a preset
    options = options_from_args(args)
    constraints = options["constraints"]
    print(f"qslm demo: searching {args.model} on {DEMO_TASK} with max accuracy drop {constraints.max_drop} points "
          f"and max memory {constraints.max_memory}; writing {args.out}/")
    result = run_search(args.model, DEMO_TASK, args.out, **options)
    print_summary(result)
    return 0 if result.report.get("final") else 3


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help=f"search the bundled {DEMO_MODEL} model under default constraints and write the report",
        description=f"Run the full QSLM pipeline on the bundled {DEMO_MODEL} model (SST-2): sensitivity, tiered "
                    f"search with max accuracy drop {DEMO_CONSTRAINTS['max_drop']} points and memory at most "
                    f"{DEMO_CONSTRAINTS['max_memory']:.1%} of FP32, verification on SST-2 dev, bit-packed export "
                    f"and report. Needs the data folder ($QSLM_DATA_DIR or --data-dir).")
    parser.add_argument("--model", default=DEMO_MODEL, help=f"model to search (default {DEMO_MODEL})")
    parser.add_argument("--out", default="qslm-demo", help="output folder (default ./qslm-demo)")
    add_overwrite_argument(parser)
    add_search_options(parser)
    add_data_dir_argument(parser)
    parser.set_defaults(func=run)
