"""``qslm train``: train a spike-driven model and write a model folder (resumable)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import WEIGHTS_FILE
from ..device import resolve_device
from ..errors import QslmError
from .common import add_data_dir_argument, add_device_argument, add_overwrite_argument, claim_output


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as {KEY: VALUE}; the training options read each value as its field's type."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QslmError(f"--set {item!r}: expected KEY=VALUE, e.g. n_layer=6")
        overrides[key] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    from ..train import TrainOptions, train

    options = TrainOptions(
        arch=args.arch, task=args.task, out=Path(args.out), steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, warmup=args.warmup, seed=args.seed, vocab_size=args.vocab_size,
        model_overrides=parse_overrides(args.set), init=args.init, corpora=args.corpus,
        wikitext_weight=args.wikitext_weight, length_weighting=args.length_weighting,
        ema_decay=args.ema_decay, teacher=args.teacher, distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, data_dir=args.data_dir,
        device=str(resolve_device(args.device)))
    # --out is checked (and created) before any work: hours of training into a folder the final write
    # must refuse would be wasted.
    with claim_output(args.out, "train", args.overwrite, inputs=[args.init, args.teacher]) as folder:
        if not args.overwrite and WEIGHTS_FILE in folder.manifest.files:
            # the same kind of job, but its result is a finished model this run would replace
            raise QslmError(f"output folder {args.out} already holds a trained model; choose another folder, "
                            "or pass --overwrite to replace it")
        out = train(options)
    print(f"wrote {out}")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a spike-driven model (resumable) and write a model folder",
        description="Train a SpikeGPT language model or a classifier. Checkpoints go to OUT.partial/; "
                    "re-running the same command after an interruption resumes.")
    parser.add_argument("--arch", required=True, choices=["spikegpt", "spiking-encoder"])
    parser.add_argument("--task", required=True, choices=["wikitext2", "sst2"],
                        help="wikitext2: language modelling (SpikeGPT: next token; spiking-encoder: masked tokens, a "
                             "pre-training stage for --task sst2 --init); sst2: sentiment classification")
    parser.add_argument("--out", required=True,
                        help="model folder to write: new, empty, or an earlier train output")
    add_overwrite_argument(parser)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary trained for a new model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config field, e.g. --set n_layer=6 --set n_embd=256 (repeatable)")
    parser.add_argument("--init", default=None, help="start from this model's weights and tokenizer")
    parser.add_argument("--corpus", action="append", default=[],
                        help="LM pre-training text file (repeatable; default: DATA/brown/brown.txt)")
    parser.add_argument("--wikitext-weight", type=int, default=1, metavar="N",
                        help="LM training: include the WikiText-2 text N times in the stream (default 1)")
    parser.add_argument("--length-weighting", type=float, default=0.0, metavar="ALPHA",
                        help="SST-2 training: draw examples with probability proportional to "
                             "words**ALPHA (default 0: plain shuffled epochs)")
    parser.add_argument("--ema-decay", type=float, default=0.0, metavar="DECAY",
                        help="keep a moving average of the weights (e.g. 0.999) and write it as the model "
                             "(default 0: the last step's weights)")
    parser.add_argument("--teacher", default=None, metavar="MODEL",
                        help="SST-2 training: also learn from this trained classifier's outputs (knowledge "
                             "distillation; any architecture)")
    parser.add_argument("--distill-weight", type=float, default=0.5, metavar="W",
                        help="with --teacher: weight of the distillation loss, the labels get 1 - W (default 0.5)")
    parser.add_argument("--distill-temperature", type=float, default=2.0, metavar="T",
                        help="with --teacher: softmax temperature of both models' outputs (default 2)")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=500)
    add_data_dir_argument(parser)
    add_device_argument(parser)
    parser.set_defaults(func=run)
