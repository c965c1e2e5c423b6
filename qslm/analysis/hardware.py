"""Hardware profiles: what one operation costs on a target, in energy and in time, read from a JSON
file (``qslm/hardware/*.json``: the bundled ``default_45nm`` and ``neuromorphic``, or a user's file).

    profile = load_hardware_profile("neuromorphic")
    profile.mac_pj(4), profile.ac_pj(None), profile.read_pj(bits_moved), profile.mac_rate(8)

How energy and latency per inference are modelled from these constants: ``qslm.analysis.energy``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import QslmError
from ..jsonfile import read_json_file

HARDWARE_DIR = Path(__file__).resolve().parent.parent / "hardware"
DEFAULT_HARDWARE = "default_45nm"
MAX_BITS = 32


@dataclass(frozen=True)
class ScaledOp:
    """Energy of an integer op versus bit-width, through two anchors (bits, pJ) and an exponent."""
    anchors: tuple[tuple[int, float], tuple[int, float]]
    exponent: float

    def pj(self, bits: int) -> float:
        (b1, e1), (b2, e2) = self.anchors
        p = self.exponent
        return e1 + (e2 - e1) * (bits ** p - b1 ** p) / (b2 ** p - b1 ** p)


@dataclass(frozen=True)
class OpRates:
    macs_per_s: float
    acs_per_s: float


@dataclass(frozen=True)
class LatencyModel:
    """Operation rates of float units and of each integer bit-width class, and the weight bandwidth."""
    float_rates: OpRates
    integer_rates: tuple[tuple[int, OpRates], ...]  # (widest width of the class, rates), narrowest first
    weight_bytes_per_s: float

    def rates(self, width: float | None) -> OpRates:
        """The rates of float ops (None) or of the narrowest integer class holding ``width`` bits."""
        if width is None:
            return self.float_rates
        return next(rates for bits, rates in self.integer_rates if width <= bits)  # classes cover MAX_BITS


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    float_bits: int
    float_mac_pj: float
    float_ac_pj: float
    integer_add: ScaledOp
    integer_mult: ScaledOp
    accumulator_bits: int
    activation_bits: int
    access_pj: float
    access_bits: int
    inference_rate_hz: float
    latency: LatencyModel
    source: str = ""

    def add_pj(self, bits: int) -> float:
        return self.integer_add.pj(bits)

    def mult_pj(self, bits: float) -> float:
        return self.integer_mult.pj(bits)

    def ac_pj(self, bits: int | None) -> float:
        """One accumulate with ``bits``-bit integer weights (None: float)."""
        if bits is None:
            return self.float_ac_pj
        return self.add_pj(max(bits, self.accumulator_bits))

    def mac_pj(self, bits: int | None) -> float:
        """One multiply-accumulate with ``bits``-bit integer weights (None: float)."""
        if bits is None:
            return self.float_mac_pj
        a = self.activation_bits
        return self.mult_pj((bits * a) ** 0.5) + self.add_pj(max(bits + a, self.accumulator_bits))

    def read_pj(self, bits_moved: float) -> float:
        return bits_moved / self.access_bits * self.access_pj

    def mac_rate(self, bits: int | None) -> float:
        """MACs per second with ``bits``-bit integer weights (None: float), at the energy model's width."""
        return self.latency.rates(None if bits is None else (bits * self.activation_bits) ** 0.5).macs_per_s

    def ac_rate(self, bits: int | None) -> float:
        """ACs per second with ``bits``-bit integer weights (None: float): the accumulator's width."""
        return self.latency.rates(None if bits is None else max(bits, self.accumulator_bits)).acs_per_s


def list_hardware_profiles() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.json"))


def _require(raw: dict, dotted: str, source: str, kind=(int, float)):
    value = raw
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise QslmError(f"hardware profile {source}: missing key {dotted!r}")
        value = value[part]
    if kind in (str, dict):
        if not isinstance(value, kind):
            raise QslmError(f"hardware profile {source}: {dotted} must be a {'string' if kind is str else 'JSON object'}"
                            f", got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise QslmError(f"hardware profile {source}: {dotted} must be a positive number, got {value!r}")
    return value


def _scaled_op(raw: dict, key: str, source: str) -> ScaledOp:
    anchors = _require(raw, f"{key}.anchors_pj", source, dict)
    try:
        points = sorted((int(bits), float(pj)) for bits, pj in anchors.items())
    except (TypeError, ValueError):
        raise QslmError(f"hardware profile {source}: {key}.anchors_pj must map bit-widths to pJ, "
                        f"got {anchors!r}") from None
    if len(points) != 2 or points[0][0] == points[1][0] or min(b for b, _ in points) < 1:
        raise QslmError(f"hardware profile {source}: {key}.anchors_pj needs exactly two distinct bit-widths "
                        f"(e.g. {{\"8\": 0.03, \"32\": 0.1}}), got {anchors!r}")
    op = ScaledOp((points[0], points[1]), float(_require(raw, f"{key}.exponent", source)))
    energies = [op.pj(b) for b in range(1, MAX_BITS + 1)]
    if energies[0] <= 0 or any(b < a for a, b in zip(energies, energies[1:])):
        raise QslmError(f"hardware profile {source}: {key} must give positive energies that grow with "
                        f"bit-width over 1..{MAX_BITS} bits, got {energies[0]:.4g} pJ at 1 bit")
    return op


def _op_rates(raw: dict, key: str, source: str) -> OpRates:
    return OpRates(float(_require(raw, f"{key}.macs_per_s", source)), float(_require(raw, f"{key}.acs_per_s", source)))


def _latency_model(raw: dict, source: str) -> LatencyModel:
    classes = _require(raw, "latency.integer", source, dict)
    try:
        widths = sorted((int(bits), bits) for bits in classes)
    except (TypeError, ValueError):
        raise QslmError(f"hardware profile {source}: latency.integer must map bit-widths to rates, "
                        f"got keys {list(classes)}") from None
    if not widths or widths[0][0] < 1 or widths[-1][0] < MAX_BITS:
        raise QslmError(f"hardware profile {source}: latency.integer needs bit-width classes up to {MAX_BITS} "
                        f"bits (e.g. \"8\", \"16\", \"32\"), got {list(classes)}")
    integer = tuple((bits, _op_rates(raw, f"latency.integer.{key}", source)) for bits, key in widths)
    return LatencyModel(_op_rates(raw, "latency.float", source), integer,
                        float(_require(raw, "latency.weight_memory_bytes_per_s", source)))


def hardware_profile_from_dict(raw: dict, source: str = "<dict>") -> HardwareProfile:
    if not isinstance(raw, dict):
        raise QslmError(f"hardware profile {source}: expected a JSON object, got {type(raw).__name__}")
    return HardwareProfile(
        name=_require(raw, "name", source, str),
        description=_require(raw, "description", source, str),
        float_bits=int(_require(raw, "float.bits", source, int)),
        float_mac_pj=float(_require(raw, "float.mac_pj", source)),
        float_ac_pj=float(_require(raw, "float.ac_pj", source)),
        integer_add=_scaled_op(raw, "integer_add", source),
        integer_mult=_scaled_op(raw, "integer_mult", source),
        accumulator_bits=int(_require(raw, "accumulator_bits", source, int)),
        activation_bits=int(_require(raw, "activation_bits", source, int)),
        access_pj=float(_require(raw, "weight_memory.pj_per_access", source)),
        access_bits=int(_require(raw, "weight_memory.bits_per_access", source, int)),
        inference_rate_hz=float(_require(raw, "inference_rate_hz", source)),
        latency=_latency_model(raw, source),
        source=source)


def load_hardware_profile(name_or_path: str | os.PathLike | HardwareProfile = DEFAULT_HARDWARE) -> HardwareProfile:
    """A bundled profile by name (``default_45nm``, ``neuromorphic``) or a JSON file path."""
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        bundled = HARDWARE_DIR / f"{name_or_path}.json"
        if not bundled.is_file():
            raise QslmError(f"hardware profile {str(name_or_path)!r} is neither a JSON file nor a bundled profile "
                            f"(bundled: {', '.join(list_hardware_profiles())})")
        path = bundled
    raw = read_json_file(path)
    return hardware_profile_from_dict(raw, str(path))
