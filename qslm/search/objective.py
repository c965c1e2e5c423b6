"""Constraints and the multi-objective cost that every search strategy shares.

Quality is measured against the float model on the same data, example by example where the task gives
per-example scores, and judged by the upper bound of the loss at ``confidence`` (``qslm.search.confidence``):
  * higher-is-better metrics: absolute drop in the metric's own units (``max_drop``; the built-in
    classification tasks report accuracy in percent, so 1.0 is one point),
  * lower-is-better metrics (perplexity, loss): relative increase (``max_relative_increase``,
    0.03 = +3%).
Memory is exact bytes (codes + scales + zero-points + float tensors) and energy is pJ per inference;
``max_memory`` and ``max_energy`` are a fraction of FP32, a percentage or an amount with a unit
(``qslm.search.limits``). Every constraint and weight must be a finite number.

The objective is a weighted sum of normalised terms, lower is better:
  quality term = quality loss / its constraint (1.0 = at the limit; 0 when no constraint is set,
                 the loss is divided by 1 point / 1% instead),
  memory, energy, latency terms = fraction of the FP32 model's value. Latency is the modelled one
  (``qslm.analysis.energy.latency_per_inference``), never a wall-clock measurement, so the same
  measurements always rank the candidates the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import QslmError
from .confidence import DEFAULT_CONFIDENCE, Bound, check_confidence
from .limits import Limit, parse_energy_limit, parse_memory_limit, parse_quality_limit

OBJECTIVE_TERMS = ("quality", "memory", "energy", "latency")
DEFAULT_WEIGHTS = {"quality": 1.0, "memory": 1.0, "energy": 0.5, "latency": 0.0}


@dataclass(frozen=True)
class Constraints:
    """``max_memory`` / ``max_energy`` take a float fraction of FP32, a string (``"12.5%"``, ``"3MB"``,
    ``"250nJ"``) or a parsed ``Limit``; they are stored as a ``Limit``, which keeps what was asked."""
    max_drop: float | None = None  # metric units (accuracy points), higher-is-better metrics
    max_relative_increase: float | None = None  # relative, lower-is-better metrics
    max_memory: Limit | float | str | None = None
    max_energy: Limit | float | str | None = None
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self):
        # frozen: normalised once, here, so every reader sees numbers and Limits
        for name in ("max_drop", "max_relative_increase"):
            object.__setattr__(self, name, parse_quality_limit(getattr(self, name), f"constraint {name}"))
        object.__setattr__(self, "max_memory", parse_memory_limit(self.max_memory, "constraint max_memory"))
        object.__setattr__(self, "max_energy", parse_energy_limit(self.max_energy, "constraint max_energy"))
        object.__setattr__(self, "confidence", check_confidence(self.confidence, "constraint confidence"))

    def quality_limit(self, higher_is_better: bool) -> float | None:
        return self.max_drop if higher_is_better else self.max_relative_increase

    def memory_limit_bytes(self, fp32_bytes: int) -> float | None:
        return None if self.max_memory is None else self.max_memory.resolve(fp32_bytes)

    def energy_limit_pj(self, fp32_pj: float) -> float | None:
        return None if self.max_energy is None else self.max_energy.resolve(fp32_pj)

    def to_dict(self, fp32_bytes: int | None = None, fp32_pj: float | None = None) -> dict:
        """What was asked (JSON-ready), and with the FP32 figures, the limits in bytes and pJ."""
        asked = {"max_drop": self.max_drop, "max_relative_increase": self.max_relative_increase,
                 "max_memory": None if self.max_memory is None else self.max_memory.asked,
                 "max_energy": None if self.max_energy is None else self.max_energy.asked,
                 "confidence": self.confidence}
        if fp32_bytes is not None:
            asked["memory_limit_bytes"] = self.memory_limit_bytes(fp32_bytes)
        if fp32_pj is not None:
            asked["energy_limit_pj"] = self.energy_limit_pj(fp32_pj)
        return asked


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
        if not math.isfinite(weights[key]):
            raise QslmError(f"objective weight {key} must be a finite number, got {value!r}")
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
    latency_s: float  # modelled per inference (the objective's), not measured


@dataclass
class Score:
    quality_loss: float  # accuracy points dropped, or relative perplexity increase (the search part's estimate)
    memory_fraction: float
    energy_fraction: float
    latency_fraction: float
    feasible: bool
    violations: list[str] = field(default_factory=list)
    objective: float = 0.0
    quality_bound: float | None = None  # its upper bound at the constraints' confidence (None: one number)

    @property
    def judged_loss(self) -> float:
        """What the quality limit is checked against: the bound, or the estimate without one."""
        return self.quality_loss if self.quality_bound is None else self.quality_bound


def score(quality: Bound, memory_bytes: int, energy_pj: float, latency_s: float, baseline: Baseline,
          constraints: Constraints, weights: dict[str, float]) -> Score:
    """``quality``: the plan's loss against the float model (``QualityJudge.search``)."""
    loss = quality.estimate
    violations = []
    quality_limit = constraints.quality_limit(baseline.higher_is_better)
    if quality_limit is not None and quality.judged > quality_limit + 1e-12:
        unit = "points" if baseline.higher_is_better else "relative"
        what = (f"quality loss bound {quality.upper:.4g} (at {constraints.confidence:g} confidence)"
                if quality.bounded else f"quality loss {loss:.4g}")
        violations.append(f"{what} > {quality_limit:g} {unit}")
    memory_limit = constraints.memory_limit_bytes(baseline.memory_bytes)
    if memory_limit is not None and memory_bytes > memory_limit:
        violations.append(f"memory {memory_bytes} B > {memory_limit:.0f} B")
    energy_limit = constraints.energy_limit_pj(baseline.energy_pj)
    if energy_limit is not None and energy_pj > energy_limit:
        violations.append(f"energy {energy_pj:.4g} pJ > {energy_limit:.4g} pJ")
    default_scale = 1.0 if baseline.higher_is_better else 0.01
    quality_term = max(loss, 0.0) / (quality_limit or default_scale)
    memory, energy = memory_bytes / baseline.memory_bytes, energy_pj / baseline.energy_pj
    latency = latency_s / baseline.latency_s if baseline.latency_s else 1.0
    objective = (weights["quality"] * quality_term + weights["memory"] * memory + weights["energy"] * energy
                 + weights["latency"] * latency)
    return Score(loss, memory, energy, latency, not violations, violations, objective, quality_bound=quality.upper)
