"""Constraints and the multi-objective cost that every search strategy shares.

Quality is measured against the float model on the same data:
  * higher-is-better metrics (accuracy, in percent for the built-in tasks): absolute drop in the
    metric's own units (``max_drop``),
  * perplexity tasks: relative increase (``max_ppl_increase``, 0.03 = +3%).
Memory is exact bytes (codes + scales + zero-points + float tensors); ``max_memory`` is either a
fraction of FP32 (<= 1) or a byte count (> 1). Energy is per inference, ``max_energy`` likewise a
fraction of FP32 or picojoules.

The objective is a weighted sum of normalised terms, lower is better:
  quality term = quality loss / its constraint (1.0 = at the limit; 0 when no constraint is set,
                 the loss is divided by 1 point / 1% instead),
  memory, energy, latency terms = fraction of the FP32 model's value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import QslmError

OBJECTIVE_TERMS = ("quality", "memory", "energy", "latency")
DEFAULT_WEIGHTS = {"quality": 1.0, "memory": 1.0, "energy": 0.5, "latency": 0.0}


@dataclass(frozen=True)
class Constraints:
    max_drop: float | None = None  # accuracy points
    max_ppl_increase: float | None = None  # relative
    max_memory: float | None = None  # fraction of FP32 if <= 1, else bytes
    max_energy: float | None = None  # fraction of FP32 if <= 1, else pJ

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is not None and value < 0:
                raise QslmError(f"constraint {name} must be >= 0, got {value}")
        for name in ("max_memory", "max_energy"):  # nothing runs in 0 bytes or 0 pJ
            if getattr(self, name) == 0:
                raise QslmError(f"constraint {name} must be > 0")

    def memory_limit_bytes(self, fp32_bytes: int) -> float | None:
        if self.max_memory is None:
            return None
        return self.max_memory * fp32_bytes if self.max_memory <= 1 else self.max_memory

    def energy_limit_pj(self, fp32_pj: float) -> float | None:
        if self.max_energy is None:
            return None
        return self.max_energy * fp32_pj if self.max_energy <= 1 else self.max_energy


def parse_weights(text: str | dict | None) -> dict[str, float]:
    """``quality=1,memory=1,energy=0.5,latency=0`` -> dict; unnamed terms keep their defaults."""
    weights = dict(DEFAULT_WEIGHTS)
    if text is None:
        return weights
    items = text.items() if isinstance(text, dict) else (
        part.split("=", 1) if "=" in part else (part, None) for part in text.split(",") if part.strip())
    for key, value in items:
        key = key.strip()
        if key not in OBJECTIVE_TERMS:
            raise QslmError(f"unknown objective weight {key!r}; expected some of {', '.join(OBJECTIVE_TERMS)}")
        try:
            weights[key] = float(value)
        except (TypeError, ValueError):
            raise QslmError(f"objective weight {key}={value!r} is not a number") from None
        if weights[key] < 0:
            raise QslmError(f"objective weight {key} must be >= 0, got {weights[key]}")
    return weights


@dataclass
class Baseline:
    """The float model's figures every candidate is compared with."""
    metric: float  # the task's metric of the float model
    higher_is_better: bool
    memory_bytes: int
    energy_pj: float
    latency_s: float


@dataclass
class Score:
    quality_loss: float  # accuracy points dropped, or relative perplexity increase
    memory_fraction: float
    energy_fraction: float
    latency_fraction: float
    feasible: bool
    violations: list[str] = field(default_factory=list)
    objective: float = 0.0


def quality_loss(metric: float, baseline: Baseline) -> float:
    """Higher-is-better metrics lose absolutely, in their own units; lower-is-better ones relatively."""
    if baseline.higher_is_better:
        return baseline.metric - metric
    return metric / baseline.metric - 1.0


def score(metric: float, memory_bytes: int, energy_pj: float, latency_s: float, baseline: Baseline,
          constraints: Constraints, weights: dict[str, float]) -> Score:
    loss = quality_loss(metric, baseline)
    violations = []
    quality_limit = constraints.max_drop if baseline.higher_is_better else constraints.max_ppl_increase
    if quality_limit is not None and loss > quality_limit + 1e-12:
        unit = "points" if baseline.higher_is_better else "relative"
        violations.append(f"quality loss {loss:.4g} > {quality_limit:g} {unit}")
    memory_limit = constraints.memory_limit_bytes(baseline.memory_bytes)
    if memory_limit is not None and memory_bytes > memory_limit:
        violations.append(f"memory {memory_bytes} B > {memory_limit:.0f} B")
    energy_limit = constraints.energy_limit_pj(baseline.energy_pj)
    if energy_limit is not None and energy_pj > energy_limit:
        violations.append(f"energy {energy_pj:.4g} pJ > {energy_limit:.4g} pJ")
    default_scale = 1.0 if baseline.higher_is_better else 0.01
    quality_term = max(loss, 0.0) / (quality_limit or default_scale)
    result = Score(loss, memory_bytes / baseline.memory_bytes, energy_pj / baseline.energy_pj,
                   latency_s / baseline.latency_s if baseline.latency_s else 1.0, not violations, violations)
    result.objective = (weights["quality"] * quality_term + weights["memory"] * result.memory_fraction
                        + weights["energy"] * result.energy_fraction + weights["latency"] * result.latency_fraction)
    return result
