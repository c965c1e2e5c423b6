"""Energy and latency of a (mixed-precision) model, counting what the code really executes.

    ops = measure_op_counts(model, run_calibration)        # run_calibration() returns #sequences it ran
    energy = energy_per_inference(ops, {"blocks.0.att.key": 4, ...}, load_hardware_profile("default_45nm"))
    energy.total_pj, energy.compute_pj, energy.memory_pj, energy.units["blocks.0.att.key"]

**Operation counts** come from forward hooks on every quantizable unit (as ``qslm.quant.units``
defines them, packed stand-ins included) while the model runs on calibration data; they are averaged
per inference, **one inference being one input sequence** (the number ``run_fn`` returns):

* Linear / Conv whose input is binary on that call (spikes: every value in {0, 1}): accumulates
  ``ACs = dense MACs x nonzero fraction of the input``, which for a Linear is exactly
  ``nonzero inputs x out_features`` (fan-out); for a Conv it is the fan-out averaged over positions.
* Otherwise dense ``MACs = output elements x fan-in``; for a Linear ``input vectors x in x out``.
* Embedding (any unit called with integer indices): no arithmetic; it reads the rows it looks up
  (``lookups x embedding_dim`` weights).
* Weight reads of a Linear / Conv: every weight once per model forward (the weights of one forward
  stay in the compute array while it runs over all time steps; deployment batch size 1), so
  ``calls per forward x weight count`` per inference.

Run the calibration at batch size 1 for figures exact per sequence: a batched run also counts its
padding, and an index tensor shared by the batch (positions) is counted once per batch.

Bias additions, norms, neuron updates and the spike-matrix products of spiking attention are not
counted: they hold no quantizable weights, so no bit-width choice changes them.

Counts are measured once, on the float model: weight bit-widths change the cost of each operation,
not how many there are. Quantization can shift spike rates a little (fewer or more nonzero inputs);
to account for that, call ``measure_op_counts`` again on the quantized model.

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

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import QslmError
from ..jsonfile import read_json_file
from ..quant.units import matmul_ops, quantizable_units, unit_tensor, weight_view_ops
from .hierarchy import is_binary

HARDWARE_DIR = Path(__file__).resolve().parent.parent / "hardware"
DEFAULT_HARDWARE = "default_45nm"
MAX_BITS = 32


# ---------------------------------------------------------------- hardware profiles

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


# ---------------------------------------------------------------- operation counts

@dataclass
class UnitOps:
    """What one unit executes per inference (averaged over the calibration run)."""
    name: str
    kind: str  # module class name
    weights: int  # weight elements
    fan_in: int  # weights per output element (Linear: in_features; Embedding: embedding_dim)
    calls: float = 0.0  # per model forward
    input_elements: float = 0.0  # float inputs only
    nonzero_inputs: float = 0.0
    macs: float = 0.0
    acs: float = 0.0
    lookups: float = 0.0  # rows looked up (integer inputs)
    weight_reads: float = 0.0  # weight elements read
    spike_calls: float = 0.0  # calls (per model forward) whose input was binary

    @property
    def input(self) -> str:
        """'spikes', 'dense', 'mixed' (both seen), 'ids' (embedding lookups) or 'unused'."""
        if self.lookups:
            return "ids"
        if not self.calls:
            return "unused"
        if self.spike_calls == self.calls:
            return "spikes"
        return "dense" if not self.spike_calls else "mixed"

    @property
    def input_rate(self) -> float | None:
        """Fraction of nonzero input elements (the firing rate when the input is spikes)."""
        if not self.input_elements:
            return None
        return self.nonzero_inputs / self.input_elements

    def to_dict(self) -> dict:
        return {**asdict(self), "input": self.input, "input_rate": self.input_rate}


@dataclass
class OpCounts:
    inferences: int
    forwards: int  # model forward calls during the measurement
    units: dict[str, UnitOps]

    @property
    def macs(self) -> float:
        return sum(u.macs for u in self.units.values())

    @property
    def acs(self) -> float:
        return sum(u.acs for u in self.units.values())

    def to_dict(self) -> dict:
        return {"inferences": self.inferences, "forwards": self.forwards, "macs": self.macs, "acs": self.acs,
                "units": {name: u.to_dict() for name, u in self.units.items()}}

    @classmethod
    def from_dict(cls, raw: dict) -> "OpCounts":
        fields = set(UnitOps.__dataclass_fields__)
        units = {name: UnitOps(**{k: v for k, v in u.items() if k in fields}) for name, u in raw["units"].items()}
        return cls(int(raw["inferences"]), int(raw["forwards"]), units)


class OpCounter(TorchFunctionMode):
    """Context manager: count the operations of every unit of ``model`` while it runs. Call
    ``result(inferences)`` after the block for the per-inference ``OpCounts``.

    Every torch function call is seen (a ``TorchFunctionMode``), so a weight counts wherever the code
    uses it: an ``nn.Linear``, a bare parameter through ``F.linear``, ``@``, ``torch.matmul``,
    ``torch.einsum`` (two operands), ``F.embedding``, a convolution, ``F.bilinear``; views and casts of
    a weight (``.t()``, ``.T``, ``.to(dtype)``) keep its identity. A tied weight is one unit, whichever
    place it is used from."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.units = quantizable_units(model)
        self._ids: dict[int, str] = {}
        self._totals: dict[str, UnitOps] = {}
        self._forwards = 0
        self._handle = None
        self._transparent = weight_view_ops()
        self._matmuls = matmul_ops()

    def __enter__(self) -> "OpCounter":
        self._forwards = 0
        self._totals = {name: UnitOps(name, unit.kind, unit.numel, unit.numel // max(unit.shape[0], 1))
                        for name, unit in self.units.items()}
        # Float parameters are known by identity; a packed unit's dequantized weight carries its name.
        self._ids = {id(unit_tensor(self.model, unit)): name for name, unit in self.units.items()
                     if unit.packed is None}
        self._handle = self.model.register_forward_hook(self._count_forward)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _count_forward(self, module, inputs, output) -> None:
        self._forwards += 1

    def _unit_of(self, value) -> str | None:
        if not isinstance(value, torch.Tensor):
            return None
        return getattr(value, "qslm_unit", None) or self._ids.get(id(value))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        with torch.no_grad():
            self._count(func, args, kwargs, out)
        return out

    def _count(self, func, args, kwargs, out) -> None:
        if func in self._transparent:
            name = self._unit_of(args[0]) if args else None
            if name is not None and isinstance(out, torch.Tensor):
                out.qslm_unit = name
            return
        if func is F.linear:
            self._dense(args[1] if len(args) > 1 else kwargs.get("weight"), args[0], out, contraction=None)
        elif func is F.embedding:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self._unit_of(weight)
            if name is not None:
                ops = self._totals[name]
                ops.calls += 1
                ops.lookups += args[0].numel()
        elif func in (F.conv1d, F.conv2d, F.conv3d):
            self._dense(args[1] if len(args) > 1 else kwargs.get("weight"), args[0], out, contraction=None)
        elif func in (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            if self._unit_of(weight) is not None:
                self._record(self._unit_of(weight), args[0], args[0].numel() * weight[0].numel())
        elif func is F.bilinear:
            weight = args[2] if len(args) > 2 else kwargs.get("weight")
            if self._unit_of(weight) is not None:
                self._record(self._unit_of(weight), args[0], out.numel() * weight[0].numel())
        elif func in self._matmuls and len(args) >= 2:
            a, b = args[0], args[1]
            if self._unit_of(b) is not None:
                self._dense(b, a, out, contraction=a.shape[-1])
            elif self._unit_of(a) is not None:
                self._dense(a, b, out, contraction=a.shape[-1])
        elif func is torch.einsum:
            operands = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
            named = [i for i, x in enumerate(operands) if self._unit_of(x) is not None]
            if len(operands) == 2 and len(named) == 1:
                letters = {}
                inputs = str(args[0]).replace(" ", "").split("->")[0].split(",")
                for spec, operand in zip(inputs, operands):
                    for letter, size in zip(spec.replace("...", ""), operand.shape[-len(spec.replace("...", "")):]):
                        letters[letter] = size
                batch = math.prod(operands[1 - named[0]].shape[:-len(inputs[1 - named[0]].replace("...", ""))]) \
                    if "..." in inputs[1 - named[0]] else 1
                self._record(self._unit_of(operands[named[0]]), operands[1 - named[0]],
                             batch * math.prod(letters.values()))

    def _dense(self, weight, x, out, contraction: int | None) -> None:
        name = self._unit_of(weight)
        if name is None or not isinstance(out, torch.Tensor):
            return
        fan_in = contraction if contraction is not None else weight[0].numel()
        self._record(name, x, out.numel() * fan_in)

    def _record(self, name: str, x, dense_macs: float) -> None:
        ops = self._totals[name]
        ops.calls += 1
        ops.weight_reads += ops.weights
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or not x.numel():
            ops.macs += dense_macs
            return
        nonzero = float(torch.count_nonzero(x))
        ops.input_elements += x.numel()
        ops.nonzero_inputs += nonzero
        if is_binary(x):
            ops.spike_calls += 1
            ops.acs += dense_macs * nonzero / x.numel()
        else:
            ops.macs += dense_macs

    def result(self, inferences: int) -> OpCounts:
        if not isinstance(inferences, int) or isinstance(inferences, bool) or inferences <= 0:
            raise QslmError(f"the number of inferences must be a positive integer, got {inferences!r}")
        if not self._forwards:
            raise QslmError("the calibration run never called the model, so no operations were counted")
        units = {}
        for name, total in self._totals.items():
            unit = UnitOps(total.name, total.kind, total.weights, total.fan_in)
            for key in ("input_elements", "nonzero_inputs", "macs", "acs", "lookups"):
                setattr(unit, key, getattr(total, key) / inferences)
            # Calls, and so Linear/Conv weight reads, are per forward: at deployment batch size 1 a
            # forward runs one sequence, whatever batch the calibration run used.
            unit.calls = total.calls / self._forwards
            unit.spike_calls = total.spike_calls / self._forwards
            unit.weight_reads = total.weight_reads / self._forwards + unit.lookups * unit.fan_in
            units[name] = unit
        return OpCounts(inferences, self._forwards, units)


def measure_op_counts(model: nn.Module, run_fn: Callable[[], int], inferences: int | None = None) -> OpCounts:
    """Run ``run_fn()`` (the model on calibration data) and count operations per inference.

    ``run_fn`` returns how many inferences (input sequences) it ran, unless ``inferences`` is given.
    Measure on the float model (see the module docstring) or on a quantized one to re-measure spikes."""
    with OpCounter(model) as counter:
        returned = run_fn()
    if inferences is None:
        if isinstance(returned, bool) or not isinstance(returned, int):
            raise QslmError("run_fn must return how many inferences (input sequences) it ran, or pass "
                            f"inferences=N; it returned a {type(returned).__name__}")
        inferences = returned
    return counter.result(inferences)


# ---------------------------------------------------------------- energy

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


# ---------------------------------------------------------------- latency

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
