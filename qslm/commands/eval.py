"""``qslm eval``: task metric of a float or quantized model, with per-layer firing rates."""
from __future__ import annotations

import argparse

from ..device import resolve_device
from ..errors import QslmError
from .common import add_data_dir_argument, add_device_argument, add_model_argument, print_json, print_table

DEFAULT_SPLIT = {"sst2": "dev", "wikitext2": "test"}


def evaluate_model(model_ref: str, task: str, split: str | None = None, limit: int | None = None,
                   data_dir=None, device=None, progress: bool = False):
    """Load a model and evaluate it on a task split; ``limit`` keeps the first N examples (sst2)
    or the first N lines (wikitext2)."""
    from ..evaluate import evaluate_split
    from ..models.zoo import check_task, load_model

    split = split or DEFAULT_SPLIT[task]
    if limit is not None and limit <= 0:
        raise QslmError(f"--limit must be positive, got {limit}")
    loaded = load_model(model_ref, resolve_device(device))
    check_task(loaded, task, "evaluated")
    return evaluate_split(loaded.model, loaded.tokenizer, task, split, data_dir, limit, progress)


def run(args: argparse.Namespace) -> int:
    result = evaluate_model(args.model, args.task, args.split, args.limit, args.data_dir, args.device,
                            progress=not args.json)
    if args.json:
        print_json(result.to_dict())
        return 0
    metric = (f"accuracy {result.accuracy:.4f}" if result.accuracy is not None
              else f"word perplexity {result.perplexity:.2f}")
    unit = "examples" if result.task == "sst2" else "words"
    print(f"{result.task} {result.split}: {metric} on {result.n} {unit} in {result.seconds:.1f}s")
    print_table([[name, f"{rate:.4f}"] for name, rate in result.firing_rates.items()], ["neuron", "firing rate"])
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model (accuracy or word-level perplexity)",
                                   description="Evaluate a float or quantized model on SST-2 or WikiText-2.")
    add_model_argument(parser)
    parser.add_argument("--task", required=True, choices=["sst2", "wikitext2"])
    parser.add_argument("--split", default=None,
                        help="sst2: dev (default) or train; wikitext2: test (default), valid or train")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N examples (sst2) or first N lines (wikitext2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_data_dir_argument(parser)
    add_device_argument(parser)
    parser.set_defaults(func=run)
