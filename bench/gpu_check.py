"""A few minutes on a GPU: learned rounding and a local-sensitivity search on the SpikeGPT-216M shape, CUDA
against CPU.

    python bench/gpu_check.py [--device cuda] [--shape 216m|tiny] [--units 6] [--json bench-out/gpu_check.json]

The model is SpikeGPT at the 216M shape (18 blocks, width 768, vocabulary 50,277) with random weights
(seeded): the check is of speed and of the code paths on a device, not of quality. Its data are random
token windows (seeded).

1. **Hessians**: the unit-input second moments of every unit on the calibration windows, on the device.
2. **Learned rounding** at 2 bits of the first ``--units`` units that have a Hessian, on the device and on
   the CPU: seconds, the output error against rtn's, and how many codes the two devices agree on (float
   sums in another order can tip a rounding).
3. **A search** on the device: ``qslm.search`` with ``sensitivity_method="local"``, methods rtn and learned,
   widths 2/4/8 and a memory limit, on per-window negative log-likelihoods (a perplexity task). Seconds, the
   plan's memory and its packed bytes. ``--cpu-search`` runs the same search on the CPU for the ratio (slow
   at this shape: hours on 2 cores).

``--shape tiny`` (2 blocks, width 64) runs everything in a minute on a CPU, to check the script itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qslm  # noqa: E402
from qslm.environment import environment  # noqa: E402
from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig  # noqa: E402
from qslm.quant.context import LearnedOptions  # noqa: E402
from qslm.quant.methods.learned import learned_rounding  # noqa: E402
from qslm.quant.quantizer import QuantizedTensor, QuantSpec, quantize_tensor  # noqa: E402
from qslm.quant.unit_inputs import UnitHessian, record_hessians  # noqa: E402
from qslm.quant.units import quantizable_units, unit_tensor  # noqa: E402

SHAPES = {"216m": dict(vocab_size=50277, n_embd=768, n_layer=18, ctx_len=1024),
          "tiny": dict(vocab_size=512, n_embd=64, n_layer=2, ctx_len=64)}
WINDOW = {"216m": 256, "tiny": 32}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def windows(vocab: int, length: int, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (1, length + 1), generator=generator) for _ in range(count)]


def window_nll(model, data: list[torch.Tensor]) -> torch.Tensor:
    """One mean next-token negative log-likelihood per window."""
    device = next(model.parameters()).device
    scores = []
    with torch.no_grad():
        for window in data:
            reset_neuron_states(model)
            window = window.to(device)
            logits = model(window[:, :-1])
            scores.append(float(F.cross_entropy(logits[0].float(), window[0, 1:])))
    return torch.tensor(scores)


def learned_on(device: torch.device, weight: torch.Tensor, hessian: UnitHessian, spec: QuantSpec
               ) -> tuple[float, QuantizedTensor]:
    w = weight.detach().to(device)
    synchronise(device)
    started = time.perf_counter()
    learned = learned_rounding(w, spec, hessian, LearnedOptions())
    synchronise(device)
    return time.perf_counter() - started, learned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="216m")
    parser.add_argument("--units", type=int, default=6, help="units whose learned rounding is timed on both devices")
    parser.add_argument("--cpu-search", action="store_true", help="also run the search on the CPU")
    parser.add_argument("--json", default="bench-out/gpu_check.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda, but CUDA is not available here (use --device cpu --shape tiny to check "
                 "the script)")
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(**SHAPES[args.shape])).eval().to(device)
    length = WINDOW[args.shape]
    calibration = [w[:, :-1] for w in windows(model.config.vocab_size, length, 8, seed=1)]
    validation, test = windows(model.config.vocab_size, length, 16, 2), windows(model.config.vocab_size, length, 16, 3)
    result: dict = {"shape": args.shape, "device": str(device), "environment": environment(),
                    "parameters": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)

    synchronise(device)
    started = time.perf_counter()
    hessians = record_hessians(model, [c.to(device) for c in calibration], reset_neuron_states)
    synchronise(device)
    result["hessians_s"] = time.perf_counter() - started
    print(f"Hessians of {len(hessians)} units: {result['hessians_s']:.1f} s", flush=True)

    units = quantizable_units(model)
    spec = QuantSpec(2, method="learned", scale_dtype="float16")
    rows = []
    for name in [u for u in units if u in hessians][:args.units]:
        weight = unit_tensor(model, units[name]).detach()
        on_device, learned = learned_on(device, weight, hessians[name], spec)
        on_cpu, on_cpu_learned = learned_on(torch.device("cpu"), weight, hessians[name], spec)
        nearest = quantize_tensor(weight.cpu(), QuantSpec(2, scale_dtype="float16"))
        rows.append(dict(unit=name, shape=list(weight.shape), device_s=on_device, cpu_s=on_cpu,
                         codes_agree=float((learned.codes.cpu() == on_cpu_learned.codes).float().mean()),
                         error_vs_rtn=hessians[name].output_error(on_cpu_learned.dequantize() - weight.cpu())
                         / max(hessians[name].output_error(nearest.dequantize() - weight.cpu()), 1e-30)))
        print(f"learned rounding {name} {list(weight.shape)}: {on_device:.2f} s on {device}, {on_cpu:.2f} s on the CPU, "
              f"codes agree {rows[-1]['codes_agree']:.4%}, output error {rows[-1]['error_vs_rtn']:.3f} x rtn's",
              flush=True)
    result["learned"] = rows

    task = qslm.Task(evaluate=lambda m: window_nll(m, validation), test=lambda m: window_nll(m, test),
                     calibration=calibration[:2], quantizer_calibration=calibration, higher_is_better=False,
                     scores_are_nll=True, name="random-windows")
    config = qslm.SearchConfig(sensitivity_method="local", methods=("rtn", "learned"), bit_choices=(2, 4, 8))
    searches = {}
    for where in [device] + ([torch.device("cpu")] if args.cpu_search and device.type != "cpu" else []):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            found = qslm.search(model.to(where), task, out=Path(folder) / "out",
                                constraints=qslm.Constraints(max_relative_increase=0.05, max_memory=0.15,
                                                             confidence=0.5),
                                config=config, device=str(where), progress=False, cache_dir=Path(folder) / "cache")
            seconds = time.perf_counter() - started
        chosen = found.report.get("chosen") or {}
        searches[str(where)] = dict(seconds=seconds, candidates=len(found.report.get("candidates", [])),
                                    memory_fraction=chosen.get("memory_fraction"),
                                    memory_bytes=chosen.get("memory_bytes"))
        print(f"search on {where}: {seconds:.1f} s, {searches[str(where)]}", flush=True)
    result["search"] = searches
    if "cpu" in searches and str(device) in searches and device.type != "cpu":
        result["search_speedup"] = searches["cpu"]["seconds"] / searches[str(device)]["seconds"]
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"written {out}")


if __name__ == "__main__":
    main()
