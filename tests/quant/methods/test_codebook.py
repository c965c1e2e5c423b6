"""Codebook quantization: levels per group, nearest-level indices, k-means beats the uniform grid,
Hessian weighting, float16 levels."""
from __future__ import annotations

import pytest
import torch

from qslm.errors import QslmError
from qslm.quant.methods.codebook import codebook_quantize, dequantize_codebook
from qslm.quant.quantizer import QuantSpec, quantize_tensor


def weight(shape=(8, 64), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) ** 3 * 0.05  # heavy tails: where non-uniform levels help


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("granularity,size", [("per-tensor", None), ("per-channel", None), ("group", 16)])
def test_levels_and_indices(bits, granularity, size):
    w = weight()
    q = codebook_quantize(w, QuantSpec(bits, granularity, size, method="codebook"))
    groups = {"per-tensor": 1, "per-channel": 8, "group": 32}[granularity]
    assert q.codebook.dtype == torch.float16 and q.codebook.shape == (groups, 2 ** bits)
    assert q.codes.shape == (groups, w.numel() // groups) and 0 <= int(q.codes.min()) and int(q.codes.max()) < 2 ** bits
    assert torch.all(q.codebook[:, 1:] >= q.codebook[:, :-1])  # sorted
    values = q.dequantize()
    # every weight sits at its nearest stored level
    x = w.reshape(groups, -1)
    distance = (x[:, :, None] - q.codebook.float()[:, None, :]).abs()
    chosen = (x - values.reshape(groups, -1)).abs()
    assert torch.allclose(chosen, distance.min(dim=2).values)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_k_means_beats_the_uniform_grid(bits):
    w = weight()
    codebook = codebook_quantize(w, QuantSpec(bits, method="codebook")).dequantize()
    uniform = quantize_tensor(w, QuantSpec(bits, symmetric=False)).dequantize()
    assert (codebook - w).square().sum() < (uniform - w).square().sum()


def test_few_distinct_values_are_exact():
    w = torch.tensor([[0.5, -0.25, 0.5, 0.0] * 4, [1.0, 1.0, 2.0, 2.0] * 4])
    q = codebook_quantize(w, QuantSpec(2, method="codebook"))
    assert torch.equal(q.dequantize(), w)


def test_hessian_weights_favour_important_columns():
    w = weight((4, 32), seed=1)
    important = torch.ones(32)
    important[:4] = 1000.0
    plain = codebook_quantize(w, QuantSpec(2, method="codebook")).dequantize()
    weighted = codebook_quantize(w, QuantSpec(2, method="codebook"), important).dequantize()
    assert (weighted - w)[:, :4].square().sum() < (plain - w)[:, :4].square().sum()


def test_one_dequantization_formula():
    q = codebook_quantize(weight(), QuantSpec(3, "group", 16, method="codebook"))
    assert torch.equal(q.dequantize().reshape(q.codes.shape), dequantize_codebook(q.codes, q.codebook))
    again = codebook_quantize(weight(), QuantSpec(3, "group", 16, method="codebook"))
    assert torch.equal(again.codes, q.codes) and torch.equal(again.codebook, q.codebook)  # deterministic


def test_bad_inputs_are_clear_errors():
    with pytest.raises(QslmError, match="unit 'big': a weight of magnitude 1e\\+06 does not fit a float16"):
        codebook_quantize(torch.full((2, 4), 1e6), QuantSpec(4, method="codebook"), unit="big")
    with pytest.raises(QslmError, match="Hessian diagonal has 3 entries but its weight \\[8, 64\\] has 64"):
        codebook_quantize(weight(), QuantSpec(4, method="codebook"), torch.ones(3))
    with pytest.raises(QslmError, match="needs a codebook spec"):
        codebook_quantize(weight(), QuantSpec(4))
