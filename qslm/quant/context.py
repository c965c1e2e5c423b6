"""What the data-driven quantizer methods are given beyond a unit's weight: its calibration Hessian and
the options of GPTQ and learned rounding. Its own module, below the methods and ``apply``, so both can name it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import QslmError
from .unit_inputs import UnitHessian


@dataclass(frozen=True)
class GptqOptions:
    """damping: fraction of mean(diag(H)) added to the diagonal (keeps H invertible and the updates
    tame); act_order: quantize columns by descending diag(H); block_size: columns per lazy batch."""
    damping: float = 0.01
    act_order: bool = False
    block_size: int = 128

    def __post_init__(self):
        if not 0.0 < float(self.damping) < 1.0:
            raise QslmError(f"GPTQ damping must be in (0, 1) (a fraction of the mean Hessian diagonal), "
                            f"got {self.damping!r}")
        if not isinstance(self.act_order, bool):
            raise QslmError(f"GPTQ act_order must be true or false, got {self.act_order!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise QslmError(f"GPTQ block_size must be a positive integer, got {self.block_size!r}")


@dataclass(frozen=True)
class LearnedOptions:
    """Learned rounding (``qslm.quant.methods.learned``): ``iterations`` Adam steps at ``learning_rate`` on
    the rounding variables; for the first ``warmup`` fraction of them the output error alone, then plus
    ``regularisation`` times the term that pushes each variable to 0 or 1, its exponent annealed from
    ``beta_start`` to ``beta_end`` (AdaRound's schedule). The output error is taken relative to rtn's, so
    ``regularisation`` is on that scale; the defaults were chosen on the bundled models' units at 2 and 3
    bits (docs/benchmarks.md, "Learned rounding")."""
    iterations: int = 400
    learning_rate: float = 0.1
    regularisation: float = 10.0
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0

    def __post_init__(self):
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise QslmError(f"learned rounding iterations must be a positive integer, got {self.iterations!r}")
        for name in ("learning_rate", "regularisation", "beta_start", "beta_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise QslmError(f"learned rounding {name} must be a positive number, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup < 1:
            raise QslmError(f"learned rounding warmup must be a fraction in [0, 1), got {self.warmup!r}")


@dataclass(frozen=True)
class QuantContext:
    """What the data-driven methods need beyond a unit's weight: its calibration Hessian (by unit
    name), and the options of GPTQ and of learned rounding."""
    hessians: Mapping[str, UnitHessian] = field(default_factory=dict)
    gptq: GptqOptions = GptqOptions()
    learned: LearnedOptions = LearnedOptions()

    def hessian(self, name: str) -> UnitHessian | None:
        return self.hessians.get(name)
