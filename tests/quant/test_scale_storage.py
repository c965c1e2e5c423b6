"""float16 scales under a per-tensor power-of-two exponent: exact reconstruction, range, bytes, JSON."""
from __future__ import annotations

import math

import pytest
import torch

from qslm.errors import QslmError
from qslm.quant.pack import stored_tensors, stored_weight_bytes
from qslm.quant.quantizer import QuantSpec, float16_scale, quantize_tensor, scale_exponent


def weight(magnitude: float, shape=(16, 32), seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * magnitude


@pytest.mark.parametrize("magnitude", [1e-4, 1e-2, 1.0, 300.0])
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_float16_scales_are_rounded_float32_ones(magnitude, bits):
    w = weight(magnitude)
    exact = quantize_tensor(w, QuantSpec(bits))
    rounded = quantize_tensor(w, QuantSpec(bits, scale_dtype="float16"))
    assert torch.equal(rounded.codes, exact.codes)  # codes are chosen against the float32 scale
    relative = (rounded.scale - exact.scale).abs() / exact.scale
    assert float(relative.max()) <= 2.0 ** -11  # float16's rounding, never an underflow or overflow
    # the stored float16 values, times 2**exponent, give back the scale dequantization uses, bit for bit
    stored = rounded.stored_scale()
    assert stored.dtype == torch.float16 and torch.isfinite(stored).all()
    assert torch.equal(float16_scale(stored, rounded.scale_exponent), rounded.scale)


def test_plain_float16_would_underflow_where_the_exponent_does_not():
    w = weight(1e-4)
    scale = quantize_tensor(w, QuantSpec(8)).scale
    assert float(scale.to(torch.float16).to(torch.float32).sub(scale).abs().div(scale).max()) > 2.0 ** -11
    top = float(scale.max()) * 2.0 ** -scale_exponent(scale)
    assert 2.0 ** 14 <= top < 2.0 ** 15


def test_a_tiny_group_beside_a_large_one_keeps_its_precision():
    w = weight(1.0, (2, 32))
    w[1] *= 1e-7  # a group 2**-23 the size of the largest
    exact = quantize_tensor(w, QuantSpec(4))
    rounded = quantize_tensor(w, QuantSpec(4, scale_dtype="float16"))
    assert float(((rounded.scale - exact.scale).abs() / exact.scale).max()) <= 2.0 ** -11


def test_bytes_and_buffers():
    spec = QuantSpec(3, "group", 8, symmetric=False, scale_dtype="float16")
    w = weight(0.05)
    groups = 16 * 32 // 8
    expected = math.ceil(16 * 32 * 3 / 8) + 2 * groups + 1 + math.ceil(groups * 3 / 8)
    assert stored_weight_bytes(w.shape, spec) == expected
    buffers = stored_tensors(quantize_tensor(w, spec), "weight")
    assert {k: v.dtype for k, v in buffers.items()} == {"weight_codes": torch.uint8, "weight_scale": torch.float16,
                                                        "weight_scale_exponent": torch.int8,
                                                        "weight_zero_point": torch.uint8}
    assert sum(v.nbytes for v in buffers.values()) == expected
    assert stored_weight_bytes(w.shape, QuantSpec(3, "group", 8, symmetric=False)) == expected + 2 * groups - 1


def test_spec_json_describe_and_validation():
    spec = QuantSpec(4, scale_dtype="float16")
    assert spec.to_dict()["scale_dtype"] == "float16" and QuantSpec.from_dict(spec.to_dict()) == spec
    assert "scale_dtype" not in QuantSpec(4).to_dict()  # float32 plans read as before the field existed
    assert spec.describe() == "int4 per-channel sym mse fp16-scales"
    # a codebook stores no scales: the field cannot tell two codebook specs apart
    assert QuantSpec(2, method="codebook", scale_dtype="float16") == QuantSpec(2, method="codebook")
    with pytest.raises(QslmError, match="unknown scale_dtype 'bfloat16'"):
        QuantSpec(4, scale_dtype="bfloat16")
