"""SST-2 dev accuracy by sentence length, pooled over several models (e.g. the seeds of one recipe).

    QSLM_DATA_DIR=../shared/data python bench/length_bench.py --recipe teacher runs/kd-s0 runs/kd-s1 \
        --recipe averaged runs/k16-s0 runs/k16-s1

Each sentence is counted in a band by its length in the model's own tokens (at most the model's input
length). Prints one Markdown row per recipe: accuracy per band and the sentences per band.
"""
from __future__ import annotations

import argparse

import torch

from qslm.checkpoint import load_model
from qslm.data.batching import encode_examples
from qslm.tasks.datasets import sst2
from qslm.tasks.evaluation import classification_logits, max_input_len

BANDS = ((0, 14), (15, 24), (25, 34), (35, None))


def band_of(n_tokens: int) -> int:
    return next(i for i, (low, high) in enumerate(BANDS) if n_tokens >= low and (high is None or n_tokens <= high))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", nargs="+", action="append", required=True, metavar=("NAME", "MODEL"),
                        help="a row name, then the models (bundled names or folders) pooled in it; repeatable")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $QSLM_DATA_DIR)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for recipe in args.recipe:
        if len(recipe) < 2:
            parser.error(f"--recipe {recipe[0]!r} names no model")

    dev = sst2.load_sst2("dev", args.data_dir)
    header = " | ".join(f"{low}–{high}" if high is not None else f"≥ {low}" for low, high in BANDS)
    print(f"| recipe | {header} |\n|---|" + "---:|" * len(BANDS))
    for name, *models in args.recipe:
        right, total = [0] * len(BANDS), [0] * len(BANDS)
        for ref in models:
            loaded = load_model(ref)
            model = loaded.model.eval()
            logits, labels = classification_logits(model, loaded.tokenizer, dev)
            inputs = encode_examples(loaded.tokenizer, dev, max_input_len(model))  # what the model read
            for (ids, _), correct in zip(inputs, (logits.argmax(-1) == labels).tolist()):
                band = band_of(len(ids))
                right[band] += correct
                total[band] += 1
        cells = " | ".join(f"{100 * r / t:.1f}% ({t // len(models)})" if t else "n/a" for r, t in zip(right, total))
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
