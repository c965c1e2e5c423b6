"""One bit a weight: sign times the least-squares scale of each row or group, on tiny and odd shapes,
through the packed file, ``qslm.quantize`` and a search that may take one bit."""
from __future__ import annotations

import math

import pytest
import torch

import qslm
from qslm.errors import QslmError
from qslm.quant.memory import safetensors_tensor_bytes
from qslm.quant.methods import method_named
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.units import find_units
from tests.handwritten import HandwrittenSpikingClassifier, accuracy

SHAPES_AND_SPECS = [((1, 1), QuantSpec(1, method="binary")),
                    ((1, 9), QuantSpec(1, method="binary", scale_dtype="float16")),
                    ((3, 7), QuantSpec(1, "per-tensor", method="binary")),
                    ((4, 12), QuantSpec(1, "group", 4, method="binary", scale_dtype="float16")),
                    ((5, 3, 2), QuantSpec(1, method="binary"))]  # a conv-shaped weight


@pytest.mark.parametrize("shape, spec", SHAPES_AND_SPECS)
def test_signs_times_the_least_squares_scale_round_trip_through_storage(shape, spec):
    binary = method_named("binary")
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    quantized = binary.quantize(weight, spec, None, "w")
    values = quantized.dequantize()
    assert values.shape == weight.shape
    assert torch.equal(torch.sign(values)[weight != 0], torch.sign(weight)[weight != 0])
    stored = binary.stored_tensors(quantized)
    assert stored["codes"].numel() == math.ceil(weight.numel() / 8)
    assert sum(t.numel() * t.element_size() for t in stored.values()) == binary.stored_bytes(shape, spec)
    assert torch.equal(binary.dequantize_stored(stored, spec, weight.shape).reshape(shape), values)


def test_the_scale_is_the_one_that_minimises_the_squared_error():
    weight = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    values = method_named("binary").quantize(weight, QuantSpec(1, method="binary"), None, "w").dequantize()
    assert torch.allclose(values.abs()[:, 0], weight.abs().mean(dim=1))
    error = (values - weight).pow(2).sum()
    for factor in (0.9, 1.1):
        assert (values * factor - weight).pow(2).sum() > error


@pytest.mark.parametrize("settings, said", [
    ({"bits": 2}, "bits=2 is not supported by method 'binary'"),
    ({"symmetric": False}, "a sign has no zero-point"),
    ({"all_levels": True}, "one bit is a sign"),
    ({"observer": "minmax"}, "its scale is the least-squares one"),
])
def test_what_one_bit_cannot_honour_is_refused(settings, said):
    with pytest.raises(QslmError, match=said):
        QuantSpec(**{"bits": 1, "method": "binary", **settings})


def test_rtn_refuses_one_bit_naming_the_method_that_takes_it():
    with pytest.raises(QslmError, match=r"bits=1 is not supported by method 'rtn'.*\(method binary takes 1 bits\)"):
        QuantSpec(1)


def test_one_bit_quantize_writes_exact_bytes_and_loads_back(classifier, tmp_path):
    model, ids, _ = classifier
    result = qslm.quantize(model, bits=1, method="binary", out=tmp_path / "b")
    assert result.bytes == safetensors_tensor_bytes(tmp_path / "b" / "model.safetensors")
    assert all(spec.method == "binary" and spec.bits == 1 for spec in result.plan.units.values())
    packed = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "b")
    plan = QuantPlan(dict(result.plan.units))
    from qslm.quant.apply import fake_quantized

    with fake_quantized(model, plan):
        expected = model(ids[:8])
    assert torch.allclose(packed(ids[:8]), expected, atol=1e-6)
    assert all(u.packed.method == "binary" for u in find_units(packed).values())


def test_a_search_may_take_one_bit_only_with_a_method_that_takes_it(classifier, tmp_path):
    model, ids, labels = classifier
    with pytest.raises(QslmError, match=r"bit-width 1 is taken by none of the methods \['rtn'\]; add binary"):
        qslm.SearchConfig(bit_choices=(1, 2, 8), methods=("rtn",))
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:144], labels[96:144]), calibration=[ids[:32]])
    result = qslm.search(model, task, out=tmp_path / "s", constraints=qslm.Constraints(max_drop=80.0),
                         config=qslm.SearchConfig(bit_choices=(1, 8), methods=("rtn", "binary"), strategy="uniform"),
                         progress=False, cache_dir=tmp_path / "cache")
    one_bit = [c for c in result.report["candidates"] if set(c["assignment"].values()) == {1}]
    assert one_bit  # the uniform strategy measured the all-one-bit plan
    assert {m for by_bits in result.report["methods"].values() for b, m in by_bits.items() if b == "1"} == {"binary"}
