"""Search reports: ``report.json`` (everything), ``report.md`` (paper-style table and details) and PNG plots
(Pareto front of all evaluated candidates, bit-width per module, sensitivity heatmap)."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from .analysis.energy import power_mw
from .environment import environment
from .headline import headline
from .quant.methods import Needs, method_named, method_names, registered_methods
from .quant.plan import FLOAT_BITS
from .model_inputs import inferences_in
from .quant.quantizer import DEFAULT_METHOD


def _figure(**kwargs):
    """A matplotlib figure drawn straight to files (no pyplot, so the user's backend is left alone)."""
    from matplotlib.figure import Figure  # imported on use: plotting is the only part that needs it

    figure = Figure(**kwargs)
    return figure, figure.subplots()

PLOTS = {"pareto": "pareto.png", "bitwidths": "bitwidths.png", "sensitivity": "sensitivity.png"}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (x, y), both lower-is-better."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot_pareto(report: dict, path: Path) -> None:
    candidates = report["candidates"]
    quality_axis = (f"{report['metric_name']} drop" if report["higher_is_better"]
                    else f"{report['metric_name']} increase (relative)")
    fig, ax = _figure(figsize=(6.4, 4.4))
    tiers = sorted({c["tier"] for c in candidates})
    for tier in tiers:
        xs = [100 * c["memory_fraction"] for c in candidates if c["tier"] == tier]
        ys = [c["quality_loss"] for c in candidates if c["tier"] == tier]
        ax.scatter(xs, ys, s=18, alpha=0.7, label=tier)
    points = [(c["memory_fraction"], c["quality_loss"]) for c in candidates]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    ax.plot([100 * points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=1, label="Pareto front")
    chosen = report.get("chosen")
    if chosen:
        ax.scatter([100 * chosen["memory_fraction"]], [chosen["quality_loss"]], marker="*", s=180, c="red",
                   zorder=5, label="chosen")
    ax.set_xlabel("memory (% of FP32)")
    ax.set_ylabel(quality_axis + " on validation slice")
    ax.set_title(f"{report['model']}: {len(candidates)} candidates evaluated")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# for registered methods that declare no colour, in registration order; a name no longer registered is grey
SPARE_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
UNKNOWN_METHOD_COLOUR = "tab:gray"


def method_colours() -> dict[str, str]:
    """Registered method -> its plot colour: the one it declares, else the next spare one."""
    methods = registered_methods()
    declared = {m.colour for m in methods if m.colour is not None}
    spare = iter([c for c in SPARE_COLOURS if c not in declared])
    return {m.name: m.colour if m.colour is not None else next(spare, UNKNOWN_METHOD_COLOUR) for m in methods}


def _calibration_line(report: dict) -> str:
    """How many inferences the sensitivities used, and those the data-driven methods (gptq, codebook, ...)
    were fitted to."""
    line = f"- calibration: {report['calibration_size']} inferences for the sensitivities"
    fitted = report.get("quantizer_calibration_size")
    if fitted is None:
        return line
    fitting = [m for m in report["config"].get("methods") or []
               if m in method_names() and method_named(m).uses is not Needs.WEIGHT] or ["the data-driven methods"]
    named = " and ".join([", ".join(fitting[:-1]), fitting[-1]]) if len(fitting) > 1 else fitting[0]
    return f"{line}; {named} fitted to {fitted}"


def chosen_methods(report: dict) -> dict[str, str]:
    """unit -> the quantizer of its width in the chosen plan (rtn where the report names none; float
    units are left out)."""
    methods = report.get("methods") or {}
    assignment = (report.get("chosen") or {}).get("assignment") or {}
    return {u: methods.get(u, {}).get(str(b), DEFAULT_METHOD) for u, b in assignment.items() if b != FLOAT_BITS}


def chosen_quantizers(report: dict) -> dict[str, str]:
    """unit -> its method in the chosen plan, followed by its grid where the search chose grids per unit
    (``gptq signed``); float units are left out."""
    grids = report.get("grids") or {}
    assignment = (report.get("chosen") or {}).get("assignment") or {}
    return {u: f"{m} {grids[u][str(assignment[u])]}" if str(assignment[u]) in grids.get(u, {}) else m
            for u, m in chosen_methods(report).items()}


def plot_bitwidths(report: dict, path: Path):
    """The chosen plan's width per unit, coloured by method; returns the figure drawn (None: no plan)."""
    assignment = (report.get("chosen") or {}).get("assignment") or {}
    if not assignment:
        return
    names = list(assignment)
    methods = chosen_methods(report)
    fig, ax = _figure(figsize=(max(6.0, 0.22 * len(names)), 3.6))
    palette = method_colours()
    colour_of = lambda m: palette.get(m, UNKNOWN_METHOD_COLOUR)  # noqa: E731
    colours = [colour_of(methods.get(n, DEFAULT_METHOD)) for n in names]
    ax.bar(range(len(names)), [assignment[n] for n in names], color=colours)
    order = list(palette)  # registration order, then names no longer registered
    used = sorted(set(methods.values()), key=lambda m: (order.index(m) if m in order else len(order), m))
    if used != [DEFAULT_METHOD]:  # a legend only when the plan mixes quantizers
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=colour_of(m), label=m) for m in used], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("bits")
    ax.set_title("bit-width per module (chosen plan)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_sensitivity(report: dict, path: Path):
    """The sensitivity table as a heatmap, units by widths; returns the figure drawn (None: no table)."""
    table = report.get("sensitivity") or {}
    if not table:
        return
    units = list(table)
    bits = sorted({int(b) for row in table.values() for b in row})
    values = [[math.log10(max(table[u].get(str(b), {}).get("damage", float("nan")), 1e-12)) for b in bits]
              for u in units]
    # Wide enough for the unit names beside the heatmap and the colour bar (a fixed width squeezed the
    # heatmap out for long SpikeGPT names).
    longest = max(len(u) for u in units)
    fig, ax = _figure(figsize=(2.0 + 0.7 * len(bits) + 0.05 * longest, max(3.0, 0.16 * len(units))),
                      layout="constrained")
    image = ax.imshow(values, aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(bits)))
    ax.set_xticklabels([f"{b}b" for b in bits])
    ax.set_yticks(range(len(units)))
    ax.set_yticklabels(units, fontsize=6)
    fig.colorbar(image, ax=ax, label=f"log10 {report.get('damage_measure', 'damage')} vs float")
    ax.set_title("sensitivity (one unit quantized)")
    fig.savefig(path, dpi=110)
    return fig


def _fmt_metric(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if math.isfinite(value) else "not finite"


def markdown(report: dict) -> str:
    hib = report["higher_is_better"]
    base, final = report["baseline"], report.get("final")
    metric_name = report["metric_name"]
    lines = [f"# QSLM report: {report['model']} on {report['task']}", ""]
    lines += headline(report)
    lines.append("")
    lines.append(f"Strategy `{report['config']['strategy']}`, {len(report['candidates'])} candidate evaluations, "
                 f"{report['seconds']['total']:.0f} s in all.")
    lines.append("")
    if final:
        split = final["split"]
        rows = [
            ("Memory (MB)", f"{base['memory_bytes'] / 1e6:.3f}", f"{final['memory_bytes'] / 1e6:.3f}",
             f"{100 * (1 - final['memory_bytes'] / base['memory_bytes']):.1f}% less"),
            ("Energy per inference (uJ)", f"{base['energy_pj'] / 1e6:.3f}", f"{final['energy_pj'] / 1e6:.3f}",
             f"{100 * (1 - final['energy_pj'] / base['energy_pj']):.1f}% less"),
            ("Power (mW)", f"{base['power_mw']:.3f}", f"{final['power_mw']:.3f}",
             f"{100 * (1 - final['power_mw'] / base['power_mw']):.1f}% less"),
            (f"{metric_name} ({split})", _fmt_metric(base[f"metric_{split}"]), _fmt_metric(final["metric"]),
             ("n/a" if not math.isfinite(final["metric"] - base[f"metric_{split}"])
              else f"{final['metric'] - base[f'metric_{split}']:+.4g}" if hib
              else f"{100 * (final['metric'] / base[f'metric_{split}'] - 1):+.2f}%")),
            ("Latency per batch on this machine (ms)", f"{1e3 * base['latency_s']:.1f}",
             f"{1e3 * final['latency_s']:.1f}", f"x{final['latency_s'] / base['latency_s']:.2f}"),
        ]
        lines += ["| | FP32 | QSLM | change |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        lines.append("")
        lines.append(f"Memory is bytes of the exported model's tensors (codes, scales, zero-points and float "
                     f"tensors, each shared tensor once). Energy uses the `{report['hardware']}` hardware profile. "
                     f"The {metric_name} is measured on the `{split}` data, once, on the packed model loaded "
                     f"back; the search itself only saw the validation data.")
        lines.append("")
    else:
        lines += ["No plan met the constraints. Closest plans:", ""]
        for c in report.get("closest", []):
            lines.append(f"- candidate {c['index']} ({c['tier']}): memory {100 * c['memory_fraction']:.1f}% of FP32, "
                         f"quality loss {c['quality_loss']:.4g}; "
                         + (f"violates: {'; '.join(c['violations'])}" if c["violations"]
                            else "within the limits on the search half, failed on the confirmation half"))
        lines.append("")
    lines += ["## Constraints and objective", "", f"- constraints: `{json.dumps(report['constraints'])}`",
              f"- search config: `{json.dumps(report['config'])}`"]
    if report.get("calibration_size") is not None:
        lines.append(_calibration_line(report))
    lines.append("")
    if report.get("chosen"):
        quantizers = chosen_quantizers(report)
        lines += ["## Bit-width per module", "", "| unit | bits | quantizer |", "|---|---|---|"]
        lines += [f"| {u} | {b} | {quantizers.get(u, 'float')} |" for u, b in report["chosen"]["assignment"].items()]
        lines.append("")
    if report.get("sensitivity"):
        bits = sorted({int(b) for row in report["sensitivity"].values() for b in row})
        lines += [f"## Sensitivity ({report.get('damage_measure', 'damage')} vs float, one unit quantized; "
                  "calibration inputs)", ""]
        if report.get("config", {}).get("sensitivity_table") == "needed":
            lines += ["Measured where the search asked for them; `--sensitivity-table full` measures every unit "
                      "and block at every width.", ""]
        lines += ["| unit | " + " | ".join(f"{b} bit" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
        for unit, row in report["sensitivity"].items():
            lines.append(f"| {unit} | " + " | ".join(f"{row[str(b)]['damage']:.2e}" if str(b) in row else "" for b in bits)
                         + " |")
        lines.append("")
    lines += ["## Candidates evaluated", ""]
    lines += [f"Metric: {metric_name} on the validation data.", ""]
    lines += ["Quality loss: the estimate and its upper bound on the search part of the validation examples.", ""]
    lines += ["| # | tier | metric | quality loss | bound | memory % | energy % | feasible |",
              "|---|---|---|---|---|---|---|---|"]
    for c in report["candidates"]:
        bound = c.get("quality_bound")
        lines.append(f"| {c['index']} | {c['tier']} | {c['metric']:.4f} | {c['quality_loss']:.4g} | "
                     f"{'n/a' if bound is None else f'{bound:.4g}'} | "
                     f"{100 * c['memory_fraction']:.2f} | {100 * c['energy_fraction']:.2f} | "
                     f"{'yes' if c['feasible'] else 'no'} |")
    lines.append("")
    lines += ["## Plots", ""] + [f"![{name}]({file})" for name, file in PLOTS.items()] + [""]
    return "\n".join(lines)


def finite_or_null(value, path: str = "", nulled: list[str] | None = None):
    """A copy of ``value`` (JSON-like) with every NaN or infinite float replaced by None; the path of each
    replaced value is appended to ``nulled``. Constraints and weights are refused when not finite before
    any search runs, so what reaches here is a measurement (e.g. the perplexity of a diverged plan)."""
    if isinstance(value, float) and not math.isfinite(value):
        if nulled is not None:
            nulled.append(path)
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item, f"{path}.{key}" if path else str(key), nulled)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item, f"{path}[{i}]", nulled) for i, item in enumerate(value)]
    return value


def report_json(report: dict) -> str:
    """``report`` as strict JSON: NaN and infinities become null and are listed under ``non_finite``."""
    nulled: list[str] = []
    strict = finite_or_null(report, nulled=nulled)
    if nulled:
        strict["non_finite"] = nulled
    return json.dumps(strict, indent=2, allow_nan=False) + "\n"


def write_report(report: dict, folder: Path) -> dict[str, Path]:
    """Write report.json, report.md and the plots that apply into ``folder``; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report_json(report))
    (folder / "report.md").write_text(markdown(report))
    plot_pareto(report, folder / PLOTS["pareto"])
    plot_bitwidths(report, folder / PLOTS["bitwidths"])
    plot_sensitivity(report, folder / PLOTS["sensitivity"])
    names = ["report.json", "report.md", *PLOTS.values()]
    return {name: folder / name for name in names if (folder / name).is_file()}


def search_report(*, label: str, task, constraints, config, notes: Mapping, profile, stack, problem, selection,
                  quality: dict, float_reported, float_latency: float, verified, workers_notes: list[str],
                  seconds: dict) -> dict:
    """The report of one search (``report.json``'s schema): what ran, what was measured, and the chosen
    plan's final figures from the packed model (``verified``; None when no plan met the limits)."""
    hardware, baseline = profile.hardware, profile.baseline
    split = task.test_split if task.test is not None else "validation"
    report = {
        **notes, "model": label, "model_hash": stack.digest, "task": task.name, "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "constraints": constraints.to_dict(baseline.memory_bytes, baseline.energy_pj), "config": config.to_dict(),
        "hardware": hardware.name, "environment": environment(), "calibration_batches": len(task.calibration),
        "calibration_size": sum(inferences_in(item) for item in task.calibration),
        "damage_measure": stack.reference.measure,
        "quantizer_calibration_size": (sum(inferences_in(item) for item in task.quantizer_inputs)
                                       if stack.context is not None else None),
        "hierarchy": profile.hierarchy.to_dict(), "sensitivity": stack.asked_table(),
        "methods": {u: {str(b): m for b, m in by_bits.items()} for u, by_bits in stack.choice.decided().items()},
        "grids": ({u: {str(b): g for b, g in by_bits.items()} for u, by_bits in stack.choice.decided_grids().items()}
                  if len(config.grids) > 1 else None),
        "candidates": [c.to_dict() for c in problem.candidates],
        "evaluations": {"total": len(problem.candidates), "new": sum(not c.resumed for c in problem.candidates)},
        "method_checks": stack.check.checked,
        "dropped_lines": stack.dropped,
        "workers": stack.executor.workers,
        "workers_note": "; ".join(workers_notes) or None,  # asked for more workers than there are CPUs/GPUs
        "block_cache": stack.block_cache_report(),
        "baseline": {"metric_validation": baseline.metric, f"metric_{split}": float_reported.metric,
                     "memory_bytes": baseline.memory_bytes, "energy_pj": baseline.energy_pj,
                     "power_mw": power_mw(baseline.energy_pj, hardware), "latency_s": float_latency,
                     "modelled_latency_s": baseline.latency_s},
        "quality": quality,
    }
    if verified is None:
        report.update(status="infeasible", closest=[c.to_dict() for c in problem.closest()], final=None, chosen=None)
    else:
        # "feasible": a plan met the constraints on the validation data; the headline and
        # quality.test_within_limit say whether the limit also held on the test split
        report.update(status="feasible", chosen=selection.chosen.to_dict(), final=verified.final)
    report["headline"] = headline(report)
    report["seconds"] = seconds
    return report
