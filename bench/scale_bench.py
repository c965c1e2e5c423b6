"""Forward-pass speed of the bundled models: the spiking forward as first written (the per-step loops kept
in ``tests/reference_forward.py``) against the current inference path, on the batches ``qslm eval`` feeds
them, and the time of a full-test WikiText-2 evaluation of ``spikegpt-wt2`` with each.

    QSLM_DATA_DIR=../shared/data python bench/scale_bench.py --out bench-out/forward_speed.md
    QSLM_DATA_DIR=../shared/data python bench/scale_bench.py --batches 3 --old-eval extrapolate  # quick look

Run it from the repository root (the reference lives under ``tests/``). Tokens/s counts the tokens a
batch feeds the model (padding included, as the model computes it), under ``torch.no_grad`` in eval mode;
the two paths run batch by batch in turn, so a change in the machine's load hits both alike. Each pair of
outputs is compared: the maximum absolute difference of the logits and whether they are equal bit for bit.
The full evaluation is ``qslm eval spikegpt-wt2 --task wikitext2`` (the same code, in this process); with
``--old-eval extrapolate`` the reference's full time is estimated from its time on the sampled batches.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests/

from qslm.checkpoint import LoadedModel, load_model  # noqa: E402
from qslm.commands.eval import evaluate_model  # noqa: E402
from qslm.tasks.datasets import sst2, wikitext  # noqa: E402
from qslm.tasks.evaluation import classification_inputs, lm_windows, max_input_len  # noqa: E402
from tests.reference_forward import reference_forward  # noqa: E402

MODELS = ("spikegpt-wt2", "spikegpt-sst2", "spiking-encoder-sst2")
LM_BATCH, CLASSIFICATION_BATCH = 8, 64  # qslm.tasks.evaluation's defaults


def evaluation_batches(loaded: LoadedModel, data_dir, count: int | None) -> list[tuple[torch.Tensor, ...]]:
    """``count`` (None: all) of the batches ``qslm eval`` makes for the model's task, spread over the whole
    split (classification batches run shortest first, so the first few alone would be the shortest sentences)."""
    if loaded.config.task == "lm":
        _, batches = lm_windows(loaded.tokenizer, wikitext.load_wikitext("test", data_dir),
                                loaded.config.ctx_len, LM_BATCH)
        inputs = [(batch[:, :-1],) for batch, _ in batches]
    else:
        _, batches = classification_inputs(loaded.tokenizer, sst2.load_sst2("dev", data_dir),
                                           max_input_len(loaded.model), CLASSIFICATION_BATCH)
        inputs = [(ids, mask) for ids, mask, _ in batches]
    if count is None:
        return inputs
    step = max(1, len(inputs) // count)
    return inputs[::step][:count]


def forward_speed(name: str, data_dir, count: int) -> dict:
    loaded = load_model(name)
    model, batches = loaded.model, evaluation_batches(loaded, data_dir, count)
    seconds = {"reference": 0.0, "current": 0.0}
    max_difference, equal = 0.0, True
    with torch.no_grad():
        model(*batches[0])  # warm-up, not timed
        for batch in batches:
            started = time.perf_counter()
            with reference_forward():
                expected = model(*batch)
            seconds["reference"] += time.perf_counter() - started
            started = time.perf_counter()
            got = model(*batch)
            seconds["current"] += time.perf_counter() - started
            max_difference = max(max_difference, float((got - expected).abs().max()))
            equal = equal and torch.equal(got, expected)
    tokens = sum(batch[0].numel() for batch in batches)
    return {"model": name, "batches": len(batches), "batch": tuple(batches[0][0].shape), "tokens": tokens,
            "reference": tokens / seconds["reference"], "current": tokens / seconds["current"],
            "per_batch_reference": seconds["reference"] / len(batches), "max_difference": max_difference,
            "equal": equal}


def full_evaluation(data_dir, reference: bool):
    started = time.perf_counter()
    if reference:
        with reference_forward():
            result = evaluate_model("spikegpt-wt2", "wikitext2", data_dir=data_dir)
    else:
        result = evaluate_model("spikegpt-wt2", "wikitext2", data_dir=data_dir)
    return time.perf_counter() - started, result


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="data folder (default: $QSLM_DATA_DIR)")
    parser.add_argument("--batches", type=int, default=12, help="evaluation batches timed per model")
    parser.add_argument("--old-eval", choices=("run", "extrapolate", "skip"), default="run",
                        help="full WikiText-2 evaluation with the reference: run it, estimate it from the "
                             "sampled batches, or skip the full evaluations")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, as qslm eval)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args()
    if args.batches < 1:
        parser.error(f"--batches must be positive, got {args.batches}")
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [f"{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"{torch.get_num_threads()} torch threads, PyTorch {torch.__version__}; load average at start "
             f"{load_average()}", "",
             "| model | batches × shape | tokens | first-written loops, tok/s | current, tok/s | speed-up | "
             "max abs Δ logits | bit-equal |", "|---|---|---:|---:|---:|---:|---:|---|"]
    wt2_per_batch_reference = None
    for name in MODELS:
        row = forward_speed(name, args.data_dir, args.batches)
        if name == "spikegpt-wt2":
            wt2_per_batch_reference = row["per_batch_reference"]
        lines.append(f"| `{name}` | {row['batches']} × {row['batch'][0]}×{row['batch'][1]} | {row['tokens']:,} | "
                     f"{row['reference']:,.0f} | {row['current']:,.0f} | {row['current'] / row['reference']:.2f}× | "
                     f"{row['max_difference']:.1e} | {'yes' if row['equal'] else 'no'} |")
        print(lines[-1], flush=True)
    if args.old_eval != "skip":
        current_seconds, current = full_evaluation(args.data_dir, reference=False)
        lines += ["", "| full-test WikiText-2 evaluation of `spikegpt-wt2` | seconds | word perplexity |",
                  "|---|---:|---:|"]
        if args.old_eval == "run":
            reference_seconds, reference = full_evaluation(args.data_dir, reference=True)
            lines.append(f"| first-written loops | {reference_seconds:.1f} | {reference.perplexity:.4f} |")
        else:
            batches = evaluation_batches(load_model("spikegpt-wt2"), args.data_dir, None)
            reference_seconds = wt2_per_batch_reference * len(batches)
            lines.append(f"| first-written loops (estimated: {len(batches)} batches × the sampled batches' "
                         f"mean time) | {reference_seconds:.1f} | – |")
        lines.append(f"| current | {current_seconds:.1f} | {current.perplexity:.4f} |")
        lines.append(f"| speed-up | {reference_seconds / current_seconds:.2f}× | |")
    lines += ["", f"load average at the end {load_average()}"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
