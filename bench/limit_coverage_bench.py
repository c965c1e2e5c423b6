"""Do quality limits hold on data that did not choose the plan? Many searches per setting, each judged by
the loss of its chosen plan on a test split it never saw, against the limit it was given.

Models: the three bundled ones (spikegpt-sst2 and spiking-encoder-sst2 on SST-2, spikegpt-wt2 on
WikiText-2) and the three of bench/own_models_bench.py (hand-written, snnTorch and SpikingJelly classifiers
on the synthetic token task, trained with its recipe). Each data set is one pool of examples unseen in
training, re-split (seeded) into validation and test for every search:

* SST-2: the preset's held-out training sentences plus dev (1,672 sentences), 600 validation, the rest
  test; 100.0/0.0 correctness per sentence. Calibration, quantizer calibration and profile inputs come
  from the training sentences (``qslm.tasks.text_classification.task``), never from the pool.
* WikiText-2: the start of the test text cut into 20 segments of whole lines, at least 250 words each
  (6,084 words, 10,388 tokens in all), each scored alone (per-token NLL, scaled by one pool-wide tokens/words factor so exp(mean) is about word
  perplexity); half the segments validation, half test. Calibration from the preset (valid tail,
  quantizers on the head of valid).
* Own models: ``make_data(seed=1, n=2400)`` (the rule of tests/handwritten.py), 600 validation, 1,800 test.

Settings: "today" (the behaviour before per-example scores: evaluate returns one number, so no bound and no
confirmation part; on the bundled SST-2 models the old preset's metric, accuracy minus one standard error
of the paired difference to the float model; elsewhere the plain metric, and on spikegpt-wt2 test gives the
perplexity as one number too, as Task(scores_are_nll=True) takes scores only) and confidence 0.5, 0.9 (the
default) and 0.95 with per-example scores. Each model's per-example scores are memoized per model state
(keyed by a digest of all parameters and persistent buffers: qslm fake-quantizes by writing weights in
place) and per pool item, so re-splits, limits and settings re-index cached scores and a plan met again
scores only the items it has not been scored on.

Limits: SST-2 models max_drop 1.0 / 2.0 at max_memory 12.5%; own models max_drop 1.0 / 3.0 at 25%;
spikegpt-wt2 max_relative_increase 0.03 / 0.05 at 13.5%. 3 re-splits per (model, limit) for the
classifiers, 2 for spikegpt-wt2 (``--splits N`` sets both to N): 34 searches per setting, 136 in all.
Every search uses ``SearchConfig(methods=("rtn",), grids=("sym",), block_cache_mb=0)`` (one method and grid:
the guard is what is measured, and choosing quantizers costs time); spikegpt-wt2's also
``max_evaluations=30`` (uncapped they take ~60 evaluations of ~2 s).

One JSON line per finished search goes to ``<out>/runs.jsonl``; a rerun skips the searches already there.

    QSLM_DATA_DIR=../shared/data nice -n 10 python bench/limit_coverage_bench.py [--out bench-out/limit-coverage]
        [--models spikegpt-sst2,handwritten,...] [--settings today,0.5,0.9,0.95] [--splits N] [--threads 1]

The whole run (136 searches, cold caches, one torch thread) took 3,470 s (58 min) on 2 cores shared with
other jobs: spikegpt-sst2 1,035 s, spiking-encoder-sst2 1,053 s, spikegpt-wt2 1,306 s, the own models 64 s.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qslm  # noqa: E402
from qslm.search.confidence import DEFAULT_CONFIDENCE  # noqa: E402

SST2_MODELS = ("spikegpt-sst2", "spiking-encoder-sst2")
WT2_MODELS = ("spikegpt-wt2",)
OWN_MODELS = ("handwritten", "snntorch", "spikingjelly")
MODELS = SST2_MODELS + WT2_MODELS + OWN_MODELS
FAMILY = {**{m: "bundled SST-2" for m in SST2_MODELS}, **{m: "WikiText-2" for m in WT2_MODELS},
          **{m: "own models" for m in OWN_MODELS}}
SETTINGS = ("today", "0.5", "0.9", "0.95")  # the default; any confidence in [0.5, 1) may be named


def confidence_of(setting: str) -> float | None:
    """The confidence a setting names; None for "today" (one number a plan, no bound)."""
    if setting == "today":
        return None
    value = float(setting)
    if not 0.5 <= value < 1:
        raise ValueError(f"confidence {setting} is not in [0.5, 1)")
    return value
# (limits, max_memory, re-splits)
PLAN = {"bundled SST-2": ((1.0, 2.0), "12.5%", 3), "own models": ((1.0, 3.0), "25%", 3),
        "WikiText-2": ((0.03, 0.05), "13.5%", 2)}
SST2_VALIDATION = 600
OWN_POOL, OWN_VALIDATION = 2400, 600
WT2_SEGMENTS, WT2_SEGMENT_WORDS = 20, 250  # about 330 words each: ~6,600 words
CONFIG = qslm.SearchConfig(methods=("rtn",), grids=("sym",), block_cache_mb=0)
# spikegpt-wt2 costs ~2 s an evaluation (10 segments of text) and its searches take ~60 evaluations: capped at
# 30, to fit the hour (a capped search keeps the best plan it has met)
CONFIGS = {"WikiText-2": qslm.SearchConfig(methods=("rtn",), grids=("sym",), block_cache_mb=0, max_evaluations=30)}


def state_digest(model: torch.nn.Module) -> str:
    """xxh3-128 of every parameter and persistent buffer (names, dtypes, shapes, bytes): a plan's identity,
    as qslm fake-quantizes by writing dequantized weights into the parameters. Non-persistent buffers are
    run-time state (snnTorch keeps its membrane in one), rewritten by every forward."""
    h = xxhash.xxh3_128()
    h.update(type(model).__qualname__.encode())
    buffers = [(f"{prefix}.{name}" if prefix else name, b) for prefix, module in model.named_modules()
               for name, b in module._buffers.items()
               if b is not None and name not in module._non_persistent_buffers_set]
    for name, tensor in [*model.named_parameters(), *buffers]:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Pool:
    """Per-example scores of one model on a pool of items (sentences, or text segments scored alone),
    memoized per model state and item: a call scores only the items not yet scored in that state, so a
    plan costs what its validation part costs, and a re-split or another setting that meets the same plan
    again scores only the items it has not seen."""

    def __init__(self, items: int, score: Callable[[torch.nn.Module, list[int]], list[np.ndarray]]):
        self.items, self.score = items, score
        self.cache: dict[str, list[np.ndarray | None]] = {}
        self.hits = self.misses = self.scored = 0
        self.seconds = 0.0

    def __call__(self, model: torch.nn.Module, items) -> np.ndarray:
        known = self.cache.setdefault(state_digest(model), [None] * self.items)
        missing = [int(i) for i in items if known[i] is None]
        if missing:
            self.misses += 1
            self.scored += len(missing)
            started = time.perf_counter()
            with torch.no_grad():
                for i, scores in zip(missing, self.score(model, missing)):
                    known[i] = np.asarray(scores, dtype=np.float64).reshape(-1)
            self.seconds += time.perf_counter() - started
        else:
            self.hits += 1
        return np.concatenate([known[i] for i in items])


@dataclass
class Subject:
    """A model, its pool and the split-independent parts of its tasks."""
    name: str
    model: torch.nn.Module
    pool: Pool
    splits: Callable[[int], tuple[list[int], list[int]]]  # split seed -> (validation, test) items, in pool order
    task_parts: dict  # calibration, quantizer_calibration, profile_inputs, damage
    nll: bool = False
    old_preset_metric: bool = False  # "today" on bundled SST-2: accuracy minus one paired standard error
    notes: dict = field(default_factory=dict)


def dealt(items: int, validation: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded re-split of a pool's items: ``validation`` of them, and the rest, each in pool order."""
    order = np.random.default_rng(seed).permutation(items)
    return sorted(order[:validation].tolist()), sorted(order[validation:].tolist())


# ---------------------------------------------------------------- the subjects

def sst2_subject(name: str, data_dir) -> Subject:
    from qslm.tasks import text_classification
    from qslm.tasks.datasets.sst2 import load_sst2, train_and_held_out
    from qslm.tasks.evaluation import classification_logits

    loaded = qslm.load(name)
    training, held_out = train_and_held_out(data_dir)
    examples = list(held_out) + list(load_sst2("dev", data_dir))
    # calibration, quantizer calibration and profile inputs from the training sentences, never the pool
    built = text_classification.task(loaded.model, loaded.tokenizer, held_out, None,
                                     calibration_examples=training, quantizer_examples=training)

    def score(m, items):
        logits, labels = classification_logits(m, loaded.tokenizer, [examples[i] for i in items], batch_size=128)
        return list((100 * (logits.argmax(-1) == labels).double()).numpy())

    return Subject(name, loaded.model, Pool(len(examples), score),
                   lambda seed: dealt(len(examples), SST2_VALIDATION, seed),
                   dict(calibration=built.calibration, quantizer_calibration=built.quantizer_calibration,
                        profile_inputs=built.profile_inputs, damage_measure="kl"), old_preset_metric=True,
                   notes={"pool": f"{len(held_out)} held-out train + {len(examples) - len(held_out)} dev sentences"})


def wt2_subject(name: str, data_dir) -> Subject:
    from qslm.data.text import word_count
    from qslm.tasks import presets
    from qslm.tasks.datasets.wikitext import load_wikitext
    from qslm.tasks.evaluation import lm_token_nll

    loaded = qslm.load(name)
    segments, lines, words = [], [], 0
    for line in load_wikitext("test", data_dir).splitlines(keepends=True):
        if not lines and not line.strip():
            continue  # a segment starts on text
        lines.append(line)
        words += len(line.split()) + 1
        if words >= WT2_SEGMENT_WORDS:
            segments.append("".join(lines))
            lines, words = [], 0
            if len(segments) == WT2_SEGMENTS:
                break
    # calibration (valid tail), quantizer calibration (head of valid) and profile inputs: the preset's
    preset = presets.wikitext2(loaded, data_dir)
    tokens = [len(loaded.tokenizer.encode("\n" + s).ids) - 1 for s in segments]  # = len(lm_token_nll(...))
    total_words = sum(word_count(s) for s in segments)
    factor = sum(tokens) / total_words  # tokens per word, pool-wide: exp(mean NLL x factor) ~ word perplexity

    def score(m, items):
        return [lm_token_nll(m, loaded.tokenizer, segments[i]).double().numpy() * factor for i in items]

    def splits(seed):
        return dealt(len(segments), len(segments) // 2, seed)

    return Subject(name, loaded.model, Pool(len(segments), score), splits,
                   dict(calibration=preset.calibration, quantizer_calibration=preset.quantizer_calibration,
                        profile_inputs=preset.profile_inputs, damage_measure="kl"), nll=True,
                   notes={"pool": f"{len(segments)} segments of the test text's start, {total_words} words, "
                                  f"{sum(tokens)} tokens; NLL x {factor:.4f} tokens/word"})


def own_subject(name: str) -> Subject:
    from bench.own_models_bench import train
    from tests.handwritten import HandwrittenSpikingClassifier, make_data
    from tests.search.test_engine import SnnTorchClassifier, SpikingJellyClassifier

    reset = None
    if name == "spikingjelly":
        from spikingjelly.activation_based import functional
        reset = functional.reset_net
    make = {"handwritten": HandwrittenSpikingClassifier, "snntorch": SnnTorchClassifier,
            "spikingjelly": SpikingJellyClassifier}[name]
    torch.manual_seed(0)
    ids, labels = make_data(n=960)
    torch.manual_seed(0)
    model = train(make(), ids[:640], labels[:640], steps=150, reset=reset)
    pool_ids, pool_labels = make_data(seed=1, n=OWN_POOL)

    def score(m, items):
        if reset:
            reset(m)
        correct = m(pool_ids[items]).argmax(-1) == pool_labels[items]
        if reset:
            reset(m)
        return list((100 * correct.double()).numpy())

    return Subject(name, model, Pool(OWN_POOL, score), lambda seed: dealt(OWN_POOL, OWN_VALIDATION, seed),
                   dict(calibration=[ids[i:i + 64] for i in range(0, 256, 64)],
                        profile_inputs=[ids[i:i + 1] for i in range(32)]),
                   notes={"pool": f"make_data(seed=1, n={OWN_POOL}) (training: make_data(n=960)[:640])"})


def subject(name: str, data_dir) -> Subject:
    if name in SST2_MODELS:
        return sst2_subject(name, data_dir)
    if name in WT2_MODELS:
        return wt2_subject(name, data_dir)
    return own_subject(name)


# ---------------------------------------------------------------- one search

def build_task(s: Subject, split_seed: int, setting: str) -> qslm.Task:
    validation, test = s.splits(split_seed)
    one_number = confidence_of(setting) is None
    if not one_number:
        evaluate = lambda m: s.pool(m, validation)  # noqa: E731
    elif s.old_preset_metric:
        float_correct = torch.from_numpy(s.pool(s.model, validation) / 100)  # the float model, before any plan

        def evaluate(m):
            correct = torch.from_numpy(s.pool(m, validation) / 100)
            lost = float_correct - correct  # +1 lost, -1 gained, per example
            return 100 * float(correct.mean() - lost.std() / len(lost) ** 0.5)
    elif s.nll:
        evaluate = lambda m: math.exp(float(s.pool(m, validation).mean()))  # noqa: E731
    else:
        evaluate = lambda m: float(s.pool(m, validation).mean())  # noqa: E731
    if one_number and s.nll:
        # Task(scores_are_nll=True) takes scores only, so "today" on perplexity gives test as one number too;
        # its relative increase, ppl(plan) / ppl(float) - 1, is exp(mean(plan - float)) - 1 all the same
        test_fn = lambda m: math.exp(float(s.pool(m, test).mean()))  # noqa: E731
    else:
        test_fn = lambda m: s.pool(m, test)  # noqa: E731
    return qslm.Task(evaluate=evaluate, test=test_fn, higher_is_better=not s.nll,
                     scores_are_nll=s.nll and not one_number, name=f"coverage-{s.name}",
                     fingerprint=f"limit-coverage:{s.name}:split {split_seed}:{setting}", **s.task_parts)


def run_one(s: Subject, limit: float, max_memory: str, split_seed: int, setting: str, out: Path) -> dict:
    confidence = confidence_of(setting)
    quality = {"max_relative_increase": limit} if s.nll else {"max_drop": limit}
    constraints = qslm.Constraints(**quality, max_memory=max_memory,
                                   confidence=DEFAULT_CONFIDENCE if confidence is None else confidence)
    task = build_task(s, split_seed, setting)
    folder = out / "runs" / s.name / f"limit-{limit:g}" / f"split-{split_seed}" / setting
    hits, misses = s.pool.hits, s.pool.misses
    started = time.perf_counter()
    result = qslm.search(s.model, task, out=folder, constraints=constraints,
                         config=CONFIGS.get(FAMILY[s.name], CONFIG),
                         cache_dir=out / "cache", progress=False, overwrite=True)
    seconds = time.perf_counter() - started
    report = result.report
    final = report["final"]
    loss = None if final is None else final["quality_loss"]
    turned = (report["quality"].get("selection") or {}).get("turned_down", [])
    return {"model": s.name, "family": FAMILY[s.name], "limit": limit, "max_memory": max_memory,
            "split": split_seed, "setting": setting, "status": report["status"],
            "memory_pct": None if final is None else 100 * final["memory_bytes"] / report["baseline"]["memory_bytes"],
            "validation_float": report["baseline"]["metric_validation"],
            "validation_metric": None if final is None else report["chosen"]["metric"],
            "test_float": report["baseline"].get(f"metric_{task.test_split}"),
            "test_metric": None if final is None else final["metric"],
            "test_loss": loss, "exceeded": loss is not None and loss > limit + 1e-12,
            "evaluations": report["evaluations"]["total"], "turned_down": len(turned),
            "pool_hits": s.pool.hits - hits, "pool_misses": s.pool.misses - misses, "seconds": round(seconds, 2)}


# ---------------------------------------------------------------- tables

def pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "0/0"


def summary_rows(rows: list[dict], settings: list[str]) -> list[str]:
    lines = []
    for setting in settings:
        these = [r for r in rows if r["setting"] == setting]
        if not these:
            continue
        planned = [r for r in these if r["status"] == "feasible"]
        exceeded = sum(r["exceeded"] for r in these)
        memory = f"{np.mean([r['memory_pct'] for r in planned]):.2f}" if planned else "n/a"
        loss = [r["test_loss"] / r["limit"] for r in planned]
        unconfirmed = sum(r["status"] != "feasible" and r["turned_down"] > 0 for r in these)
        none = f"{len(these) - len(planned)}" + (f" ({unconfirmed} failed confirmation)" if unconfirmed else "")
        lines.append(f"| {setting} | {len(these)} | {none} | {pct(exceeded, len(these))} | "
                     f"{pct(exceeded, len(planned))} | {memory} | "
                     f"{(f'{np.mean(loss):.2f}' if loss else 'n/a')} |")
    return lines


def print_tables(rows: list[dict], settings: list[str]) -> None:
    head = ("| setting | searches | no plan | test loss > limit (of searches) | (of plans) | "
            "mean memory % of FP32 (plans) | mean test loss / limit |\n|---|---:|---:|---:|---:|---:|---:|")
    print("\n### All models\n")
    print(head)
    print("\n".join(summary_rows(rows, settings)))
    for family in dict.fromkeys(FAMILY.values()):
        these = [r for r in rows if r["family"] == family]
        if these:
            print(f"\n### {family} ({', '.join(sorted({r['model'] for r in these}))})\n")
            print(head)
            print("\n".join(summary_rows(these, settings)))
    print("\n### Bundled SST-2 models at the README limit (drop 1.0, 12.5%): memory of the guard\n")
    print("| model | setting | searches | no plan | exceed | mean memory % of FP32 |\n|---|---|---:|---:|---:|---:|")
    default = f"{DEFAULT_CONFIDENCE:g}"
    for model in SST2_MODELS:
        for setting in ("today", default):
            these = [r for r in rows if r["model"] == model and r["limit"] == 1.0 and r["setting"] == setting]
            if not these:
                continue
            planned = [r["memory_pct"] for r in these if r["status"] == "feasible"]
            print(f"| {model} | {setting} | {len(these)} | {len(these) - len(planned)} | "
                  f"{pct(sum(r['exceeded'] for r in these), len(these))} | "
                  f"{(f'{np.mean(planned):.2f}' if planned else 'n/a')} |")
    print("\n### Per model and limit (exceed k/n, no plan, mean memory %)\n")
    present = [s for s in settings if any(r["setting"] == s for r in rows)]
    print("| model | limit | " + " | ".join(present) + " |\n|---|---:|" + "---|" * len(present))
    for model in MODELS:
        for limit in sorted({r["limit"] for r in rows if r["model"] == model}):
            cells = []
            for setting in present:
                these = [r for r in rows if r["model"] == model and r["limit"] == limit and r["setting"] == setting]
                planned = [r["memory_pct"] for r in these if r["status"] == "feasible"]
                cells.append(f"{sum(r['exceeded'] for r in these)}/{len(these)}, {len(these) - len(planned)} none, "
                             + (f"{np.mean(planned):.1f}%" if planned else "n/a"))
            print(f"| {model} | {limit:g} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- main

def _valid_setting(setting: str) -> bool:
    try:
        confidence_of(setting)
    except ValueError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/limit-coverage")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated: today, or confidences in [0.5, 1) (default today,0.5,0.9,0.95)")
    parser.add_argument("--splits", type=int, default=None, help="re-splits per (model, limit) (default 3, wt2 2)")
    parser.add_argument("--data-dir", default=None, help="default $QSLM_DATA_DIR")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on 2 shared cores, 2 threads ran 4-15x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    settings = [s for s in args.settings.split(",") if s]
    bad = [m for m in models if m not in MODELS] + [s for s in settings if not _valid_setting(s)]
    if bad:
        parser.error(f"unknown models or settings {bad}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    done = {(r["model"], r["limit"], r["split"], r["setting"]) for r in rows}
    started = time.perf_counter()
    for name in models:
        limits, max_memory, splits = PLAN[FAMILY[name]]
        splits = args.splits or splits
        todo = [(limit, seed, setting) for limit in limits for seed in range(1, splits + 1) for setting in settings
                if (name, limit, seed, setting) not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        s = subject(name, args.data_dir)
        print(f"[{time.perf_counter() - started:7.0f}s] {name}: {s.notes['pool']}; set up in "
              f"{time.perf_counter() - t0:.0f}s; {len(todo)} searches", flush=True)
        for limit, seed, setting in todo:
            row = run_one(s, limit, max_memory, seed, setting, out)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"[{time.perf_counter() - started:7.0f}s] {name} limit {limit:g} split {seed} {setting}: "
                  f"{row['status']}" + ("" if row["memory_pct"] is None else
                                        f", {row['memory_pct']:.2f}% FP32, test loss {row['test_loss']:.4g}"
                                        f"{' EXCEEDS' if row['exceeded'] else ''}")
                  + f"; {row['evaluations']} evals, pool {row['pool_hits']} hits / {row['pool_misses']} misses; "
                  f"{row['seconds']:.0f}s", flush=True)
        print(f"  {name}: pool scoring missed {s.pool.misses} times ({s.pool.scored} items, {s.pool.seconds:.0f}s), "
              f"hit {s.pool.hits} times", flush=True)
    print(f"\nwall time this run: {time.perf_counter() - started:.0f}s; searches recorded: {len(rows)}")
    print_tables([r for r in rows if r["model"] in models], settings)


if __name__ == "__main__":
    main()
