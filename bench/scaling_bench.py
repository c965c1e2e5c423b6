"""How QSLM's cost grows with the model: profiling, sensitivity and tiered-search time and peak RAM
for SpikeGPT models of growing depth and width (random weights; timing only), up to the exact
SpikeGPT-216M shape (18 blocks, d=768, vocab 50277).

    python bench/scaling_bench.py --out bench-out/scaling.md
    python bench/scaling_bench.py --configs 4x128,24x128 --tokens 128

Each configuration runs in a fresh subprocess (peak RSS is that run's alone). The search runs the real
machinery (hierarchy, op counts, sensitivity with fake quantization, tiered search with real forward
passes); its quality metric is a pseudo-perplexity against the float model's own greedy predictions
on random token windows, with a 3% constraint, since random weights have no task to score.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIGS = "4x128,8x128,12x128,24x128,6x256,6x512,6x768,18x768v50277"


def parse_config(text: str) -> dict:
    shape, _, vocab = text.partition("v")
    depth, width = shape.split("x")
    return {"n_layer": int(depth), "n_embd": int(width), "vocab_size": int(vocab or 2048)}


def measure(config: dict, tokens: int, bits: list[int], threads: int, device: str, method: str) -> dict:
    import torch
    import torch.nn.functional as F

    from qslm.analysis.energy import energy_per_inference, latency_per_inference
    from qslm.analysis.hierarchy import build_hierarchy
    from qslm.analysis.local_sensitivity import BlockLocalSensitivity
    from qslm.analysis.ops import measure_op_counts
    from qslm.analysis.sensitivity import damage
    from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
    from qslm.quant.apply import WeightCache, fake_quantized
    from qslm.quant.memory import fixed_bytes, unit_bytes
    from qslm.quant.plan import QuantPlan
    from qslm.quant.quantizer import QuantSpec
    from qslm.search.journal import Journal
    from qslm.search.objective import Baseline, Constraints, parse_weights
    from qslm.search.problem import SearchProblem
    from qslm.search.tiered import tiered_search
    from qslm.tasks.calibration import CalibrationSet, output_log_probs

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(ctx_len=128, **config)).eval()
    for p in model.parameters():  # random weights large enough that neurons fire
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.05)
    model.to(device)
    ids = torch.randint(0, config["vocab_size"], (max(1, tokens // 128), 129))
    with torch.no_grad():
        targets = model(ids[:, :-1].to(device)).argmax(-1).cpu()
    calibration = CalibrationSet(True, [(ids[:, :-1], None, targets)], "random")
    ids = ids.to(device)
    base = QuantSpec(8)

    started = time.perf_counter()
    hierarchy = build_hierarchy(model)
    groups = hierarchy.groups()
    modules = dict(model.named_modules())
    op_counts = measure_op_counts(model, lambda: (model(ids[:, :-1]), len(ids))[1])
    profile_s = time.perf_counter() - started

    started = time.perf_counter()
    reference = output_log_probs(model, calibration)
    local = BlockLocalSensitivity.for_hierarchy(model, hierarchy, calibration) if method == "local" else None
    cache = WeightCache()
    sens = {}
    scopes = list(dict.fromkeys([tuple(m) for m in groups.values()] + [(u,) for u in hierarchy.units]))
    for members in scopes:
        block = local.block_holding(members) if local is not None else None
        for b in bits:
            with fake_quantized(model, QuantPlan({u: QuantSpec(b) for u in members}), cache):
                sens[members, b] = local.damage(block)["kl"] if block is not None else \
                    damage(reference, output_log_probs(model, calibration), calibration)["kl"]
    sensitivity_s = time.perf_counter() - started

    def pseudo_ppl() -> float:
        with torch.no_grad():
            logits = model(ids[:, :-1])
        return float(torch.exp(F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())))

    def measure_metric(assignment):
        t0 = time.perf_counter()
        with fake_quantized(model, QuantPlan.from_bits(assignment, base), cache):
            return pseudo_ppl(), time.perf_counter() - t0

    fixed = fixed_bytes(model)
    bytes_table = {u: {b: unit_bytes(modules[u], QuantSpec(b)) for b in bits} for u in hierarchy.units}
    fp32 = fixed + sum(unit_bytes(modules[u], None) for u in hierarchy.units)
    baseline = Baseline(pseudo_ppl(), False, fp32, energy_per_inference(op_counts).total_pj,
                        latency_per_inference(op_counts))
    with tempfile.TemporaryDirectory() as tmp:
        problem = SearchProblem(groups, bits, measure_metric, bytes_table, fixed,
                                lambda a: energy_per_inference(op_counts, a).total_pj,
                                lambda a: latency_per_inference(op_counts, a),
                                lambda m, b: sens[tuple(m), b], baseline, Constraints(max_relative_increase=0.03),
                                parse_weights(None), Journal(Path(tmp) / "j.jsonl", {}), progress=False)
        started = time.perf_counter()
        best = tiered_search(problem)
        search_s = time.perf_counter() - started
    return {"params": sum(p.numel() for p in model.parameters()), "units": len(hierarchy.units),
            "blocks": len(hierarchy.blocks), "profile_s": profile_s, "sensitivity_s": sensitivity_s,
            "search_s": search_s, "evaluations": len(problem.candidates),
            "memory_fraction": best.score.memory_fraction if best else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="DEPTHxWIDTH[vVOCAB],...")
    parser.add_argument("--tokens", type=int, default=256, help="calibration tokens (windows of 128)")
    parser.add_argument("--bits", default="2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sensitivity", default="exact", choices=("exact", "local"),
                        help="sensitivity method, as qslm search --sensitivity")
    parser.add_argument("--out", default=None, help="write the markdown table here too")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    bits = [int(b) for b in args.bits.split(",")]
    if args.child:
        print(json.dumps(measure(parse_config(args.child), args.tokens, bits, args.threads, args.device,
                                 args.sensitivity)))
        return
    rows = ["| blocks x width (vocab) | parameters | units | profile s | sensitivity s | search s | evaluations "
            "| s per unit (sens.+search) | peak RSS MB | peak GPU MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for text in args.configs.split(","):
        command = [sys.executable, __file__, "--child", text, "--tokens", str(args.tokens), "--bits", args.bits,
                   "--threads", str(args.threads), "--device", args.device, "--sensitivity", args.sensitivity]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append(f"| {text} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr else '?'} |")
            print(rows[-1], flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        config = parse_config(text)
        per_unit = (r["sensitivity_s"] + r["search_s"]) / r["units"]
        rows.append(f"| {config['n_layer']} x {config['n_embd']} ({config['vocab_size']}) | {r['params'] / 1e6:.1f}M | "
                    f"{r['units']} | {r['profile_s']:.1f} | {r['sensitivity_s']:.1f} | {r['search_s']:.1f} | "
                    f"{r['evaluations']} | {per_unit:.2f} | {r['peak_rss_mb']:.0f} | {r['peak_gpu_mb']:.0f} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
