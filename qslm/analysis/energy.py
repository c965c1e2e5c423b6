"""Energy and latency of a (mixed-precision) model per inference, from its operation counts
(``qslm.analysis.ops``) and a hardware profile (``qslm.analysis.hardware``).

    ops = measure_op_counts(model, run_calibration)
    energy = energy_per_inference(ops, {"blocks.0.att.key": 4, ...}, load_hardware_profile("default_45nm"))
    energy.total_pj, energy.compute_pj, energy.memory_pj, energy.units["blocks.0.att.key"]

**Energy** per inference (all constants in a hardware profile JSON, ``qslm/hardware/*.json``):

* unit in float (bits None):   ``E = MACs x float.mac_pj + ACs x float.ac_pj``
* unit with b-bit integer weights, with ``add(b)`` and ``mult(b)`` interpolated between two anchors
  ``E(b) = E1 + (E2 - E1) (b^p - b1^p) / (b2^p - b1^p)`` (add p = 1, mult p = 2):
  ``E_AC(b) = add(max(b, accumulator_bits))`` (the weight is added into a wide accumulator /
  membrane) and ``E_MAC(b) = mult(sqrt(b x a)) + add(max(b + a, accumulator_bits))`` with ``a`` the
  profile's ``activation_bits``: a b x a-bit multiply (multiplier energy grows with the product of the
  operand widths, which the quadratic interpolation at width sqrt(b x a) gives), then the wide add.
  qslm quantizes weights, not activations, so the bundled profiles set ``activation_bits`` to 32:
  dense-input units save on the weight operand only.
* weight memory: ``bits moved / bits_per_access x pj_per_access`` with ``bits moved = weight reads x
  b`` (32 for float), or, when the exact stored bytes of a unit are given (codes + scales +
  zero-points), ``weight reads x stored bits per weight``.

Power (for paper-style tables) = energy per inference x a fixed inference rate (``inference_rate_hz``
of the profile): ``power_mw = pJ x 1e-12 x Hz x 1e3``.

**Latency** per inference, modelled from the same op counts (the profile's ``latency`` section), so it
is the same on every run and machine; ``measure_latency`` times the real model, for reports only:

* operation rates: ``latency.float`` gives ``macs_per_s`` / ``acs_per_s`` for float units;
  ``latency.integer`` maps bit-width classes (the widest width each class handles, e.g. 8, 16, 32)
  to the same two rates. An integer op runs in the narrowest class at least as wide as its operands,
  the widths the energy model uses: an AC at ``max(b, accumulator_bits)``, a MAC at ``sqrt(b x a)``.
* per unit: ``compute_s = MACs / macs_per_s + ACs / acs_per_s`` and ``memory_s = weight bits moved /
  8 / latency.weight_memory_bytes_per_s`` (bits moved as for energy, stored bytes included);
  compute and weight traffic overlap, so a unit takes ``max(compute_s, memory_s)`` (a roofline).
* units run one after another: ``latency = sum over units``.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import QslmError
from .hardware import DEFAULT_HARDWARE, MAX_BITS, HardwareProfile, load_hardware_profile
from .ops import OpCounts, UnitOps


@dataclass
class UnitEnergy:
    bits: int | None
    compute_pj: float
    memory_pj: float

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.memory_pj


@dataclass
class EnergyBreakdown:
    profile: str
    units: dict[str, UnitEnergy] = field(default_factory=dict)

    @property
    def compute_pj(self) -> float:
        return sum(u.compute_pj for u in self.units.values())

    @property
    def memory_pj(self) -> float:
        return sum(u.memory_pj for u in self.units.values())

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.memory_pj

    def by_group(self, groups: Mapping[str, list[str]]) -> dict[str, float]:
        """Total pJ per group (e.g. ``Hierarchy.groups()``: blocks and top-level units)."""
        return {group: sum(self.units[u].total_pj for u in members if u in self.units)
                for group, members in groups.items()}

    def to_dict(self) -> dict:
        return {"profile": self.profile, "total_pj": self.total_pj, "compute_pj": self.compute_pj,
                "memory_pj": self.memory_pj,
                "units": {name: {"bits": u.bits, "compute_pj": u.compute_pj, "memory_pj": u.memory_pj,
                                 "total_pj": u.total_pj} for name, u in self.units.items()}}


def _check_bits(unit: str, bits) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise QslmError(f"bit-width of {unit!r} must be an integer in 1..{MAX_BITS} or None (float), got {bits!r}")
    return bits


def _check_units(op_counts: OpCounts, unit_bits: Mapping, unit_bytes: Mapping) -> None:
    for label, names in (("bit-width", unit_bits), ("stored bytes", unit_bytes)):
        unknown = sorted(set(names) - set(op_counts.units))
        if unknown:
            raise QslmError(f"{label} given for unknown units {unknown}; units are {list(op_counts.units)}")


def _bits_moved(ops: UnitOps, bits: int | None, stored_bytes: int | None, profile: HardwareProfile) -> float:
    """Weight bits read per inference: exact stored bits per weight when known, else the bit-width."""
    if bits is not None and stored_bytes is not None:
        bits_per_weight = 8 * stored_bytes / ops.weights
    else:
        bits_per_weight = profile.float_bits if bits is None else bits
    return ops.weight_reads * bits_per_weight


def energy_per_inference(op_counts: OpCounts, unit_bits: Mapping[str, int | None] | None = None,
                         profile: HardwareProfile | str | os.PathLike = DEFAULT_HARDWARE,
                         unit_bytes: Mapping[str, int] | None = None) -> EnergyBreakdown:
    """Energy of one inference (pJ) when each unit runs at ``unit_bits[unit]`` bits (missing or None:
    float). ``unit_bytes`` (optional) are the exact stored bytes of quantized units, scales included;
    weight traffic then uses them instead of ``weights x bits``."""
    profile = load_hardware_profile(profile)
    unit_bits = dict(unit_bits or {})
    unit_bytes = dict(unit_bytes or {})
    _check_units(op_counts, unit_bits, unit_bytes)
    breakdown = EnergyBreakdown(profile.name)
    for name, ops in op_counts.units.items():
        bits = _check_bits(name, unit_bits.get(name))
        compute = ops.macs * profile.mac_pj(bits) + ops.acs * profile.ac_pj(bits)
        memory = profile.read_pj(_bits_moved(ops, bits, unit_bytes.get(name), profile))
        breakdown.units[name] = UnitEnergy(bits, compute, memory)
    return breakdown


def power_mw(energy_pj: float, rate_hz: float | HardwareProfile) -> float:
    """Average power (mW) at a fixed inference rate (Hz, or a profile's ``inference_rate_hz``)."""
    if isinstance(rate_hz, HardwareProfile):
        rate_hz = rate_hz.inference_rate_hz
    return energy_pj * 1e-12 * rate_hz * 1e3


def latency_per_inference(op_counts: OpCounts, unit_bits: Mapping[str, int | None] | None = None,
                          profile: HardwareProfile | str | os.PathLike = DEFAULT_HARDWARE,
                          unit_bytes: Mapping[str, int] | None = None) -> float:
    """Modelled seconds of one inference (see the module docstring), arguments as ``energy_per_inference``.
    Deterministic, unlike ``measure_latency``: the search ranks candidates by this one."""
    profile = load_hardware_profile(profile)
    unit_bits = dict(unit_bits or {})
    unit_bytes = dict(unit_bytes or {})
    _check_units(op_counts, unit_bits, unit_bytes)
    total = 0.0
    for name, ops in op_counts.units.items():
        bits = _check_bits(name, unit_bits.get(name))
        compute = ops.macs / profile.mac_rate(bits) + ops.acs / profile.ac_rate(bits)
        memory = _bits_moved(ops, bits, unit_bytes.get(name), profile) / 8 / profile.latency.weight_bytes_per_s
        total += max(compute, memory)
    return total


def measure_latency(model: nn.Module, run_fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``run_fn()`` over ``repeats`` runs after ``warmup`` unmeasured ones."""
    if repeats < 1 or warmup < 0:
        raise QslmError(f"latency needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = next(model.parameters(), torch.empty(0)).device

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        run_fn()
    times = []
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        run_fn()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
