"""``qslm eval``: task metric of a float or quantized model, with per-layer firing rates.

    qslm eval spikegpt-sst2 --task sst2
    qslm eval MODEL --task text-classification --data-files test=reviews.csv --text-column review --labels neg,pos
"""
from __future__ import annotations

import argparse

from ..device import resolve_device
from ..errors import QslmError
from .common import add_device_argument, add_model_argument, print_json, print_table
from .task_options import add_task_arguments, data_options


def evaluate_model(model_ref: str, task: str, split: str | None = None, limit: int | None = None,
                   data_dir=None, device=None, progress: bool = False, data_files=None, text_column=None,
                   label_column=None, labels=None):
    """Load a model and evaluate it on a task's split (default: the reported one: sst2 dev, wikitext2 test,
    the test file of a task over ``data_files``); ``limit`` keeps the first N examples or lines."""
    from ..checkpoint import load_model
    from ..tasks.presets import check_model_kind, default_split, evaluate_data, split_data

    if limit is not None and limit <= 0:
        raise QslmError(f"--limit must be positive, got {limit}")
    loaded = load_model(model_ref, resolve_device(device))
    check_model_kind(loaded, task, "evaluated")
    split = split or default_split(task)
    data = split_data(loaded, task, split, data_files, data_dir, text_column, label_column, labels)
    return evaluate_data(loaded.model, loaded.tokenizer, task, data, split, limit, progress)


def run(args: argparse.Namespace) -> int:
    result = evaluate_model(args.model, args.task, args.split, args.limit, device=args.device,
                            progress=not args.json, **data_options(args))
    if args.json:
        print_json(result.to_dict())
        return 0
    if result.accuracy is not None:
        metric, unit = f"accuracy {result.accuracy:.4f}", "examples"
    else:
        metric, unit = f"word perplexity {result.perplexity:.2f}", "words"
    print(f"{result.task} {result.split}: {metric} on {result.n} {unit} in {result.seconds:.1f}s")
    print_table([[name, f"{rate:.4f}"] for name, rate in result.firing_rates.items()], ["neuron", "firing rate"])
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model (accuracy or word-level perplexity)",
                                   description="Evaluate a float or quantized model on SST-2, WikiText-2 or your "
                                               "own files.")
    add_model_argument(parser)
    add_task_arguments(parser, required=True)
    parser.add_argument("--split", default=None,
                        help="sst2: dev (default) or train; wikitext2: test (default), valid or train; "
                             "your files: test (default), validation or calibration")
    parser.add_argument("--limit", type=int, default=None, help="first N examples or first N lines of text")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_device_argument(parser)
    parser.set_defaults(func=run)
