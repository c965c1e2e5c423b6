"""qslm beside the weight quantizers people already use (torchao, HQQ, NNCF), at equal memory.

Every tool runs on the same models, is measured by the same evaluator and has its bytes counted by the same
function.

    python3 -m venv .venv-peers && .venv-peers/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/torch.txt && .venv-peers/bin/pip install -c /tmp/torch.txt -e '.[bench-peers,test]'
    QSLM_DATA_DIR=../shared/data .venv-peers/bin/python bench/peers_bench.py [--models M1,M2,...]
        [--tools torchao,hqq,nncf,qslm] [--quick] [--search 12.5%,10%] [--linear-only] [--threads 2]
        [--resume] [--reuse A.json,B.json] [--out docs/results/peers.md]

``--resume`` keeps the rows already in the output's JSON (same settings); ``--reuse`` keeps those of other
runs, so runs over different models side by side can be gathered into one table without measuring again.

The peers are benchmark dependencies only (``pip install 'qslm[bench-peers]'``), kept out of qslm's own
environment; the constraint keeps pip from replacing torch.

Models: the three bundled models and the three own models of ``bench/own_models_bench.py`` (a hand-written
classifier with bare-parameter projections and a tied embedding/head, an snnTorch and a SpikingJelly model,
trained the same way). The peers quantize the weights of ``nn.Linear`` and ``nn.Embedding`` modules, the same
matrices qslm quantizes in the bundled models (``--linear-only``: ``nn.Linear`` only, the peers' usual scope);
spiking neurons, norms, biases and the time-mix vectors stay float32 for every tool.

Quality, per row, by qslm's own evaluators (``qslm.tasks.presets``): SST-2 dev accuracy over its 872 sentences
for the classifiers and WikiText-2 test word perplexity over the first 300 test lines for the language model
(the reported split), and the same metric on the slice ``qslm.search`` validates on (SST-2: 800 held-out
training sentences; WikiText-2: 8,000 words of the held-out tail of valid). The own models: accuracy on their
test and validation examples. ``--quick``: the first 64 sentences / 20 lines and a validation slice of 64
sentences / 1,000 words, for development only.

Memory: ``honest_bytes`` over what each tool stores, each tensor once: codes at their bit width
(bits x elements / 8, whatever container the tool keeps them in), scales and zero-points at their stored
dtype, every float tensor left unquantized at its stored dtype. An all-zero zero-point (a symmetric
mapping) carries nothing and is not counted. For qslm the count is checked against ``plan_bytes``.

Configurations: torchao ``IntxWeightOnlyConfig`` (int2/3/4, per row, group 64, group 32, symmetric, float16
scales); HQQ's quantizer with its defaults (int2/3/4, per row and group 64, float16 scales and zero-points, as
``HQQLinear`` stores them), its dequantized weights placed in the float model so every tool runs the same
float32 forward; NNCF ``compress_weights`` (int8 sym/asym per row, int4 sym/asym per row and group 64 with
``all_layers=True`` and ``ratio=1``: data-free, every weight at int4); qslm's uniform plans (``qslm quantize
--bits B [--asymmetric | --signed] [--granularity group:64]``: per-channel or group 64, MSE clipping, float16
scales; signed is the symmetric grid using every code, as torchao's does), evaluated as the packed model loaded
back. ``--search LIMITS``: also ``qslm.search`` at each memory limit (quality limit 1.0 point / +3%,
confidence 0.9, default settings), from a few seconds (own models) to about ten minutes (``spikegpt-wt2``).
A grouped configuration is left out where the group is longer than a weight's rows (16 columns in the own
models). A tool that fails on a model is recorded with its error (type and first line), and the bench goes on.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qslm.checkpoint import load_model  # noqa: E402
from qslm.quant.api import build_plan  # noqa: E402
from qslm.quant.memory import plan_bytes  # noqa: E402
from qslm.quant.pack import load_packed_into, packed_state_dict  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.quant.quantizer import QuantSpec, group_count  # noqa: E402
from qslm.quant.units import PACKED_ATTRIBUTE, quantizable_units  # noqa: E402
from qslm.search.methods import applicable, record_context  # noqa: E402
from qslm.tasks.base import Task  # noqa: E402
from qslm.tasks.presets import build_task, default_task  # noqa: E402

BUNDLED = ("spikegpt-sst2", "spiking-encoder-sst2", "spikegpt-wt2")
OWN = ("hand-written", "snnTorch", "SpikingJelly")
TOOLS = ("torchao", "hqq", "nncf", "qslm")
# qslm's uniform plans on the ternary grid: rtn, and the calibrated methods, their codes stored as trits
TERNARY_METHODS = ("rtn", "gptq", "learned")
REPORTED_LM_LINES = 300
QUICK = {"sst2": {"test_limit": 64, "validation_size": 64}, "wikitext2": {"test_limit": 20, "validation_size": 1000}}
BITS = (2, 3, 4)


# --- the one byte count -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Stored:
    """One tensor a quantized model keeps: ``count`` values of ``bits`` bits each."""
    key: str
    count: int
    bits: int


def honest_bytes(stored: Iterable[Stored]) -> int:
    """Bytes of everything a model stores, each tensor once (by key), values packed at their bit width."""
    unique = {entry.key: entry for entry in stored}
    return sum(math.ceil(entry.count * entry.bits / 8) for entry in unique.values())


def at_stored_dtype(key: str, tensor: torch.Tensor) -> Stored:
    return Stored(key, tensor.numel(), 8 * tensor.element_size())


Describe = Callable[[str, torch.Tensor], "list[Stored] | None"]


def ledger(model: nn.Module, describe: Describe | None = None) -> list[Stored]:
    """Every tensor of ``model``'s state once (a tied tensor under its first key): as ``describe`` says
    for the tensors a tool quantized, at its stored dtype otherwise."""
    seen: set[int] = set()
    entries: list[Stored] = []
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        described = describe(key, tensor) if describe is not None else None
        entries += described if described is not None else [at_stored_dtype(key, tensor)]
    return entries


def qslm_describe(model: nn.Module) -> Describe:
    """A packed qslm model: codes and zero-points at the unit's bit width; trits (five codes a byte), scales,
    their exponent and codebooks at their stored dtype."""
    widths: dict[str, tuple[int, int]] = {}
    for path, module in model.named_modules():
        for packed in getattr(module, PACKED_ATTRIBUTE, {}).values():
            prefix = f"{path}." if path else ""
            names, spec = packed.buffer_names(), packed.spec
            if "codes" in names:  # trits (the ternary grid) are bytes already: counted at their dtype
                widths[prefix + names["codes"]] = (packed.shape.numel(), spec.bits)
            if "zero_point" in names:
                widths[prefix + names["zero_point"]] = (group_count(packed.shape, spec), spec.bits)

    def describe(key: str, tensor: torch.Tensor) -> list[Stored] | None:
        return [Stored(key, *widths[key])] if key in widths else None
    return describe


def integer_bits(dtype: torch.dtype) -> int:
    """torch.int2 -> 2, torch.int8 -> 8."""
    return int(str(dtype).removeprefix("torch.int"))


def nonzero_zero_point(key: str, zero_point: torch.Tensor) -> list[Stored]:
    """A zero-point at its stored dtype, unless it is all zero (a symmetric grid needs none stored)."""
    return [at_stored_dtype(key, zero_point)] if bool(zero_point.any()) else []


# --- the models -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Target:
    """A model to quantize and how it is judged."""
    name: str
    fresh: Callable[[], nn.Module]  # a new float model, the same weights every call
    reported: Callable[[nn.Module], float]
    validation: Callable[[nn.Module], float]
    example: object  # one model input: NNCF traces the model on it
    task: Task  # what qslm.search measures (its validation slice is ``validation``)
    metric: str
    reported_split: str
    validation_split: str
    reset: Callable[[nn.Module], object] | None = None  # clears neuron state between calibration batches


def bundled_target(name: str, quick: bool, data_dir: str | None) -> Target:
    loaded = load_model(name)
    preset = default_task(loaded)
    sizes = dict(QUICK[preset]) if quick else {"test_limit": REPORTED_LM_LINES if preset == "wikitext2" else None}
    task = build_task(preset, loaded, data_dir=data_dir, **sizes)
    if preset == "sst2":
        metric = "accuracy (%)"
        reported = f"SST-2 dev, {sizes.get('test_limit') or 872} sentences"
        validation = f"{sizes.get('validation_size') or 800} held-out SST-2 training sentences"
    else:
        metric = "word perplexity"
        reported = f"WikiText-2 test, first {sizes['test_limit']} lines"
        validation = f"{sizes.get('validation_size') or 8000:,} words of the held-out tail of WikiText-2 valid"
    return Target(name, lambda: load_model(name).model,
                  lambda m: task.metric_of(task.test(m), "Task.test"), lambda m: task.metric_of(task.evaluate(m)),
                  task.calibration[0], task, metric, reported, validation, reset_neuron_states)


def own_target(name: str) -> Target:
    """The own models exactly as ``bench/own_models_bench.py`` trains and splits them."""
    from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data
    from tests.search.test_engine import SnnTorchClassifier, SpikingJellyClassifier, sj_accuracy

    kinds = {"hand-written": (HandwrittenSpikingClassifier, accuracy, None),
             "snnTorch": (SnnTorchClassifier, accuracy, None),
             "SpikingJelly": (SpikingJellyClassifier, sj_accuracy, "spikingjelly")}
    make, metric, reset_package = kinds[name]
    reset = None
    if reset_package:
        from spikingjelly.activation_based import functional
        reset = functional.reset_net
    torch.manual_seed(0)
    ids, labels = make_data(n=960)
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        optimizer.zero_grad()
        if reset:
            reset(model)
        F.cross_entropy(model(ids[:640]), labels[:640]).backward()
        optimizer.step()
    trained = {key: value.detach().clone() for key, value in model.state_dict().items()}

    def fresh() -> nn.Module:
        copy = make()
        copy.load_state_dict(trained)
        return copy.eval()

    task = Task(evaluate=lambda m: metric(m, ids[640:800], labels[640:800]),
                calibration=[ids[i:i + 64] for i in range(0, 256, 64)],
                test=lambda m: metric(m, ids[800:], labels[800:]),
                profile_inputs=[ids[i:i + 1] for i in range(32)])
    return Target(name, fresh, lambda m: metric(m, ids[800:], labels[800:]),
                  lambda m: metric(m, ids[640:800], labels[640:800]), ids[:64], task, "accuracy (%)",
                  "160 test sequences", "160 validation sequences", reset)


# --- the tools ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
    tool: str
    label: str
    bits: int
    group: int | None = None  # None: one scale per row
    symmetric: bool = True
    all_levels: bool = False  # qslm's signed grid: symmetric, every code used
    search_memory: str | None = None  # qslm search rows: the memory limit
    method: str = "rtn"  # qslm: gptq and learned rounding fitted to the task's quantizer calibration
    trits: bool = False  # qslm's ternary grid: the symmetric 2-bit levels stored 1.6 bits a weight


def configurations(tools: Iterable[str], search_limits: Iterable[str]) -> list[Config]:
    grid: list[Config] = []
    layouts = {None: "per row", 64: "group 64", 32: "group 32"}
    for tool in tools:
        for bits in BITS:
            if tool == "torchao":
                grid += [Config(tool, f"int{bits} {layouts[g]} sym, fp16 scales", bits, g) for g in (None, 64, 32)]
            elif tool == "hqq":
                grid += [Config(tool, f"int{bits} {layouts[g]}, fp16 scales + zeros", bits, g, False)
                         for g in (None, 64)]
            elif tool == "qslm":
                grids = (("sym", True, False), ("signed", True, True), ("asym", False, False))
                grid += [Config(tool, f"int{bits} {layouts[g] if g else 'per-channel'} {name}, fp16 scales", bits, g,
                                symmetric, all_levels)
                         for g in (None, 64) for name, symmetric, all_levels in grids]
                if bits == 2:
                    grid += [Config(tool, f"int2 per-channel ternary {method}, fp16 scales", 2, method=method, trits=True)
                             for method in TERNARY_METHODS]
        if tool == "nncf":
            grid += [Config(tool, f"int8 per row {'sym' if s else 'asym'}", 8, None, s) for s in (True, False)]
            grid += [Config(tool, f"int4 {layouts[g]} {'sym' if s else 'asym'}, all layers", 4, g, s)
                     for g in (None, 64) for s in (True, False)]
    if "qslm" in tools:
        grid += [Config("qslm search", f"search, memory <= {limit}", 0, search_memory=limit) for limit in search_limits]
    return grid


def in_scope(linear_only: bool) -> Callable[[nn.Module], bool]:
    kinds = (nn.Linear,) if linear_only else (nn.Linear, nn.Embedding)
    return lambda module: isinstance(module, kinds)


def scoped_modules(model: nn.Module, linear_only: bool) -> list[tuple[str, nn.Module]]:
    keep = in_scope(linear_only)
    return [(name, module) for name, module in model.named_modules() if keep(module)]


def apply_torchao(model: nn.Module, config: Config, target: Target, linear_only: bool) -> Describe:
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis, PerGroup, quantize_
    from torchao.quantization.quant_primitives import MappingType
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor

    granularity = PerAxis(0) if config.group is None else PerGroup(config.group)
    keep = in_scope(linear_only)
    quantize_(model, IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{config.bits}"), granularity=granularity,
                                          mapping_type=MappingType.SYMMETRIC, scale_dtype=torch.float16),
              filter_fn=lambda module, fqn: keep(module))

    def describe(key: str, tensor: torch.Tensor) -> list[Stored] | None:
        if not isinstance(tensor, IntxUnpackedToInt8Tensor):
            return None
        # codes are held one per int8; counted at their own width
        return [Stored(f"{key}.qdata", tensor.qdata.numel(), integer_bits(tensor.target_dtype)),
                at_stored_dtype(f"{key}.scale", tensor.scale),
                *nonzero_zero_point(f"{key}.zero_point", tensor.zero_point)]
    return describe


def apply_hqq(model: nn.Module, config: Config, target: Target, linear_only: bool) -> Describe:
    from hqq.core.quantize import Quantizer, hqq_base_quant_config

    params = hqq_base_quant_config(nbits=config.bits, group_size=config.group, axis=1)["weight_quant_params"]
    stored: dict[int, list[Stored]] = {}
    for name, module in scoped_modules(model, linear_only):
        weight = module.weight
        if id(weight) in stored:  # a tied tensor, quantized once
            continue
        codes, meta = Quantizer.quantize(weight.data, device="cpu", compute_dtype=torch.float32, bitpack=False,
                                         **params)
        # HQQLinear keeps scale and zero in its float16 compute dtype; round them as it would store them,
        # then dequantize in float32 so the model runs the same forward as every other row
        scale, zero = meta["scale"].to(torch.float16), meta["zero"].to(torch.float16)
        meta.update(scale=scale.float(), zero=zero.float(), compute_dtype=torch.float32)
        with torch.no_grad():
            weight.copy_(Quantizer.dequantize(codes, meta).reshape(weight.shape))
        key = f"{name}.weight"
        stored[id(weight)] = [Stored(f"{key}.codes", codes.numel(), config.bits),
                              at_stored_dtype(f"{key}.scale", scale), at_stored_dtype(f"{key}.zero", zero)]

    by_key = {key: stored[id(t)] for key, t in model.state_dict(keep_vars=True).items() if id(t) in stored}
    return lambda key, tensor: by_key.get(key)


def apply_nncf(model: nn.Module, config: Config, target: Target, linear_only: bool) -> Describe:
    import nncf

    nncf.set_log_level(logging.ERROR)  # its bit-width table on every call
    modes = {(8, True): nncf.CompressWeightsMode.INT8_SYM, (8, False): nncf.CompressWeightsMode.INT8_ASYM,
             (4, True): nncf.CompressWeightsMode.INT4_SYM, (4, False): nncf.CompressWeightsMode.INT4_ASYM}
    options: dict = {"mode": modes[config.bits, config.symmetric], "dataset": nncf.Dataset([target.example])}
    if config.bits == 4:  # every layer at int4 (by default NNCF keeps embeddings and the last layer at int8)
        options.update(group_size=config.group or -1, ratio=1.0, all_layers=True)
    if linear_only:
        options["ignored_scope"] = nncf.IgnoredScope(types=["embedding"], validate=False)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        nncf.compress_weights(model, **options)
    # NNCF stores int4 codes and zero-points two to a byte, int8 ones a byte each, scales in float16:
    # every tensor at its stored dtype is already its packed size
    return lambda key, tensor: None


APPLY = {"torchao": apply_torchao, "hqq": apply_hqq, "nncf": apply_nncf}


def qslm_uniform(target: Target, config: Config, linear_only: bool) -> tuple[nn.Module, int, Describe]:
    """The plan ``qslm quantize`` writes (on the ternary grid: every unit at that spec, gptq and learned
    rounding fitted to the task's quantizer calibration, the embeddings rtn), as the packed model loaded
    back; its ``plan_bytes``."""
    model = target.fresh()
    context = None
    if config.trits:
        context = record_context(model, target.task.quantizer_inputs, (config.method,), target.reset)
        spec = QuantSpec(2, method=config.method, scale_dtype="float16", trits=True)
        plan = QuantPlan({unit: spec if applicable(unit, 2, config.method, context)
                          else dataclasses.replace(spec, method="rtn") for unit in quantizable_units(model)})
    else:
        plan = build_plan(model, bits=config.bits, granularity=f"group:{config.group}" if config.group else None,
                          symmetric=config.symmetric, all_levels=config.all_levels or None)
    if linear_only:
        plan = QuantPlan({name: spec for name, spec in plan.units.items()
                          if quantizable_units(model)[name].kind == "Linear"})
    packed = target.fresh()
    load_packed_into(packed, packed_state_dict(model, plan, context), plan)
    return packed.eval(), plan_bytes(model, plan), qslm_describe(packed)


def qslm_search(target: Target, config: Config, out: Path) -> tuple[nn.Module | None, int, Describe]:
    import qslm

    quality = ({"max_drop": 1.0} if target.task.higher_is_better else {"max_relative_increase": 0.03})
    model = target.fresh()
    folder = out / "search" / f"{target.name}-{config.search_memory}"
    shutil.rmtree(folder, ignore_errors=True)  # a row is measured afresh: no journal of an earlier version resumed
    result = qslm.search(model, target.task, out=folder,
                         constraints=qslm.Constraints(max_memory=config.search_memory, **quality),
                         progress=False, overwrite=True, cache_dir=out / "cache")
    if result.plan is None:
        return None, 0, None
    return result.model.eval(), plan_bytes(target.fresh(), result.plan), qslm_describe(result.model)


# --- one row ------------------------------------------------------------------------------------------

def error_text(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".strip()


def narrowest_rows(model: nn.Module, linear_only: bool) -> int:
    return min(module.weight.shape[1] for _, module in scoped_modules(model, linear_only))


def run_row(target: Target, config: Config, fp32_bytes: int, out: Path, linear_only: bool) -> dict:
    row = {"model": target.name, "tool": config.tool, "configuration": config.label}
    started = time.perf_counter()
    try:
        expected = None
        if config.tool == "qslm":
            model, expected, describe = qslm_uniform(target, config, linear_only)
        elif config.tool == "qslm search":
            model, expected, describe = qslm_search(target, config, out)
            if model is None:
                return {**row, "error": "no plan: the validation slice certifies none at this memory",
                        "quantize_seconds": round(time.perf_counter() - started, 1)}
        else:
            model = target.fresh()
            describe = APPLY[config.tool](model, config, target, linear_only)
        stored = honest_bytes(ledger(model, describe))
        if expected is not None:
            assert stored == expected, f"{target.name} {config.label}: honest_bytes {stored} != plan_bytes {expected}"
        row["quantize_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        with torch.no_grad():
            reported, validation = target.reported(model), target.validation(model)
        row.update(bytes=stored, memory_pct=100 * stored / fp32_bytes, reported=reported, validation=validation,
                   evaluate_seconds=round(time.perf_counter() - started, 1))
    except Exception as err:  # a peer that cannot quantize or run this model is a result, not a crash
        row.update(error=error_text(err), quantize_seconds=round(time.perf_counter() - started, 1))
    return row


def fp32_row(target: Target, model: nn.Module) -> dict:
    started = time.perf_counter()
    with torch.no_grad():
        reported, validation = target.reported(model), target.validation(model)
    fp32 = honest_bytes(ledger(model))
    return {"model": target.name, "tool": "float", "configuration": "FP32", "bytes": fp32, "memory_pct": 100.0,
            "reported": reported, "validation": validation, "quantize_seconds": 0.0,
            "evaluate_seconds": round(time.perf_counter() - started, 1)}


# --- output -------------------------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def model_table(rows: list[dict]) -> list[str]:
    lines = ["| tool | configuration | memory (% FP32) | reported split | validation slice | quantize s | evaluate s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            outcome = "no plan" if row["tool"] == "qslm search" and row["error"].startswith("no plan") else "failed"
            lines.append(f"| {row['tool']} | {row['configuration']} | {outcome} | {row['error']} | | "
                         f"{row['quantize_seconds']:.0f} | |")
        else:
            lines.append(f"| {row['tool']} | {row['configuration']} | {row['memory_pct']:.2f} | {fmt(row['reported'])} "
                         f"| {fmt(row['validation'])} | {row['quantize_seconds']:.0f} | {row['evaluate_seconds']:.0f} |")
    return lines


def better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


# qslm's float16 scales carry one exponent byte per tensor: a plan a few dozen bytes over a peer's is at
# its memory, not above it
EQUAL_MEMORY_TOLERANCE = 1.001


def equal_memory_table(rows: list[dict], higher_is_better: bool) -> list[str]:
    """Each peer row beside the qslm uniform plan at no more memory (within 0.1%) that does best on the
    validation slice (chosen on validation, so the reported split stays an honest comparison)."""
    def best_fitting(peer: dict, qslm: list[dict]) -> dict | None:
        best = None
        for r in qslm:
            if r["bytes"] <= peer["bytes"] * EQUAL_MEMORY_TOLERANCE and (
                    best is None or better(r["validation"], best["validation"], higher_is_better)):
                best = r
        return best

    return peers_beside_qslm(rows, "qslm plan at <= that memory (best on validation)", best_fitting,
                             "none at this memory")


def smaller_at_quality_table(rows: list[dict], higher_is_better: bool) -> list[str]:
    """Each peer row beside the smallest qslm uniform plan at least as good on the validation slice (chosen
    there, so the reported split stays an honest comparison): how much smaller qslm is at the peer's quality."""
    def smallest_as_good(peer: dict, qslm: list[dict]) -> dict | None:
        good = [r for r in qslm if not better(peer["validation"], r["validation"], higher_is_better)]
        return min(good, key=lambda r: r["bytes"], default=None)

    def smaller_by(peer: dict, best: dict) -> str:
        return f"{100 * (1 - best['bytes'] / peer['bytes']):.1f}%"

    return peers_beside_qslm(rows, "smallest qslm plan at least as good on validation", smallest_as_good,
                             "none as good", ("qslm smaller by", smaller_by))


def peers_beside_qslm(rows: list[dict], chosen: str, choose: Callable[[dict, list[dict]], "dict | None"],
                      none: str, extra: tuple[str, Callable[[dict, dict], str]] | None = None) -> list[str]:
    """One line per peer row: the peer, and the qslm uniform plan ``choose`` picks for it (headed ``chosen``;
    ``none`` where there is none), with an ``extra`` (heading, cell) column."""
    qslm = [r for r in rows if r["tool"] == "qslm" and "error" not in r]
    heads = ["peer", "peer memory %", "peer reported", "peer validation", chosen, "qslm memory %", "qslm reported",
             "qslm validation"] + ([extra[0]] if extra else [])
    lines = ["| " + " | ".join(heads) + " |", "|---|---:|---:|---:|---|---:|---:|---:|" + ("---:|" if extra else "")]
    for peer in rows:
        if peer["tool"] in ("float", "qslm", "qslm search") or "error" in peer:
            continue
        best = choose(peer, qslm)
        cells = [f"{peer['tool']} {peer['configuration']}", f"{peer['memory_pct']:.2f}", fmt(peer["reported"]),
                 fmt(peer["validation"])]
        if best is None:
            cells.append(none)
        else:
            cells += [best["configuration"], f"{best['memory_pct']:.2f}", fmt(best["reported"]),
                      fmt(best["validation"])]
            cells += [extra[1](peer, best)] if extra else []
        lines.append("| " + " | ".join(cells) + " |" + " |" * (len(heads) - len(cells)))  # empty cells: "| |"
    return lines


SUMMARY_COLUMNS = (("torchao", ""), ("hqq", ""), ("nncf", "sym"), ("nncf", "asym"), ("qslm", "sym"),
                   ("qslm", "signed"), ("qslm", "asym"), *(("qslm", f"ternary {m}") for m in TERNARY_METHODS))
SUMMARY_HEADS = ("torchao sym", "HQQ", "NNCF sym", "NNCF asym", "qslm sym", "qslm signed", "qslm asym",
                 *(f"qslm ternary {m}" for m in TERNARY_METHODS))


def grid_name(config: Config) -> str:
    if config.tool in ("torchao", "hqq"):
        return ""
    if config.trits:
        return f"ternary {config.method}"
    return "signed" if config.all_levels else "sym" if config.symmetric else "asym"


def summary_table(results: dict, grid: list[Config]) -> list[str]:
    """Every model, one line per width and layout, one column per tool: memory % · reported / validation."""
    configs = {(c.tool, c.label): c for c in grid}
    lines = ["| model | width, layout | " + " | ".join(SUMMARY_HEADS) + " |",
             "|---|---|" + "---|" * len(SUMMARY_HEADS)]
    for model in results["models"]:
        cells: dict[tuple, dict] = {}
        for row in results["rows"]:
            config = configs.get((row["tool"], row["configuration"]))
            if row["model"] != model["name"] or config is None:
                continue
            column = (config.tool, grid_name(config))
            cells[(config.bits, config.group), column] = row
        layouts = sorted({layout for layout, _ in cells}, key=lambda k: (k[0], -(k[1] or 10 ** 6)))
        float_row = next(r for r in results["rows"] if r["model"] == model["name"] and r["tool"] == "float")
        lines.append(f"| {model['name']} | FP32 | {fmt(float_row['reported'])} / {fmt(float_row['validation'])} |"
                     + " |" * (len(SUMMARY_HEADS) - 1))
        for bits, group in layouts:
            shown = []
            for column in SUMMARY_COLUMNS:
                row = cells.get(((bits, group), column))
                shown.append("" if row is None else "failed" if "error" in row else
                             f"{row['memory_pct']:.2f}% · {fmt(row['reported'])} / {fmt(row['validation'])}")
            layout = "per row" if group is None else f"group {group}"
            lines.append(f"| {model['name']} | int{bits} {layout} | " + " | ".join(shown) + " |")
    return lines


def markdown(results: dict, grid: list[Config]) -> str:
    lines = [f"Written by `{results['command']}` ({results['date']}; {results['machine']}; "
             f"{', '.join(f'{k} {v}' for k, v in results['versions'].items())}).", "",
             "Each cell: memory (% of FP32) · reported split / validation slice.", ""]
    lines += summary_table(results, grid) + [""]
    for model in results["models"]:
        rows = [r for r in results["rows"] if r["model"] == model["name"]]
        lines += [f"### {model['name']}: {model['metric']}", "",
                  f"Reported split: {model['reported_split']}; validation slice: {model['validation_split']}. "
                  f"FP32: {model['fp32_bytes']:,} bytes." + (f" {model['note']}" if model.get("note") else ""), ""]
        lines += model_table(rows) + [""]
        if any(r["tool"] == "qslm" for r in rows) and any(r["tool"] in APPLY for r in rows):
            lines += [f"At equal memory ({model['name']}):", ""]
            lines += equal_memory_table(rows, model["higher_is_better"]) + [""]
            lines += [f"At the peer's quality ({model['name']}):", ""]
            lines += smaller_at_quality_table(rows, model["higher_is_better"]) + [""]
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "torchao", "hqq", "nncf"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    found["qslm"] = commit.stdout.strip() or "unknown"
    return found


def quiet_peers() -> None:
    """No usage telemetry from NNCF, no import-time chatter from torchao's optional GPU kernels."""
    os.environ.setdefault("NNCF_CI", "1")
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao registers an enum the old way


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUNDLED + OWN))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--quick", action="store_true", help="a small slice of each split, for development")
    parser.add_argument("--search", default="", help="memory limits for qslm.search rows, e.g. 12.5%%,10%%")
    parser.add_argument("--linear-only", action="store_true", help="quantize nn.Linear weights only")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed, so figures repeat)")
    parser.add_argument("--resume", action="store_true", help="keep rows already in the JSON of the same settings")
    parser.add_argument("--reuse", default="", help="JSON files of earlier runs (same settings) whose rows are kept, "
                                                     "e.g. of runs over different models side by side")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="docs/results/peers.md")
    parser.add_argument("--work", default="bench-out/peers", help="search outputs and caches")
    args = parser.parse_args()
    run_started = time.perf_counter()
    quiet_peers()
    torch.set_num_threads(args.threads)
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tool {unknown[0]!r}; expected some of {', '.join(TOOLS)}")
    out_md = Path(args.out)
    out_json = out_md.with_suffix(".json")
    settings = {"quick": args.quick, "linear_only": args.linear_only, "threads": args.threads}
    previous, reused = {}, []
    sources = [Path(p) for p in args.reuse.split(",") if p] + ([out_json] if args.resume else [])
    for source in sources:
        if source.is_file():
            old = json.loads(source.read_text())
            if old.get("settings") == settings:
                previous.update({(r["model"], r["tool"], r["configuration"]): r for r in old["rows"]})
                reused.append({"file": str(source), "command": old["command"], "versions": old["versions"]})
    results = {"command": "python bench/peers_bench.py " + " ".join(sys.argv[1:]),
               "date": datetime.date.today().isoformat(),
               "machine": f"{os.cpu_count()} CPU cores, no GPU, {platform.python_implementation()} "
                          f"{platform.python_version()}, {args.threads} torch thread{'' if args.threads == 1 else 's'}",
               "versions": versions(), "settings": settings, "reused": reused, "models": [], "rows": []}
    work = Path(args.work) / ("quick" if args.quick else "full")  # a search's journal belongs to one task
    grid = configurations(tools, [limit for limit in args.search.split(",") if limit])
    out_md.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        target = own_target(name) if name in OWN else bundled_target(name, args.quick, args.data_dir)
        model = target.fresh()
        fp32 = plan_bytes(model, QuantPlan())
        assert honest_bytes(ledger(model)) == fp32, f"{name}: FP32 bytes disagree with plan_bytes"
        narrowest = narrowest_rows(model, args.linear_only)
        skipped = sorted({c.group for c in grid if c.group and c.group > narrowest})
        note = (f"Groups of {' and '.join(map(str, skipped))} left out: its weights have {narrowest} columns."
                if skipped else "")
        results["models"].append({"name": name, "metric": target.metric, "reported_split": target.reported_split,
                                  "validation_split": target.validation_split, "fp32_bytes": fp32,
                                  "higher_is_better": target.task.higher_is_better, "note": note})
        kept_searches = [Config("qslm search", r["configuration"], 0) for (model_name, tool, _), r in previous.items()
                         if model_name == name and tool == "qslm search"]  # searches at other limits, kept
        labels = {(c.tool, c.label) for c in grid}
        for config in [None, *grid, *[c for c in kept_searches if (c.tool, c.label) not in labels]]:
            if config is not None and config.group and config.group > narrowest:
                continue
            key = (name, "float", "FP32") if config is None else (name, config.tool, config.label)
            row = previous.get(key) or (fp32_row(target, model) if config is None
                                        else run_row(target, config, fp32, work, args.linear_only))
            results["rows"].append(row)
            shown = (f"{row['memory_pct']:6.2f}%  reported {fmt(row['reported'])}  validation {fmt(row['validation'])}"
                     if "error" not in row else row["error"])
            print(f"{name} | {row['tool']} | {row['configuration']} | {shown}", flush=True)
            out_json.write_text(json.dumps(results, indent=1) + "\n")  # after every row: a long run can resume
    results["wall_seconds"] = round(time.perf_counter() - run_started)
    text = markdown(results, grid)
    out_md.write_text(text + "\n")
    out_json.write_text(json.dumps(results, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
