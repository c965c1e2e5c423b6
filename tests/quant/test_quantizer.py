"""Uniform quantizer: code ranges, error bounds, observers, idempotence, spec validation."""
from __future__ import annotations

import itertools

import pytest
import torch

from qslm.errors import QslmError
from qslm.quant.widths import GRID_BITS
from qslm.quant.quantizer import (
    QuantSpec,
    code_range,
    fake_quantize,
    group_count,
    grouped,
    parse_granularity,
    quantize_tensor,
)

LAYOUTS = [("per-tensor", None), ("per-channel", None), ("group", 16)]
CASES = list(itertools.product(GRID_BITS, LAYOUTS, [True, False]))


def case_id(case) -> str:
    bits, (granularity, size), symmetric = case
    return f"{bits}b-{granularity}{size or ''}-{'sym' if symmetric else 'asym'}"


def weight(seed: int = 0, shape=(12, 64)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=generator) * 0.05
    w[0, 3] = 0.4  # an outlier, so clipping observers have something to clip
    return w


def element_scale(q) -> torch.Tensor:
    return q.scale[:, None].expand_as(q.codes).reshape(q.shape)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse"])
def test_codes_stay_in_range(case, observer):
    bits, (granularity, size), symmetric = case
    spec = QuantSpec(bits, granularity, size, symmetric, observer)
    q = quantize_tensor(weight(), spec)
    low, high = code_range(spec)
    assert q.codes.shape == (group_count(q.shape, spec), q.shape.numel() // group_count(q.shape, spec))
    assert int(q.codes.min()) >= low and int(q.codes.max()) <= high
    assert q.scale.dtype == torch.float32 and bool((q.scale > 0).all())
    if symmetric:
        assert q.zero_point is None
    else:
        assert int(q.zero_point.min()) >= 0 and int(q.zero_point.max()) <= high


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_minmax_error_is_at_most_half_a_step(case):
    bits, (granularity, size), symmetric = case
    w = weight(1)
    q = quantize_tensor(w, QuantSpec(bits, granularity, size, symmetric, "minmax"))
    error = (q.dequantize() - w).abs()
    float_rounding = w.abs() * 2e-7  # a few float32 ulps, visible at 16 bits
    assert bool((error <= element_scale(q) * 0.5 + float_rounding).all())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity,size", LAYOUTS)
def test_16_bit_is_near_lossless(granularity, size, symmetric):
    w = weight(2)
    deq = fake_quantize(w, QuantSpec(16, granularity, size, symmetric, "minmax"))
    assert float((deq - w).abs().max()) <= float(w.abs().max()) * 2.0 ** -15


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("observer", ["minmax", "mse"])
def test_quantizing_a_quantized_tensor_is_idempotent(case, observer):
    bits, (granularity, size), symmetric = case
    spec = QuantSpec(bits, granularity, size, symmetric, observer)
    first = quantize_tensor(weight(3), spec)
    second = quantize_tensor(first.dequantize(), spec)
    assert torch.equal(first.codes, second.codes)
    assert torch.allclose(first.dequantize(), second.dequantize(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_never_worse_than_minmax_per_group(bits, symmetric):
    w = weight(4)
    errors = {}
    for observer in ("minmax", "mse"):
        spec = QuantSpec(bits, "per-channel", None, symmetric, observer)
        errors[observer] = (fake_quantize(w, spec) - w).square().sum(dim=1)
    assert bool((errors["mse"] <= errors["minmax"] * (1 + 1e-6)).all())
    # the outlier row is where low bit-widths gain most from clipping
    if bits <= 3:
        assert float(errors["mse"][0]) < float(errors["minmax"][0])


def test_percentile_clips_an_outlier():
    w = torch.linspace(-1, 1, 1001)[None, :].repeat(2, 1)
    w[:, 0] = -50.0
    minmax = quantize_tensor(w, QuantSpec(8, "per-channel", None, True, "minmax"))
    clipped = quantize_tensor(w, QuantSpec(8, "per-channel", None, True, "percentile", 99.0))
    assert float(clipped.scale.max()) < float(minmax.scale.min()) / 10
    deq = clipped.dequantize()
    assert float(deq[:, 0].max()) == pytest.approx(-float(clipped.scale[0]) * 127)  # saturated, not dropped


def test_all_zero_groups_stay_exact():
    w = torch.zeros(4, 32)
    w[1] = torch.linspace(-1, 1, 32)
    for symmetric in (True, False):
        deq = fake_quantize(w, QuantSpec(4, "group", 8, symmetric, "mse"))
        assert torch.isfinite(deq).all()
        assert torch.equal(deq[0], w[0]) and torch.equal(deq[2:], w[2:])


def test_zero_is_exact_in_asymmetric_ranges():
    w = torch.rand(3, 40) + 0.5  # all positive: the range is widened to include 0
    w[:, 5] = 0.0
    deq = fake_quantize(w, QuantSpec(3, "per-channel", None, False, "minmax"))
    assert bool((deq[:, 5] == 0).all())


def test_group_layout_runs_along_the_input_dim():
    w = torch.arange(2 * 8, dtype=torch.float32).view(2, 8)
    groups = grouped(w, QuantSpec(4, "group", 4))
    assert groups.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    # a group never mixes output channels, even for conv weights [out, in, k]
    assert group_count((6, 4, 3), QuantSpec(4, "group", 12)) == 6


def test_conv_and_embedding_shapes_round_trip():
    for shape in [(8, 4, 3), (8, 2, 3, 3), (50, 16)]:
        w = torch.randn(shape)
        deq = fake_quantize(w, QuantSpec(8, "per-channel"))
        assert deq.shape == w.shape and float((deq - w).abs().max()) < 0.05


def test_group_size_must_divide_the_input_dim():
    with pytest.raises(QslmError, match="group_size 24 does not divide its input size 64"):
        quantize_tensor(weight(), QuantSpec(4, "group", 24))


@pytest.mark.parametrize("kwargs,message", [
    ({"bits": 7}, "unsupported bit-width 7"),
    ({"bits": True}, "unsupported bit-width"),
    ({"granularity": "per-row"}, "unknown granularity 'per-row'"),
    ({"granularity": "group"}, "needs a positive integer group_size"),
    ({"granularity": "group", "group_size": 0}, "needs a positive integer group_size"),
    ({"group_size": 32}, "only used with granularity 'group'"),
    ({"observer": "kl"}, "unknown observer 'kl'"),
    ({"percentile": 99.0}, "only used with observer 'percentile'"),
    ({"observer": "percentile", "percentile": 30.0}, r"must be in \(50, 100\]"),
    ({"symmetric": "yes"}, "symmetric must be true or false"),
    ({"method": "awq"}, "unknown method 'awq'"),
    ({"method": "codebook", "bits": 16}, "bits=16 is not supported by method 'codebook'"),
    ({"method": "codebook", "symmetric": False}, "symmetric=false makes no sense with method 'codebook'"),
    ({"method": "codebook", "observer": "minmax"}, "observer='minmax' makes no sense with method 'codebook'"),
    ({"all_levels": 1}, "all_levels must be true or false"),
    ({"all_levels": True, "symmetric": False}, "all_levels=true is for the symmetric grid"),
])
def test_bad_specs_are_rejected(kwargs, message):
    with pytest.raises(QslmError, match=message):
        QuantSpec(**kwargs)


def test_spec_describe_and_dict_round_trip():
    spec = QuantSpec(3, "group", 64, False, "percentile", 99.5)
    assert spec.describe() == "int3 group64 asym percentile99.5"
    assert QuantSpec(4).describe() == "int4 per-channel sym mse"
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(QslmError, match=r"unknown keys \['bit'\]"):
        QuantSpec.from_dict({"bit": 4})


def test_method_in_describe_and_json():
    gptq = QuantSpec(3, "group", 64, False, method="gptq")
    codebook = QuantSpec(2, method="codebook")
    assert gptq.describe() == "int3 group64 asym mse gptq"
    assert codebook.describe() == "int2 per-channel codebook"
    assert QuantSpec.from_dict(gptq.to_dict()) == gptq and gptq.to_dict()["method"] == "gptq"
    assert QuantSpec.from_dict(codebook.to_dict()) == codebook
    assert "method" not in QuantSpec(4).to_dict()  # rtn is written as before methods existed
    assert QuantSpec.from_dict({"bits": 4}).method == "rtn"
    with pytest.raises(QslmError, match="unit 'x'.*unknown method 'GPTQ'"):
        QuantSpec.from_dict({"bits": 4, "method": "GPTQ"}, "unit 'x'")


@pytest.mark.parametrize("bits", [b for b in GRID_BITS if b <= 8])
@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse"])
def test_the_signed_grid_uses_every_code(bits, observer):
    spec = QuantSpec(bits, observer=observer, all_levels=True)
    assert code_range(spec) == (0, 2 ** bits - 1) and code_range(QuantSpec(bits)) == (1, 2 ** bits - 1)
    w = torch.randn(16, 512, generator=torch.Generator().manual_seed(bits))
    q = quantize_tensor(w, spec)
    levels = q.codes.reshape(q.shape).double() - 2 ** (bits - 1)  # the multiple of the scale each weight takes
    assert q.zero_point is None and torch.allclose(q.dequantize().double(), levels * element_scale(q).double())
    assert levels.min() >= -2 ** (bits - 1) and levels.max() <= 2 ** (bits - 1) - 1
    if observer == "mse" and bits <= 4:  # the scale search puts the extra level below zero to use
        assert q.codes.unique().numel() == 2 ** bits
    # A row whose longer tail is negative: without clipping, its most negative weight lands on code 0.
    w[:, 0] = -w.abs().amax(1) * 2.5
    q = quantize_tensor(w, spec)
    if observer == "minmax":
        assert bool((q.codes[:, 0] == 0).all()) and torch.allclose(q.dequantize()[:, 0], w[:, 0])


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_the_signed_grid_errs_less_than_the_symmetric_one(bits):
    # The extra level costs no byte; with the MSE observer it must pay off on every row of Gaussian weights.
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(0))
    errors = {levels: (fake_quantize(w, QuantSpec(bits, all_levels=levels)) - w).square().sum(1)
              for levels in (False, True)}
    assert bool((errors[True] <= errors[False]).all())
    assert errors[True].sum() < 0.85 * errors[False].sum() if bits == 2 else errors[True].sum() < errors[False].sum()


def test_the_signed_grid_in_describe_and_json():
    spec = QuantSpec(2, all_levels=True, method="gptq")
    assert spec.describe() == "int2 per-channel signed mse gptq"
    assert QuantSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["all_levels"] is True
    assert "all_levels" not in QuantSpec(2).to_dict()  # plans without it read and write as before
    assert QuantSpec.from_dict({"bits": 2}).all_levels is False
    # a codebook's levels are free floats: the flag means nothing there and is dropped
    assert QuantSpec(2, all_levels=True, method="codebook") == QuantSpec(2, method="codebook")


def test_quantize_tensor_is_rtn_only():
    with pytest.raises(QslmError, match="quantize_unit"):
        quantize_tensor(weight(), QuantSpec(4, method="gptq"))


def test_parse_granularity():
    assert parse_granularity("per-channel") == ("per-channel", None)
    assert parse_granularity("group:32") == ("group", 32)
    for bad in ("group", "group:0", "group:x", "channel"):
        with pytest.raises(QslmError, match="bad granularity"):
            parse_granularity(bad)


def test_a_spec_names_its_grid_and_moves_to_another():
    spec = QuantSpec(3)
    assert spec.grid == "sym" and spec.on_grid("signed").grid == "signed" and spec.on_grid("asym").grid == "asym"
    assert spec.on_grid("signed").on_grid("sym") == spec and spec.on_grid("asym").symmetric is False
    with pytest.raises(QslmError, match="unknown grid 'skewed'"):
        spec.on_grid("skewed")


def test_the_ternary_grid_holds_at_two_bits_and_reads_back():
    ternary = QuantSpec(3).on_grid("ternary", bits=2, method="gptq")
    assert (ternary.grid, ternary.trits, ternary.symmetric, ternary.all_levels) == ("ternary", True, True, False)
    assert ternary.on_grid("sym") == QuantSpec(2, method="gptq") and "ternary" in ternary.describe()
    assert ternary.to_dict()["trits"] is True and "trits" not in QuantSpec(2).to_dict()  # old plans read unchanged
    assert QuantSpec.from_dict(ternary.to_dict()) == ternary
    assert QuantSpec(2, method="codebook", trits=True).trits is False  # off the grid: its own levels
    for settings in ({"bits": 3}, {"symmetric": False}, {"all_levels": True}):
        with pytest.raises(QslmError, match="trits=true stores the three levels of the symmetric 2-bit grid"):
            QuantSpec(**{"bits": 2, "trits": True, **settings})
    with pytest.raises(QslmError, match="trits=true stores"):
        QuantSpec(3).on_grid("ternary")  # at three bits
    with pytest.raises(QslmError, match="trits must be true or false, got 1"):
        QuantSpec(2, trits=1)
