"""What the data-driven quantizer methods are given beyond a unit's weight: its calibration Hessian and
the GPTQ options. Its own module, below the methods and ``apply``, so both can name it."""
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
class QuantContext:
    """What the data-driven methods need beyond a unit's weight: its calibration Hessian (by unit
    name) and the GPTQ options."""
    hessians: Mapping[str, UnitHessian] = field(default_factory=dict)
    gptq: GptqOptions = GptqOptions()

    def hessian(self, name: str) -> UnitHessian | None:
        return self.hessians.get(name)
