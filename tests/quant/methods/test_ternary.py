"""Ternary storage: rtn's symmetric two-bit values, five weights a byte, through plans, the packed file,
``qslm.quantize`` and a search that may choose it."""
from __future__ import annotations

import math

import pytest
import torch

import qslm
from qslm.errors import QslmError
from qslm.quant.memory import safetensors_tensor_bytes, unit_bytes
from qslm.quant.methods import method_named
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec, quantize_tensor
from qslm.quant.units import find_units
from tests.handwritten import HandwrittenSpikingClassifier, accuracy


@pytest.mark.parametrize("shape, spec", [((7, 13), QuantSpec(2, method="ternary")),
                                         ((16, 33), QuantSpec(2, "group", 11, method="ternary",
                                                              scale_dtype="float16")),
                                         ((3, 5, 4), QuantSpec(2, "per-tensor", method="ternary"))])
def test_the_same_values_as_rtn_in_fewer_bytes(shape, spec):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ternary = method_named("ternary")
    rtn_spec = QuantSpec(**{**spec.to_dict(), "method": "rtn"})
    quantized = ternary.quantize(weight, spec, None, "w")
    assert torch.equal(quantized.dequantize(), quantize_tensor(weight, rtn_spec).dequantize())
    stored = ternary.stored_tensors(quantized)
    assert stored["trits"].numel() == math.ceil(weight.numel() / 5)
    assert sum(t.numel() * t.element_size() for t in stored.values()) == ternary.stored_bytes(shape, spec)
    rebuilt = ternary.dequantize_stored(stored, spec, weight.shape).reshape(shape)
    assert torch.equal(rebuilt, quantized.dequantize())
    rtn_bytes = method_named("rtn").stored_bytes(shape, rtn_spec)
    assert rtn_bytes - ternary.stored_bytes(shape, spec) == math.ceil(weight.numel() / 4) - math.ceil(weight.numel() / 5)


@pytest.mark.parametrize("settings, said", [({"bits": 3}, "bits=3 is not supported by method 'ternary'"),
                                            ({"symmetric": False}, "symmetric=false gives four: use rtn"),
                                            ({"all_levels": True}, "all_levels=true gives four: use rtn")])
def test_grids_with_more_than_three_levels_are_refused(settings, said):
    with pytest.raises(QslmError, match=said):
        QuantSpec(**{"bits": 2, "method": "ternary", **settings})


def test_a_ternary_plan_writes_exact_bytes_and_loads_back(classifier, tmp_path):
    model, ids, _ = classifier
    spec = QuantSpec(2, method="ternary", scale_dtype="float16")
    plan = QuantPlan({name: spec for name in find_units(model)})
    result = qslm.quantize(model, plan=plan, out=tmp_path / "t")
    assert result.bytes == safetensors_tensor_bytes(tmp_path / "t" / "model.safetensors")
    rtn = qslm.quantize(model, plan=QuantPlan({n: QuantSpec(2, scale_dtype="float16") for n in plan.units}),
                        out=tmp_path / "r")
    assert result.bytes < rtn.bytes
    packed = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "t")
    same = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "r")
    assert torch.equal(packed(ids[:16]), same(ids[:16]))  # rtn's values exactly
    assert all(u.packed == spec for u in find_units(packed).values())


def test_a_search_that_may_use_it_takes_it_at_two_bits(classifier, tmp_path):
    model, ids, labels = classifier
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:144], labels[96:144]), calibration=[ids[:32]])
    result = qslm.search(model, task, out=tmp_path / "s", constraints=qslm.Constraints(max_drop=60.0),
                         config=qslm.SearchConfig(bit_choices=(2, 8), methods=("rtn", "ternary"), grids=("sym",)),
                         progress=False, cache_dir=tmp_path / "cache")
    at_two = {u: by_bits["2"] for u, by_bits in result.report["methods"].items() if "2" in by_bits}
    assert at_two and set(at_two.values()) == {"ternary"}  # the same values in fewer bytes
    units = find_units(model)
    stored = {u: unit_bytes(units[u], QuantSpec(2, method="ternary", scale_dtype="float16")) for u in at_two}
    assert all(stored[u] < unit_bytes(units[u], QuantSpec(2, scale_dtype="float16")) for u in at_two)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_a_grid_method_on_the_ternary_grid_keeps_its_values_in_fewer_bytes(method):
    """gptq (or rtn) on the ternary grid rounds as on the symmetric two-bit grid, and stores the codes five to
    a byte; the lengths cover every remainder modulo 5."""
    from qslm.quant.context import QuantContext
    from qslm.quant.unit_inputs import UnitHessian

    generator = torch.Generator().manual_seed(2)
    for columns in (10, 11, 12, 13, 14):
        weight = torch.randn(6, columns, generator=generator)
        inputs = torch.randn(64, columns, generator=generator)
        context = QuantContext({"w": UnitHessian(inputs.double().T @ inputs.double(), 64)})
        on_sym = QuantSpec(2, method=method, scale_dtype="float16")
        on_ternary = on_sym.on_grid("ternary")
        declared = method_named(method)
        sym, ternary = declared.quantize(weight, on_sym, context, "w"), declared.quantize(weight, on_ternary, context, "w")
        assert torch.equal(sym.dequantize(), ternary.dequantize())
        stored = declared.stored_tensors(ternary)
        assert "codes" not in stored and stored["trits"].numel() == math.ceil(weight.numel() / 5)
        assert sum(t.nbytes for t in stored.values()) == declared.stored_bytes(weight.shape, on_ternary)
        assert torch.equal(declared.dequantize_stored(stored, on_ternary, weight.shape).view_as(weight),
                           ternary.dequantize())
        assert (declared.stored_bytes(weight.shape, on_sym) - declared.stored_bytes(weight.shape, on_ternary)
                == math.ceil(weight.numel() / 4) - math.ceil(weight.numel() / 5))
