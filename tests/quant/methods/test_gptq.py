"""GPTQ: rtn's grid and storage, error compensation that lowers the output error, act-order, lazy blocks."""
from __future__ import annotations

import pytest
import torch

from qslm.errors import QslmError
from qslm.quant.context import GptqOptions
from qslm.quant.methods.gptq import gptq_quantize
from qslm.quant.quantizer import QuantSpec, code_range, quantize_tensor
from tests.quant.calibration import weight_and_correlated_inputs

ROWS, COLS = 24, 48
SPECS = [dict(bits=3), dict(bits=3, granularity="group", group_size=16, symmetric=False),
         dict(bits=4, granularity="per-tensor"), dict(bits=2, observer="minmax")]


@pytest.fixture(scope="module")
def problem():
    """A weight and strongly correlated inputs (where compensation has something to gain)."""
    w, x = weight_and_correlated_inputs(ROWS, COLS, samples=600, dead_column=5)
    hessian = 2 * x.double().t() @ x.double() / x.shape[0]
    return w, x, hessian


def output_error(x, w, q) -> float:
    return float((x @ (w - q).t()).square().mean())


@pytest.mark.parametrize("kwargs", SPECS, ids=str)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_in_output_space(problem, kwargs, act_order):
    w, x, hessian = problem
    rtn = quantize_tensor(w, QuantSpec(**kwargs))
    gptq = gptq_quantize(w, QuantSpec(**kwargs, method="gptq"), hessian, GptqOptions(act_order=act_order))
    # Same stored form as rtn: codes on the same grid, scales per group, zero-points when asymmetric.
    assert gptq.codes.shape == rtn.codes.shape and gptq.scale.shape == rtn.scale.shape
    assert (gptq.zero_point is None) == (rtn.zero_point is None)
    low, high = code_range(gptq.spec)
    assert int(gptq.codes.min()) >= low and int(gptq.codes.max()) <= high
    assert output_error(x, w, gptq.dequantize()) < 0.8 * output_error(x, w, rtn.dequantize())


@pytest.mark.parametrize("kwargs", SPECS, ids=str)
def test_without_correlations_gptq_is_rtn(kwargs):
    """A diagonal Hessian spreads no error (U is diagonal), so the codes are rtn's exactly."""
    w = torch.randn(ROWS, COLS, generator=torch.Generator().manual_seed(1))
    hessian = torch.diag(torch.linspace(0.5, 2.0, COLS, dtype=torch.float64))
    for act_order in (False, True):
        gptq = gptq_quantize(w, QuantSpec(**kwargs, method="gptq"), hessian, GptqOptions(act_order=act_order))
        rtn = quantize_tensor(w, QuantSpec(**kwargs))
        assert torch.equal(gptq.codes, rtn.codes) and torch.equal(gptq.scale, rtn.scale)


@pytest.mark.parametrize("kwargs", SPECS[:2], ids=str)
def test_lazy_blocks_do_not_change_the_result(problem, kwargs):
    """Block size only changes when updates are applied, not what they are (groups included)."""
    w, _, hessian = problem
    spec = QuantSpec(**kwargs, method="gptq")
    whole = gptq_quantize(w, spec, hessian, GptqOptions(block_size=COLS, act_order=True)).dequantize()
    small = gptq_quantize(w, spec, hessian, GptqOptions(block_size=5, act_order=True)).dequantize()
    assert torch.allclose(whole, small, atol=1e-4)


def test_act_order_keeps_the_original_layout(problem):
    """Codes stay in the weight's own column order: dequantizing needs no permutation."""
    w, x, hessian = problem
    spec = QuantSpec(4, method="gptq")
    plain = gptq_quantize(w, spec, hessian).dequantize()
    ordered = gptq_quantize(w, spec, hessian, GptqOptions(act_order=True)).dequantize()
    assert not torch.equal(plain, ordered)
    assert (w - ordered).abs().mean() < 0.5 * w.abs().mean()  # each column near its own float values
    assert output_error(x, w, ordered) < 1.5 * output_error(x, w, plain)


def test_conv_shaped_weight_uses_flattened_columns():
    w = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2))
    q = gptq_quantize(w, QuantSpec(4, method="gptq"), torch.eye(6, dtype=torch.float64))
    assert q.dequantize().shape == w.shape
    assert torch.equal(q.codes, quantize_tensor(w, QuantSpec(4)).codes)


def test_bad_inputs_are_clear_errors(problem):
    w, _, hessian = problem
    with pytest.raises(QslmError, match=r"unit 'k': its Hessian is \[10, 10\] but its weight \[24, 48\] has 48"):
        gptq_quantize(w, QuantSpec(4, method="gptq"), torch.eye(10, dtype=torch.float64), unit="k")
    with pytest.raises(QslmError, match="needs a gptq spec"):
        gptq_quantize(w, QuantSpec(4), hessian)
    with pytest.raises(QslmError, match="group_size 32 does not divide"):
        gptq_quantize(w, QuantSpec(4, "group", 32, method="gptq"), hessian)
    with pytest.raises(QslmError, match="not positive definite"):
        indefinite = torch.full((COLS, COLS), 3.0, dtype=torch.float64) - 2 * torch.eye(COLS, dtype=torch.float64)
        gptq_quantize(w, QuantSpec(4, method="gptq"), indefinite)
    with pytest.raises(QslmError, match="damping must be in"):
        GptqOptions(damping=0.0)
    with pytest.raises(QslmError, match="block_size must be a positive integer"):
        GptqOptions(block_size=0)


# A 4 x 4 case worked out with the textbook (OBQ) update: quantize column j, divide its rounding error by
# [H_F^-1]_jj and subtract error * [H_F^-1]_j,: from the columns F not yet quantized, with H_F^-1 the inverse
# of the (damped) Hessian restricted to F, inverted afresh at every step. GPTQ's Cholesky form must agree.
W4 = torch.tensor([[0.90, -0.30, 0.50, 0.10], [-0.20, 0.70, -0.60, 0.40],
                   [0.35, 0.15, -0.80, -0.45], [-0.55, 0.25, 0.05, 0.65]], dtype=torch.float64)
X4 = torch.tensor([[1.0, 0.8, 0.1, -0.2], [0.5, 0.6, -0.3, 0.1], [-0.4, -0.5, 0.9, 0.3],
                   [0.2, 0.1, 0.4, 0.9], [1.1, 0.9, -0.2, 0.0], [-0.3, 0.2, 0.5, -0.7]], dtype=torch.float64)
H4 = 2 * X4.t() @ X4 / X4.shape[0]
# 3-bit symmetric per-channel minmax: scale = max|row| / 3, codes centred on 4
CODES_BY_HAND = [[7, 3, 6, 4], [3, 7, 1, 6], [5, 5, 1, 2], [1, 6, 4, 7]]
RTN_CODES = [[7, 3, 6, 4], [3, 7, 1, 6], [5, 5, 1, 2], [1, 5, 4, 7]]  # row 3, column 1 differs


def obq_codes(w: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, damping: float) -> torch.Tensor:
    damped = hessian + damping * hessian.diagonal().mean() * torch.eye(len(hessian), dtype=hessian.dtype)
    w, codes, remaining = w.clone(), torch.zeros_like(w), list(range(w.shape[1]))
    for j in range(w.shape[1]):
        inverse = torch.linalg.inv(damped[remaining][:, remaining])
        code = torch.clamp(torch.round(w[:, j] / scale), -3, 3)
        codes[:, j] = code + 4
        error = (w[:, j] - code * scale) / inverse[0, 0]
        w[:, remaining] -= error[:, None] * inverse[0][None, :]
        remaining.pop(0)
    return codes


@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_gptq_matches_a_4x4_case_worked_by_hand(block_size):
    spec = QuantSpec(bits=3, observer="minmax", method="gptq")
    result = gptq_quantize(W4.float(), spec, H4, GptqOptions(damping=0.01, block_size=block_size))
    scale = W4.abs().amax(1) / 3
    assert torch.allclose(result.scale.double(), scale, atol=1e-7)
    assert result.codes.tolist() == CODES_BY_HAND == obq_codes(W4, H4, scale, 0.01).int().tolist()
    rtn = quantize_tensor(W4.float(), QuantSpec(bits=3, observer="minmax"))
    assert rtn.codes.tolist() == RTN_CODES  # the compensation changed a code rounding would have kept
    assert torch.allclose(result.dequantize().double(), (torch.tensor(CODES_BY_HAND) - 4) * scale[:, None], atol=1e-6)
