"""One call for the whole QSLM job: load, profile, sensitivity, search, verify, export, report.

    from qslm import search
    result = search("spikegpt-sst2", task="sst2", out="out/sst2", constraints=Constraints(max_drop=1.0))

Data discipline: sensitivity and every candidate check use a held-out slice of *training* data
(SST-2: seeded whole sentences of train, kept out of training with the phrases cut from them alone;
WikiText-2: the tail of valid kept out of training); the reported split (SST-2 dev, WikiText-2 test) is
used once, to verify the final plan.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..analysis.cost import (energy_per_inference, latency_per_inference, load_hardware_profile, measure_latency,
                             measure_op_counts, power_mw)
from ..analysis.hessian import hutchinson_traces
from ..analysis.hierarchy import build_hierarchy
from ..analysis.local_sensitivity import BlockLocalSensitivity
from ..analysis.sensitivity import (SensitivityCache, classification_calibration, damage, default_cache_dir,
                                    lm_calibration, model_hash, output_log_probs)
from ..commands.profile import calibration_runner
from ..data import sst2, wikitext
from ..device import resolve_device
from ..errors import QslmError
from ..evaluate import evaluate_lm, evaluate_split, max_input_len
from ..models.zoo import check_task, load_model
from ..quant.apply import WeightCache, fake_quantized
from ..quant.memory import fixed_bytes, safetensors_tensor_bytes, unit_bytes
from ..quant.pack import PLAN_FILE, export_quantized
from ..quant.plan import QuantPlan
from ..quant.quantizer import BITS, QuantSpec
from ..report import write_report
from . import baselines, tiered
from .journal import Journal
from .objective import Baseline, Constraints, parse_weights
from .problem import SearchProblem

BASE_SPEC = QuantSpec(bits=8, granularity="per-channel", symmetric=True, observer="mse")
DEFAULTS = {"sst2": {"calibration": 128, "validation": sst2.HOLDOUT_SIZE},
            "wikitext2": {"calibration": 2048, "validation": 8000}}
DEFAULT_BASELINE_BUDGET = 60
SENSITIVITY_METHODS = ("exact", "local")  # see qslm.analysis.local_sensitivity
# Op counts (firing rates) are measured at batch size 1 on the first examples / lines of the calibration slice.
OP_COUNT_SEQUENCES = {"sst2": 64, "wikitext2": 40}
REPORTED_SPLIT = {"sst2": "dev", "wikitext2": "test"}
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", PLAN_FILE)


@dataclass
class SearchResult:
    out: Path
    report: dict
    plan: QuantPlan | None


def _check_options(task: str, constraints: Constraints, bit_choices: list[int], strategy: str,
                   max_evaluations: int | None, reported_limit: int | None, seed: int) -> None:
    if task not in REPORTED_SPLIT:
        raise QslmError(f"unknown task {task!r}; expected sst2 or wikitext2")
    if task == "sst2" and constraints.max_relative_increase is not None:
        raise QslmError("--max-relative-increase (max_relative_increase) applies to lower-is-better metrics "
                        "(wikitext2 perplexity); for sst2 accuracy use --max-drop (points)")
    if task == "wikitext2" and constraints.max_drop is not None:
        raise QslmError("--max-drop applies to higher-is-better metrics (sst2 accuracy); for wikitext2 "
                        "perplexity use --max-relative-increase (relative, e.g. 0.03)")
    if reported_limit is not None and not _integer_at_least(reported_limit, 1):  # no limit is None, not 0
        raise QslmError(f"reported_limit must be a positive integer, got {reported_limit!r}")
    if not _integer_at_least(seed, 0):
        raise QslmError(f"seed must be an integer >= 0, got {seed!r}")
    bad = [b for b in bit_choices if b not in BITS]
    if bad:
        raise QslmError(f"unsupported bit-widths {bad}; choose from {list(BITS)}")
    if strategy not in ("tiered", "uniform", "hawq", "greedy", "random", "nsga2"):
        raise QslmError(f"unknown strategy {strategy!r}")
    if max_evaluations is not None and max_evaluations < 1:
        raise QslmError(f"the evaluation budget must be at least 1, got {max_evaluations}")


def _integer_at_least(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _validation_text(text: str, words: int) -> str:
    lines, count = [], 0
    for line in text.splitlines(keepends=True):
        lines.append(line)
        count += len(line.split()) + 1
        if count >= words:
            break
    return "".join(lines)


def _move_model_files(exported: Path, out: Path) -> None:
    """Put the exported model's files into ``out`` one atomic rename each (reports and journal stay)."""
    for name in MODEL_FILES:
        os.replace(exported / name, out / name)
    shutil.rmtree(exported)


def run_search(model_ref, task: str, out, constraints: Constraints | None = None, weights=None,
               bit_choices=(2, 3, 4, 5, 6, 8), strategy: str = "tiered", max_evaluations: int | None = None,
               calibration_size: int | None = None, validation_size: int | None = None,
               hardware: str = "default_45nm", seed: int = 0, cache_dir=None, data_dir=None, device=None,
               progress: bool = True, base_spec: QuantSpec = BASE_SPEC,
               reported_limit: int | None = None, sensitivity_method: str = "exact") -> SearchResult:
    """Search a mixed-precision plan for ``model_ref`` and write the quantized model and report to ``out``.
    ``reported_limit`` verifies on only the first N examples / lines of the reported split (benchmarks
    of many strategies); the default verifies on all of it. ``sensitivity_method`` is ``exact`` (whole
    model per measurement) or ``local`` (block-local Fisher estimate, time linear in depth)."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    constraints = constraints or Constraints()
    weights = parse_weights(weights)
    bit_choices = sorted(set(bit_choices))
    _check_options(task, constraints, bit_choices, strategy, max_evaluations, reported_limit, seed)
    if sensitivity_method not in SENSITIVITY_METHODS:
        raise QslmError(f"unknown sensitivity method {sensitivity_method!r}; expected one of {SENSITIVITY_METHODS}")
    out = Path(out)
    torch.manual_seed(seed)
    profile = load_hardware_profile(hardware)

    device = resolve_device(device)
    loaded = load_model(model_ref, device)
    if (loaded.path / PLAN_FILE).is_file():
        raise QslmError(f"{loaded.path} is already quantized; search starts from a float model")
    if out.resolve() == loaded.path.resolve():
        raise QslmError(f"output folder {out} is the model folder itself: the quantized model would overwrite "
                        f"the model; choose another output folder")
    model, tokenizer = loaded.model, loaded.tokenizer
    check_task(loaded, task, "searched")
    is_lm = task == "wikitext2"
    n_cal = DEFAULTS[task]["calibration"] if calibration_size is None else calibration_size
    n_val = DEFAULTS[task]["validation"] if validation_size is None else validation_size
    if n_cal <= 0 or n_val <= 0:
        raise QslmError(f"calibration and validation sizes must be positive, got {n_cal} and {n_val}")

    # ---- data: held-out training slices for the search, the reported split only for verification
    if task == "sst2":
        # Held-out whole sentences, longest first: calibration takes the longest, where quantization damage
        # shows most.
        held_out = sorted(sst2.calibration_examples(data_dir), key=lambda ex: -len(ex.sentence.split()))[:n_val]
        max_len = max_input_len(model)
        calibration = classification_calibration(tokenizer, held_out[:n_cal], max_len)
        validation = classification_calibration(tokenizer, held_out, max_len, batch_size=128)

        float_correct: list[torch.Tensor] = []

        def measure(m) -> float:
            """Validation accuracy, pessimistic by one standard error of the paired difference to the
            float model: a 1-point limit then means 1 point plus the noise of a finite slice, which keeps
            the drop on dev within the limit far more often than the raw accuracy would."""
            correct = torch.cat([lp.argmax(-1) == labels for lp, (_, _, labels)
                                 in zip(output_log_probs(m, validation), validation.batches)]).float()
            if not float_correct:
                float_correct.append(correct)  # the first call measures the float model
                return float(correct.mean())
            lost = float_correct[0] - correct  # +1 lost, -1 gained, per example
            return float(correct.mean() - lost.std() / len(lost) ** 0.5)
        validation_digest = validation.digest
    else:
        held_text = wikitext.calibration_text(data_dir)
        val_text = _validation_text(held_text, n_val)
        calibration = lm_calibration(tokenizer, held_text, loaded.config.ctx_len, n_cal)

        def measure(m) -> float:
            return evaluate_lm(m, tokenizer, val_text, "validation").perplexity
        validation_digest = hashlib.sha256(val_text.encode()).hexdigest()

    # ---- hierarchy, float baseline, op counts
    t0 = time.perf_counter()
    hierarchy = build_hierarchy(model, str(model_ref))
    groups = hierarchy.groups()
    units = dict(hierarchy.units)
    modules = dict(model.named_modules())
    op_count_limit = OP_COUNT_SEQUENCES[task]
    op_counts = measure_op_counts(model, calibration_runner(loaded, task, data_dir, limit=op_count_limit))
    baseline_metric = measure(model)
    fp32_unit_bytes = {u: unit_bytes(modules[u], None) for u in units}
    fixed = fixed_bytes(model)
    baseline = Baseline(baseline_metric, not is_lm, fixed + sum(fp32_unit_bytes.values()),
                        energy_per_inference(op_counts, None, profile).total_pj,
                        latency_per_inference(op_counts, None, profile))
    seconds["profile"] = time.perf_counter() - t0

    # ---- sensitivity: each group and each unit alone, each bit-width, against float outputs
    t0 = time.perf_counter()
    digest = model_hash(model)
    cache = SensitivityCache(Path(cache_dir or default_cache_dir()) / f"sensitivity-{digest[:16]}.jsonl")
    weight_cache = WeightCache()
    reference = output_log_probs(model, calibration)
    spec_for = {b: dataclasses.replace(base_spec, bits=b) for b in bit_choices}
    local = BlockLocalSensitivity.for_hierarchy(model, hierarchy, calibration) \
        if sensitivity_method == "local" and hierarchy.blocks else None

    def sensitivity(members: tuple[str, ...], bits: int) -> dict:
        block = local.block_holding(members) if local is not None else None
        method = "local" if block is not None else "exact"  # units outside blocks: measured exactly
        key = SensitivityCache.key(digest, calibration.digest + (":local" if method == "local" else ""), members,
                                   spec_for[bits].describe())
        value = cache.get(key)
        if value is None:
            plan = QuantPlan({u: spec_for[bits] for u in members})
            with fake_quantized(model, plan, weight_cache):
                value = local.damage(block) if block is not None else \
                    damage(reference, output_log_probs(model, calibration), calibration)
            cache.put(key, value)
        return {**value, "method": method}

    scopes = list(dict.fromkeys([tuple(m) for m in groups.values()] + [(u,) for u in units]))
    table: dict[str, dict[str, dict]] = {}
    with tqdm(total=len(scopes) * len(bit_choices), desc="sensitivity", disable=not progress, leave=False) as bar:
        for members in scopes:
            name = next((g for g, m in groups.items() if tuple(m) == members), members[0])
            table[name] = {}
            for bits in bit_choices:
                table[name][str(bits)] = sensitivity(members, bits)
                bar.update(1)
    seconds["sensitivity"] = time.perf_counter() - t0

    # ---- search
    t0 = time.perf_counter()
    # A journal entry (the metric of one assignment) depends only on these, so a search re-run with other
    # constraints, weights, strategy or budget still reuses every measurement already made.
    header = {"model": digest, "task": task, "validation": validation_digest, "spec": base_spec.to_dict(),
              "metric": "accuracy minus one paired standard error" if not is_lm else "word perplexity"}
    journal = Journal(out / "journal.jsonl", header)
    bytes_table = {u: {b: unit_bytes(modules[u], spec_for[b]) for b in bit_choices} for u in units}

    def measure_assignment(assignment: dict[str, int]) -> tuple[float, float]:
        with fake_quantized(model, QuantPlan.from_bits(assignment, base_spec), weight_cache):
            return _timed(lambda: measure(model))

    problem = SearchProblem(
        groups=groups, bit_choices=bit_choices, measure_metric=measure_assignment, unit_bytes=bytes_table,
        fixed_bytes=fixed, energy_pj=lambda a: energy_per_inference(op_counts, a, profile).total_pj,
        latency_s=lambda a: latency_per_inference(op_counts, a, profile),
        sensitivity=lambda members, bits: sensitivity(tuple(members), bits)["kl"], baseline=baseline,
        constraints=constraints, weights=weights, journal=journal, max_evaluations=max_evaluations,
        progress=progress)
    budget = DEFAULT_BASELINE_BUDGET if max_evaluations is None else max_evaluations
    if strategy == "tiered":
        tiered.tiered_search(problem)
    elif strategy == "uniform":
        baselines.uniform_search(problem)
    elif strategy == "greedy":
        baselines.greedy_search(problem)
    elif strategy == "random":
        baselines.random_search(problem, budget, seed)
    elif strategy == "nsga2":
        baselines.nsga2_search(problem, budget, seed)
    else:
        traces = hutchinson_traces(model, {u: modules[u] for u in units}, calibration, seed=seed)
        baselines.hawq_search(problem, lambda u, b: traces[u] / modules[u].weight.numel() * float(
            (weight_cache.dequantized(u, modules[u].weight, spec_for[b]) - modules[u].weight).detach().pow(2).sum()))
    best = problem.best()
    seconds["search"] = time.perf_counter() - t0

    # ---- verify on the reported split, export, report
    t0 = time.perf_counter()
    split = REPORTED_SPLIT[task]
    report = {
        # The model as the user named it (a bundled name or their path) and its weights hash: the report
        # then says which model it was without recording where this machine keeps it.
        "model": str(model_ref), "model_name": loaded.path.name, "model_hash": digest, "task": task,
        "strategy": strategy,
        "sensitivity_method": sensitivity_method,
        "higher_is_better": not is_lm, "weights": weights,
        "constraints": constraints.to_dict(baseline.memory_bytes, baseline.energy_pj),
        "bit_choices": bit_choices, "base_spec": base_spec.to_dict(), "hardware": profile.name, "seed": seed,
        "calibration_size": calibration.size, "validation_size": n_val if is_lm else validation.size,
        "hierarchy": hierarchy.to_dict(), "sensitivity": table,
        "candidates": [c.to_dict() for c in problem.candidates],
        "evaluations": {"total": len(problem.candidates),
                        "new": sum(not c.resumed for c in problem.candidates)},
    }
    reported_metric = _reported_metric(model, tokenizer, task, split, data_dir, progress, reported_limit)
    report["baseline"] = {"metric_validation": baseline.metric, f"metric_{split}": reported_metric,
                          "memory_bytes": baseline.memory_bytes, "energy_pj": baseline.energy_pj,
                          "power_mw": power_mw(baseline.energy_pj, profile),
                          "latency_s": _latency(model, calibration, device),
                          "modelled_latency_s": baseline.latency_s}
    plan = None
    if best is None:
        report["status"] = "infeasible"
        report["closest"] = [c.to_dict() for c in problem.closest()]
        report["final"] = None
        report["chosen"] = None
        for name in MODEL_FILES:  # an earlier run's model must not sit beside an infeasible report
            (out / name).unlink(missing_ok=True)
    else:
        plan = QuantPlan.from_bits(best.assignment, base_spec)
        exported = export_quantized(model, plan, tokenizer, out / ".model.tmp")
        _move_model_files(exported, out)
        quantized = load_model(out, device)
        final_metric = _reported_metric(quantized.model, tokenizer, task, split, data_dir, progress, reported_limit)
        final_ops = measure_op_counts(quantized.model, calibration_runner(quantized, task, data_dir,
                                                                          limit=op_count_limit))
        stored = {u: bytes_table[u][b] for u, b in best.assignment.items()}
        final_energy = energy_per_inference(final_ops, best.assignment, profile, unit_bytes=stored).total_pj
        memory = safetensors_tensor_bytes(out / "model.safetensors")
        loss = (100 * (reported_metric - final_metric)) if not is_lm else final_metric / reported_metric - 1
        limit = constraints.quality_limit(not is_lm)
        report["status"] = "feasible"
        report["chosen"] = best.to_dict()
        report["final"] = {"split": split, "reported_limit": reported_limit, "metric": final_metric, "quality_loss": loss,
                           "quality_within_limit": limit is None or loss <= limit, "memory_bytes": memory,
                           "memory_bytes_predicted": best.memory_bytes, "energy_pj": final_energy,
                           "power_mw": power_mw(final_energy, profile),
                           "latency_s": _latency(quantized.model, calibration, device),
                           "modelled_latency_s": latency_per_inference(final_ops, best.assignment, profile,
                                                                       unit_bytes=stored),
                           "plan_file": PLAN_FILE}
    seconds["verify"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    report["seconds"] = seconds
    write_report(report, out)
    return SearchResult(out, report, plan)


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def _latency(model, calibration, device) -> float:
    ids, mask, _ = calibration.batches[0]

    def run():
        with torch.no_grad():
            return model(ids.to(device)) if mask is None else model(ids.to(device), mask.to(device))
    return measure_latency(model, run, repeats=5)


def _reported_metric(model, tokenizer, task: str, split: str, data_dir, progress: bool, limit: int | None) -> float:
    result = evaluate_split(model, tokenizer, task, split, data_dir, limit, progress)
    return result.accuracy if task == "sst2" else result.perplexity
