"""How wide must the error of a perplexity ratio be? Per-token NLL differences between a quantized and the
float spikegpt-wt2 on WikiText-2 text, with the standard error of their mean computed four ways:
as if tokens were independent, by batch means over contiguous blocks of several sizes (what
``qslm.search.confidence`` uses, with about sqrt(n) blocks), and by a seeded moving-block bootstrap; and,
as the truth to compare with, the spread of the mean over disjoint stretches of text.

    python bench/nll_error_bench.py [--words 24000] [--bits 3] [--stretches 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qslm  # noqa: E402
from qslm.quant.apply import fake_quantized  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.units import quantizable_units  # noqa: E402
from qslm.search.config import BASE_SPEC  # noqa: E402
from qslm.search.confidence import blocks  # noqa: E402
from qslm.tasks.datasets import wikitext  # noqa: E402
from qslm.tasks.evaluation import lm_token_nll  # noqa: E402
from qslm.tasks.language_modeling import leading_words  # noqa: E402


def batch_means_error(values: np.ndarray, size: int) -> float:
    count = len(values) // size
    means = values[: count * size].reshape(count, size).mean(1)
    return float(means.std(ddof=1) / math.sqrt(count))


def bootstrap_error(values: np.ndarray, size: int, draws: int = 400, seed: int = 0) -> float:
    """Moving-block bootstrap: resampled overlapping blocks of ``size`` tokens, seeded."""
    rng = np.random.default_rng(seed)
    starts = np.arange(len(values) - size + 1)
    per_draw = math.ceil(len(values) / size)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    block_sums = sums[starts + size] - sums[starts]
    means = [block_sums[rng.choice(starts, per_draw)].sum() / (per_draw * size) for _ in range(draws)]
    return float(np.std(means, ddof=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=24000)
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--stretches", type=int, default=8, help="disjoint stretches of text for the truth")
    args = parser.parse_args()
    loaded = qslm.load("spikegpt-wt2")
    model = loaded.model.eval()
    text = leading_words(wikitext.load_wikitext("test"), args.words)
    lines = text.splitlines(keepends=True)
    stretches = ["".join(lines[k * len(lines) // args.stretches:(k + 1) * len(lines) // args.stretches])
                 for k in range(args.stretches)]
    plan = QuantPlan({u: dataclasses.replace(BASE_SPEC, bits=args.bits) for u in quantizable_units(model)})
    differences = []
    with torch.no_grad():
        for stretch in stretches:
            base = lm_token_nll(model, loaded.tokenizer, stretch).double().numpy()
            with fake_quantized(model, plan):
                quantized = lm_token_nll(model, loaded.tokenizer, stretch).double().numpy()
            differences.append(quantized - base)
    every = np.concatenate(differences)
    per_stretch = np.array([d.mean() for d in differences])
    sizes = [len(d) for d in differences]
    # the truth: the spread of a stretch's mean, scaled to the whole text's token count
    truth = float(per_stretch.std(ddof=1) * math.sqrt(np.mean(sizes) / len(every)))
    print(f"{len(every):,} tokens, uniform {args.bits}-bit rtn: mean NLL difference {every.mean():.4f} "
          f"(perplexity ratio {math.exp(every.mean()):.4f})\n")
    print("| standard error of the mean NLL difference | value | against the spread over stretches |")
    print("|---|---:|---:|")
    rows = [("tokens independent", float(every.std(ddof=1) / math.sqrt(len(every))))]
    root = round(math.sqrt(len(every)))
    ours = len(blocks(len(every)))
    for size in sorted({10, 50, len(every) // root, 500, len(every) // ours}):
        note = " (sqrt(n) blocks)" if size == len(every) // root else ""
        note += f" ({ours} blocks: qslm)" if size == len(every) // ours else ""
        rows.append((f"batch means, blocks of {size} tokens{note}", batch_means_error(every, size)))
    rows.append((f"moving-block bootstrap, blocks of {len(every) // ours}", bootstrap_error(every, len(every) // ours)))
    rows.append((f"spread of the mean over {args.stretches} disjoint stretches", truth))
    for name, value in rows:
        print(f"| {name} | {value:.5f} | {value / truth:.2f} |")


if __name__ == "__main__":
    main()
