"""Codebook quantization: levels per group, nearest-level indices, k-means beats the uniform grid,
Hessian weighting, float16 levels."""
from __future__ import annotations

import pytest
import torch

from qslm.errors import QslmError
from qslm.quant.codebook import codebook_quantize, compensated_codebook_quantize, dequantize_codebook
from qslm.quant.gptq import GptqOptions
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


def correlated_inputs(cols: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.eye(cols) + 2 * torch.randn(cols, cols, generator=generator) / cols ** 0.5
    x = torch.randn(500, cols, generator=generator) @ mixing
    return x, 2 * x.double().t() @ x.double() / x.shape[0]


@pytest.mark.parametrize("bits", [2, 3])
@pytest.mark.parametrize("granularity,size", [("per-tensor", None), ("per-channel", None), ("group", 16)])
def test_compensated_indices_keep_the_levels_and_lower_the_output_error(bits, granularity, size):
    w = weight((12, 48), seed=4)
    x, hessian = correlated_inputs(48)
    spec = QuantSpec(bits, granularity=granularity, group_size=size, method="codebook")
    plain = codebook_quantize(w, spec, torch.diagonal(hessian))
    compensated = compensated_codebook_quantize(w, spec, hessian)
    assert torch.equal(compensated.codebook, plain.codebook) and compensated.codes.shape == plain.codes.shape
    assert int(compensated.codes.min()) >= 0 and int(compensated.codes.max()) < 2 ** bits

    def output_error(q: torch.Tensor) -> float:
        return float((x @ (w - q).t()).square().mean())
    assert output_error(compensated.dequantize()) < 0.97 * output_error(plain.dequantize())  # 3-46% lower here


def test_without_correlations_the_indices_are_the_nearest_levels():
    """A diagonal Hessian moves no error between columns: every index is the plain nearest level."""
    w = weight((8, 32), seed=5)
    hessian = torch.diag(torch.linspace(0.5, 2.0, 32, dtype=torch.float64))
    for granularity, size in (("per-channel", None), ("group", 8)):
        spec = QuantSpec(3, granularity=granularity, group_size=size, method="codebook")
        assert torch.equal(compensated_codebook_quantize(w, spec, hessian).codes,
                           codebook_quantize(w, spec, torch.diagonal(hessian)).codes)


def test_compensated_indices_match_the_textbook_update():
    """Column by column: the nearest level, the error divided by [H_F^-1]_jj and subtracted along its row
    of H_F^-1 (the damped Hessian restricted to the columns F not yet indexed, inverted afresh)."""
    w = weight((6, 10), seed=6).double()
    _, hessian = correlated_inputs(10, seed=7)
    spec = QuantSpec(2, method="codebook")
    result = compensated_codebook_quantize(w.float(), spec, hessian, GptqOptions(damping=0.01, block_size=3))
    levels = result.codebook.double()
    damped = hessian + 0.01 * hessian.diagonal().mean() * torch.eye(10, dtype=torch.float64)
    current, remaining, expected = w.clone(), list(range(10)), torch.zeros(6, 10, dtype=torch.long)
    for j in range(10):
        inverse = torch.linalg.inv(damped[remaining][:, remaining])
        index = (current[:, j:j + 1] - levels).abs().argmin(1)
        expected[:, j] = index
        error = (current[:, j] - levels.gather(1, index[:, None]).squeeze(1)) / inverse[0, 0]
        current[:, remaining] -= error[:, None] * inverse[0][None, :]
        remaining.pop(0)
    assert torch.equal(result.codes.long(), expected)
    assert not torch.equal(result.codes, codebook_quantize(w.float(), spec, torch.diagonal(hessian)).codes)


def test_compensation_refuses_a_hessian_of_another_shape():
    with pytest.raises(QslmError, match="unit 'w': its Hessian is \\[4, 4\\] but its weight \\[8, 64\\] has 64"):
        compensated_codebook_quantize(weight(), QuantSpec(3, method="codebook"), torch.eye(4), unit="w")
