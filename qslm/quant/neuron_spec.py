"""Fixed-point neuron state: the spec of a LIF neuron's membrane and threshold in a plan, and the
quantizer it sets on the neuron."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import QslmError
from .quantizer import spec_from_dict

NEURON_BITS = range(2, 25)


@dataclass(frozen=True)
class NeuronSpec:
    """Fixed-point LIF state (membrane potential and threshold): signed ``bits``-bit integers over
    ``[-range_multiple * v_th, range_multiple * v_th)``, i.e. step ``range_multiple * v_th / 2**(bits-1)``.

    With the default ``range_multiple = 2`` the threshold is exactly representable (it is
    ``2**(bits-2)`` steps) and the potential keeps one bit of head-room above it: a value that
    saturates at the top fires anyway, and the hard reset brings it back to 0.
    """
    bits: int = 8
    range_multiple: float = 2.0

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits not in NEURON_BITS:
            raise QslmError(f"neuron state bits must be an integer in [{NEURON_BITS.start}, "
                            f"{NEURON_BITS.stop - 1}], got {self.bits!r}")
        if (isinstance(self.range_multiple, bool) or not isinstance(self.range_multiple, (int, float))
                or not 0 < self.range_multiple < math.inf):
            raise QslmError(f"neuron range_multiple must be a positive finite number, got {self.range_multiple!r}")

    def describe(self) -> str:
        return f"fixed{self.bits} range +-{self.range_multiple:g}*v_th"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "neuron spec") -> "NeuronSpec":
        return spec_from_dict(cls, raw, where)

    def quantizer(self, v_threshold: float) -> "FixedPoint":
        step = self.range_multiple * abs(float(v_threshold)) / 2 ** (self.bits - 1)
        return FixedPoint(self.bits, step)


class FixedPoint:
    """Signed fixed point: ``clamp(round(v / step), -2**(bits-1), 2**(bits-1) - 1) * step``.
    A plain callable, so it can be set as ``LIF.state_quantizer``."""

    def __init__(self, bits: int, step: float):
        if not step > 0:
            raise QslmError(f"fixed-point step must be positive, got {step}")
        self.bits, self.step = bits, step
        self.low, self.high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(v / self.step), self.low, self.high) * self.step

    def __repr__(self) -> str:
        return f"FixedPoint(bits={self.bits}, step={self.step:g})"
