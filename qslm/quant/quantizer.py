"""Uniform integer quantization of weight tensors, and fixed-point quantization of neuron state.

A weight is viewed as a matrix [rows, cols]: rows are output channels (dim 0 of a Linear, Embedding
or Conv weight), cols the flattened input dims. It is cut into *groups* that each get one scale
(and, asymmetric, one zero-point):

* ``per-tensor``  one group, the whole tensor;
* ``per-channel`` one group per row;
* ``group``       runs of ``group_size`` consecutive columns of a row (``group_size`` must divide cols).

Codes are unsigned, ``0 <= code < 2**bits``, and dequantize as ``(code - zero_point) * scale``:

* symmetric:  zero_point = 2**(bits-1) for every group (implicit, never stored), codes restricted to
  ``[1, 2**bits - 1]`` so the grid is symmetric about 0 (2-bit symmetric is ternary);
  ``scale = clip / (2**(bits-1) - 1)`` with ``clip`` the clipping magnitude;
* signed (symmetric with ``all_levels``): the same implicit zero-point and scale, but every code
  ``[0, 2**bits - 1]`` is used, so the values are ``[-2**(bits-1), 2**(bits-1) - 1] * scale`` (2-bit:
  -2, -1, 0, +1): one more level below zero for the same bytes, which the MSE observer's scale search
  puts to use;
* ternary (symmetric at two bits with ``trits``): the symmetric grid's three levels {-1, 0, +1} x scale,
  the codes stored five to a byte (``qslm.quant.trits``: 1.6 bits a weight) instead of in two bits each;
  any method on the grid (rtn, gptq, learned rounding) chooses the codes as on the symmetric grid;
* asymmetric: the clipping range ``[lo, hi]`` is widened to contain 0 (so 0 is exact),
  ``scale = (hi - lo) / (2**bits - 1)``, integer ``zero_point = round(-lo / scale)`` in ``[0, 2**bits - 1]``.

Rounding is to nearest (half to even). The clipping range comes from an observer:
``minmax`` (no clipping), ``percentile`` (the p-th percentile of |w| or of w's two tails), or ``mse``
(per group, the shrink factor of the min/max range on ``MSE_SHRINK_GRID`` that minimises the squared
error; the search is vectorised over groups).

Methods (``QuantSpec.method``) decide how the stored values are chosen and stored. Each is registered in
``qslm.quant.methods`` with the widths it allows and what it needs: ``rtn`` (round to nearest, as above;
the default), ``gptq`` (the same grid, codes chosen with Hessian-based error compensation), ``codebook``
(free float16 levels per group). A method off the grid (codebook) fits its own levels, so its spec keeps
``symmetric`` true and the ``mse`` observer, and its scale_dtype and all_levels are not used.

Scales (``QuantSpec.scale_dtype``) are stored either as float32, or as float16 with one power-of-two
exponent per tensor: ``scale = float16_scale * 2**exponent``. The exponent puts the tensor's largest
scale in [2**14, 2**15), so no scale overflows, a group's scale keeps float16's 11 significant bits down
to 2**-28 of the largest (plain float16 would underflow: an embedding initialised in +-1e-4 has an
8-bit scale of ~8e-7), and multiplying by a power of two is exact. Codes are chosen against the
float32 scale; the rounded scale (relative change at most 2**-11) is then the one both fake
quantization and the packed model dequantize with.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields

import torch

from ..errors import QslmError
from .methods.registry import method_named
from .widths import BITS


GRANULARITIES = ("per-tensor", "per-channel", "group")
OBSERVERS = ("minmax", "percentile", "mse")
DEFAULT_PERCENTILE = 99.9
# Candidate clip = shrink * (min/max range); 1.0 first so ties keep the unclipped range.
MSE_SHRINK_GRID = tuple(round(1.0 - 0.02 * i, 2) for i in range(41))  # 1.00, 0.98, ..., 0.20
# the method a spec means when it names none (plans written before methods existed); registered by
# qslm.quant.methods.rtn
DEFAULT_METHOD = "rtn"
SCALE_DTYPES = ("float32", "float16")
# the uniform grids by name: symmetric with 2**bits - 1 levels, signed (symmetric, every code), asymmetric,
# and ternary (the symmetric two-bit grid's three levels, stored as trits): two bits only
GRIDS = ("sym", "signed", "asym", "ternary")
TERNARY_BITS = 2
# What quantize and search store unless told otherwise. QuantSpec's own default stays float32, so plans
# written before scale_dtype existed read unchanged.
DEFAULT_SCALE_DTYPE = "float16"
# float16 scales are stored as float16_scale * 2**exponent, the exponent one int8 per tensor, chosen so
# that the largest scale lands in [2**14, 2**15): below float16's largest value (65504) with head-room.
SCALE_EXPONENT_RANGE = (-128, 127)
_TOP_SCALE_EXPONENT = 15


def spec_from_dict(cls, raw: dict, where: str):
    """A spec dataclass from its JSON object: unknown keys are errors, missing keys take defaults."""
    known = [f.name for f in fields(cls)]
    if not isinstance(raw, dict):
        raise QslmError(f"{where}: expected an object with keys {known}, got {raw!r}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise QslmError(f"{where}: unknown keys {unknown}; expected some of {known}")
    try:
        return cls(**raw)
    except (QslmError, TypeError) as err:
        raise QslmError(f"{where}: {err}") from None


@dataclass(frozen=True)
class QuantSpec:
    """How one unit's weight is quantized. Frozen, so it can key caches."""
    bits: int = 8
    granularity: str = "per-channel"
    group_size: int | None = None
    symmetric: bool = True
    observer: str = "mse"
    percentile: float | None = None  # only with observer "percentile"; None means DEFAULT_PERCENTILE
    method: str = DEFAULT_METHOD  # after the fields above, so their positional construction keeps working
    scale_dtype: str = "float32"  # not used off the grid (codebook: float16 levels), normalised to the default
    # symmetric only: use code 0 too (value -2**(bits-1) * scale), so no code of the b bits is wasted
    all_levels: bool = False
    # symmetric two-bit only: the three levels' codes stored five to a byte (the ternary grid)
    trits: bool = False

    def __post_init__(self):
        # 4.0 == 4 and True == 1: the type is checked too, or a plan saying 4.0 would pass as int4.
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits not in BITS:
            raise QslmError(f"unsupported bit-width {self.bits!r}; expected an integer, one of {list(BITS)}")
        if self.granularity not in GRANULARITIES:
            raise QslmError(f"unknown granularity {self.granularity!r}; expected one of {list(GRANULARITIES)}")
        if self.granularity == "group":
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
                raise QslmError(f"granularity 'group' needs a positive integer group_size, got {self.group_size!r}")
        elif self.group_size is not None:
            raise QslmError(f"group_size={self.group_size} is only used with granularity 'group', "
                            f"not {self.granularity!r}")
        if not isinstance(self.symmetric, bool):
            raise QslmError(f"symmetric must be true or false, got {self.symmetric!r}")
        if self.observer not in OBSERVERS:
            raise QslmError(f"unknown observer {self.observer!r}; expected one of {list(OBSERVERS)}")
        if self.percentile is not None:
            if self.observer != "percentile":
                raise QslmError(f"percentile={self.percentile} is only used with observer 'percentile', "
                                f"not {self.observer!r}")
            if (isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float))
                    or not 50.0 < self.percentile <= 100.0):
                raise QslmError(f"percentile must be in (50, 100] (a number), got {self.percentile!r}")
        method = method_named(self.method)
        if self.scale_dtype not in SCALE_DTYPES:
            raise QslmError(f"unknown scale_dtype {self.scale_dtype!r}; expected one of {list(SCALE_DTYPES)}")
        if not isinstance(self.all_levels, bool):
            raise QslmError(f"all_levels must be true or false, got {self.all_levels!r}")
        method.check_spec(self)
        if not method.grid:
            # one spec per method off the grid, whatever the template: its levels are free floats either way
            object.__setattr__(self, "scale_dtype", "float32")
            object.__setattr__(self, "all_levels", False)
            object.__setattr__(self, "trits", False)
        elif self.all_levels and not self.symmetric:
            raise QslmError("all_levels=true is for the symmetric grid; an asymmetric grid already uses every "
                            "code (drop all_levels, or make it symmetric)")
        if not isinstance(self.trits, bool):
            raise QslmError(f"trits must be true or false, got {self.trits!r}")
        if self.trits and (self.bits != TERNARY_BITS or not self.symmetric or self.all_levels):
            raise QslmError(f"trits=true stores the three levels of the symmetric {TERNARY_BITS}-bit grid, so it needs "
                            f"bits={TERNARY_BITS}, symmetric and not all_levels; got bits={self.bits}, "
                            f"symmetric={self.symmetric}, all_levels={self.all_levels}")

    @property
    def grid(self) -> str:
        """The uniform grid's name, one of ``GRIDS``."""
        return "ternary" if self.trits else "signed" if self.all_levels else "sym" if self.symmetric else "asym"

    def on_grid(self, grid: str, **changes) -> "QuantSpec":
        """This spec on the grid named ``grid`` (one of ``GRIDS``), with ``changes`` to its other fields
        made at once (the ternary grid holds at two bits only)."""
        return dataclasses.replace(self, **grid_fields(grid), **changes)

    @property
    def clip_percentile(self) -> float:
        return DEFAULT_PERCENTILE if self.percentile is None else float(self.percentile)

    def describe(self) -> str:
        """Short human form, e.g. ``int4 per-channel sym mse``, ``int3 group64 asym percentile99.9``,
        ``int3 per-channel sym mse gptq``, ``int3 group64 codebook`` (a method off the grid); float16
        scales add ``fp16-scales``."""
        layout = f"group{self.group_size}" if self.granularity == "group" else self.granularity
        if not method_named(self.method).grid:
            return f"int{self.bits} {layout} {self.method}"
        observer = f"percentile{self.clip_percentile:g}" if self.observer == "percentile" else self.observer
        text = f"int{self.bits} {layout} {self.grid} {observer}"
        if self.method != DEFAULT_METHOD:
            text += f" {self.method}"
        return text + (" fp16-scales" if self.scale_dtype == "float16" else "")

    def to_dict(self) -> dict:
        """JSON form; ``method`` rtn, ``scale_dtype`` float32, ``all_levels`` and ``trits`` false are left out, so
        such plans read exactly as before those fields existed."""
        raw = asdict(self)
        for flag in ("all_levels", "trits"):
            if not raw[flag]:
                del raw[flag]
        if raw["method"] == DEFAULT_METHOD:
            del raw["method"]
        if raw["scale_dtype"] == "float32":
            del raw["scale_dtype"]
        return raw

    @classmethod
    def from_dict(cls, raw: dict, where: str = "quant spec") -> "QuantSpec":
        return spec_from_dict(cls, raw, where)


def grid_fields(grid: str) -> dict:
    """The QuantSpec fields that put a spec on the grid named ``grid``."""
    if grid not in GRIDS:
        raise QslmError(f"unknown grid {grid!r}; expected one of {list(GRIDS)}")
    return {"symmetric": grid != "asym", "all_levels": grid == "signed", "trits": grid == "ternary"}


def grid_taken(method, base: QuantSpec, grid: str) -> bool:
    """Whether ``method`` (a registered grid method) can honour ``base``'s settings on ``grid`` at some width
    (the ternary grid: at two bits, if the method takes two bits)."""
    if grid == "ternary":
        return TERNARY_BITS in method.bits and method.settings_problem(base.on_grid(grid, bits=TERNARY_BITS)) is None
    return method.settings_problem(base.on_grid(grid)) is None


def parse_granularity(text: str) -> tuple[str, int | None]:
    """``per-tensor`` | ``per-channel`` | ``group:G`` -> (granularity, group_size)."""
    if text in ("per-tensor", "per-channel"):
        return text, None
    if text.startswith("group:"):
        size = text.partition(":")[2]
        if size.isdigit() and int(size) > 0:
            return "group", int(size)
    raise QslmError(f"bad granularity {text!r}; expected per-tensor, per-channel or group:G (G a positive integer)")


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """[rows, cols] view of a weight: dim 0 against everything else flattened."""
    rows = shape[0] if len(shape) else 1
    return rows, math.prod(shape[1:]) if len(shape) > 1 else 1


def group_count(shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> int:
    rows, cols = matrix_shape(shape)
    if spec.granularity == "per-tensor":
        return 1
    if spec.granularity == "per-channel":
        return rows
    check_group_size(shape, spec)
    return rows * cols // spec.group_size


def check_group_size(shape: torch.Size | tuple[int, ...], spec: QuantSpec, unit: str = "weight") -> None:
    if spec.granularity != "group":
        return
    cols = matrix_shape(shape)[1]
    if cols % spec.group_size:
        raise QslmError(f"{unit}: group_size {spec.group_size} does not divide its input size {cols} "
                        f"(weight shape {list(shape)}); pick a divisor of {cols}")


def grouped(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``w`` as [n_groups, group_len] (a view when possible), in the layout the codes are stored."""
    n_groups = group_count(w.shape, spec)
    return w.reshape(n_groups, w.numel() // n_groups)


@dataclass
class QuantizedTensor:
    """Codes [n_groups, group_len] (int32, unsigned values), scale [n_groups] float32 (the value
    dequantization uses), zero_point [n_groups] int32 (None when symmetric), and what is needed to
    rebuild the tensor. With float16 scales, ``scale_exponent`` is the tensor's power-of-two exponent
    and every scale is exactly ``float16 * 2**scale_exponent``."""
    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    spec: QuantSpec
    shape: torch.Size
    scale_exponent: int | None = None

    def dequantize(self) -> torch.Tensor:
        return dequantize_groups(self.codes, self.scale, self.zero_point, self.spec).reshape(self.shape)

    def stored_scale(self) -> torch.Tensor:
        """The scales as stored: float32, or float16 before the exponent is applied."""
        if self.scale_exponent is None:
            return self.scale.to(torch.float32)
        return torch.ldexp(self.scale, torch.tensor(-self.scale_exponent)).to(torch.float16)


def scale_exponent(scale: torch.Tensor) -> int:
    """Power-of-two exponent that puts the largest of ``scale`` (positive) in [2**14, 2**15)."""
    exponent = int(torch.frexp(scale.max()).exponent) - _TOP_SCALE_EXPONENT
    return min(max(exponent, SCALE_EXPONENT_RANGE[0]), SCALE_EXPONENT_RANGE[1])


def float16_scale(stored: torch.Tensor, exponent: int) -> torch.Tensor:
    """float32 scales from their float16 storage and the tensor's exponent (exact)."""
    return torch.ldexp(stored.to(torch.float32), torch.tensor(exponent))


def with_stored_scales(quantized: QuantizedTensor) -> QuantizedTensor:
    """``quantized`` with the scales its spec stores: float32 unchanged, or rounded to float16 under the
    tensor's exponent, so fake quantization dequantizes exactly as the packed file will."""
    if quantized.spec.scale_dtype == "float32":
        return quantized
    quantized.scale_exponent = scale_exponent(quantized.scale)
    quantized.scale = float16_scale(quantized.stored_scale(), quantized.scale_exponent)  # exact from here on
    return quantized


def code_range(spec: QuantSpec) -> tuple[int, int]:
    """Smallest and largest code the spec uses."""
    return (1 if spec.symmetric and not spec.all_levels else 0), 2 ** spec.bits - 1


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                      spec: QuantSpec) -> torch.Tensor:
    """The one dequantization formula, shared by fake quantization and packed modules so both give
    bit-identical weights."""
    centre = (zero_point.to(torch.float32)[:, None] if zero_point is not None
              else float(2 ** (spec.bits - 1)))
    return (codes.to(torch.float32) - centre) * scale[:, None]


def _scale_and_zero_point(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """lo <= 0 <= hi per group ([n, 1]) -> scale [n, 1], zero_point [n, 1] (None when symmetric)."""
    if spec.all_levels:  # 2**(bits-1) steps below zero, one fewer above
        scale = torch.maximum(-lo / 2 ** (spec.bits - 1), hi / (2 ** (spec.bits - 1) - 1))
    elif spec.symmetric:
        scale = torch.maximum(-lo, hi) / (2 ** (spec.bits - 1) - 1)
    else:
        scale = (hi - lo) / (2 ** spec.bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group: any scale is exact
    if spec.symmetric:
        return scale, None
    zero_point = torch.round(-lo / scale).clamp_(0, 2 ** spec.bits - 1)
    return scale, zero_point


def grid_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
               ) -> torch.Tensor:
    """Codes of x [n, len] on the grid of scale / zero_point ([n, 1]): float values in the code range."""
    centre = zero_point if zero_point is not None else 2 ** (spec.bits - 1)
    low, high = code_range(spec)
    return torch.clamp(torch.round(x / scale) + centre, low, high)


def _observed_range(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipping range [lo, hi] per group ([n, 1] each) before any MSE shrinking; contains 0. The signed
    grid keeps the two tails apart: its scale lets the longer negative one use the extra level."""
    mirrored = spec.symmetric and not spec.all_levels
    if spec.observer == "percentile":
        n = x.shape[1]
        k_high = min(n, max(1, math.ceil(spec.clip_percentile / 100.0 * n)))
        if mirrored:
            hi = x.abs().kthvalue(k_high, dim=1, keepdim=True).values
            lo = -hi
        else:
            hi = x.kthvalue(k_high, dim=1, keepdim=True).values
            lo = x.kthvalue(n + 1 - k_high, dim=1, keepdim=True).values
    else:
        lo = x.amin(dim=1, keepdim=True)
        hi = x.amax(dim=1, keepdim=True)
        if mirrored:
            hi = torch.maximum(-lo, hi)
            lo = -hi
    return lo.clamp(max=0.0), hi.clamp(min=0.0)


def fit_groups(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Groups x [n, len] -> scale [n, 1] and zero_point [n, 1] (None when symmetric), with the
    clipping range the spec's observer picks (rtn's choice, which gptq shares)."""
    lo, hi = _observed_range(x, spec)
    if spec.observer == "mse":
        best_error = torch.full_like(lo, float("inf"))
        best_shrink = torch.ones_like(lo)
        for shrink in MSE_SHRINK_GRID:
            scale, zero_point = _scale_and_zero_point(lo * shrink, hi * shrink, spec)
            codes = grid_codes(x, scale, zero_point, spec)
            error = (dequantize_groups(codes, scale.squeeze(1), _squeezed(zero_point), spec) - x
                     ).square_().sum(dim=1, keepdim=True)
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            best_shrink.masked_fill_(better, shrink)
        lo, hi = lo * best_shrink, hi * best_shrink
    return _scale_and_zero_point(lo, hi, spec)


def _squeezed(zero_point: torch.Tensor | None) -> torch.Tensor | None:
    return None if zero_point is None else zero_point.squeeze(1)


def quantize_tensor(w: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Round-to-nearest uniform quantization of ``w`` with the clipping range the spec's observer picks."""
    if spec.method != DEFAULT_METHOD:
        raise QslmError(f"quantize_tensor rounds to nearest; a {spec.method!r} spec ({spec.describe()}) is "
                        "quantized by qslm.quant.apply.quantize_unit")
    check_group_size(w.shape, spec)
    x = grouped(w.detach().to(torch.float32), spec)
    scale, zero_point = fit_groups(x, spec)
    codes = grid_codes(x, scale, zero_point, spec)
    return with_stored_scales(QuantizedTensor(
        codes.to(torch.int32), scale.squeeze(1), None if zero_point is None else zero_point.squeeze(1).to(torch.int32),
        spec, w.shape))


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize then dequantize: the float weight the quantized model really computes with."""
    return quantize_tensor(w, spec).dequantize().to(w.dtype)
