"""Storage shared by the methods whose values are codes on the spec's uniform grid (rtn, gptq): they
differ in how codes are chosen, never in what is stored.

A weight of shape S (G = group_count(S, spec) groups) is stored as

* ``codes``          uint8 [ceil(numel(S) * bits / 8)]  codes in ``grouped`` order (row-major), packed;
  on the ternary grid (``trits``) instead ``trits`` uint8 [ceil(numel(S) / 5)], five codes a byte;
* ``scale``          float32 [G], or with ``scale_dtype`` float16: float16 [G] and
* ``scale_exponent`` int8 [1], the tensor's power of two (scale = float16 * 2**exponent);
* ``zero_point``     uint8 [ceil(G * bits / 8)], zero-points packed like codes (asymmetric only).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..bits import pack_codes, packed_size, unpack_codes
from ..quantizer import QuantizedTensor, QuantSpec, code_range, dequantize_groups, float16_scale, group_count
from ..trits import pack_trits, packed_trits, unpack_trits
from .registry import QuantMethod, StoredTensor


class GridMethod(QuantMethod):
    """A method that stores a ``QuantizedTensor``: packed codes, scales (+ exponent) (+ zero-points)."""
    grid = True
    stored_names = ("codes", "trits", "scale", "scale_exponent", "zero_point")

    # How the codes are stored; the rest (scales, exponent, zero-points) is the same for every grid method.
    def stores_trits(self, spec: QuantSpec) -> bool:
        return spec.trits

    def codes_layout(self, n_codes: int, spec: QuantSpec) -> StoredTensor:
        if self.stores_trits(spec):
            return StoredTensor("trits", packed_trits(n_codes), torch.uint8)
        return StoredTensor("codes", packed_size(n_codes, spec.bits), torch.uint8)

    def pack(self, codes: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
        if self.stores_trits(spec):  # codes 1..3 of the symmetric two-bit grid, as digits 0..2
            return {"trits": pack_trits(codes - code_range(spec)[0])}
        return {"codes": pack_codes(codes, spec.bits)}

    def unpack(self, stored: Mapping[str, torch.Tensor], spec: QuantSpec, n_codes: int) -> torch.Tensor:
        if self.stores_trits(spec):
            return unpack_trits(stored["trits"], n_codes).to(torch.int32) + code_range(spec)[0]
        return unpack_codes(stored["codes"], spec.bits, n_codes)

    def stored_layout(self, shape: tuple[int, ...], spec: QuantSpec) -> list[StoredTensor]:
        n_groups = group_count(shape, spec)
        layout = [self.codes_layout(math.prod(shape), spec),
                  StoredTensor("scale", n_groups, getattr(torch, spec.scale_dtype))]
        if spec.scale_dtype == "float16":
            layout.append(StoredTensor("scale_exponent", 1, torch.int8))
        if not spec.symmetric:
            layout.append(StoredTensor("zero_point", packed_size(n_groups, spec.bits), torch.uint8))
        return layout

    def stored_tensors(self, quantized: QuantizedTensor) -> dict[str, torch.Tensor]:
        bits = quantized.spec.bits
        stored = {**self.pack(quantized.codes, quantized.spec), "scale": quantized.stored_scale()}
        if quantized.spec.scale_dtype == "float16":
            stored["scale_exponent"] = torch.tensor([quantized.scale_exponent], dtype=torch.int8)
        if quantized.zero_point is not None:
            stored["zero_point"] = pack_codes(quantized.zero_point, bits)
        return stored

    def dequantize_stored(self, stored: Mapping[str, torch.Tensor], spec: QuantSpec, shape: torch.Size
                          ) -> torch.Tensor:
        scale = stored["scale"]
        if "scale_exponent" in stored:
            scale = float16_scale(scale, int(stored["scale_exponent"]))
        n_groups = scale.numel()
        codes = self.unpack(stored, spec, math.prod(shape)).view(n_groups, -1)
        zero_point = None if spec.symmetric else unpack_codes(stored["zero_point"], spec.bits, n_groups)
        return self.values(codes, scale, zero_point, spec)

    def values(self, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
               ) -> torch.Tensor:
        """The weights that codes [n_groups, group_len] stand for: the spec's uniform grid."""
        return dequantize_groups(codes, scale, zero_point, spec)
