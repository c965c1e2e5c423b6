"""Learned rounding: rtn's grid and bytes, rounding learned on the unit's calibration Hessian, never worse than
rtn on that objective, deterministic, and through plans, the packed file and a search."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import qslm
from qslm.errors import QslmError
from qslm.quant.apply import fake_quantized, quantize_unit
from qslm.quant.context import LearnedOptions, QuantContext
from qslm.quant.memory import safetensors_tensor_bytes
from qslm.quant.methods import method_named
from qslm.quant.methods.learned import learned_rounding
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec, code_range, quantize_tensor
from qslm.quant.unit_inputs import UnitHessian, record_hessians
from qslm.quant.units import find_units
from qslm.models.neuron_state import reset_neuron_states
from tests.handwritten import HandwrittenSpikingClassifier, accuracy
from tests.quant.calibration import weight_and_correlated_inputs

ROWS, COLS = 20, 40
LAYOUTS = [dict(bits=2), dict(bits=3, granularity="group", group_size=8, symmetric=False),
           dict(bits=4, granularity="per-tensor"), dict(bits=2, all_levels=True, scale_dtype="float16"),
           dict(bits=3, observer="minmax", scale_dtype="float16")]
FAST = LearnedOptions(iterations=120)


@pytest.fixture(scope="module")
def problem():
    """A weight and correlated inputs, as their second moments."""
    w, x = weight_and_correlated_inputs(ROWS, COLS, samples=500, dead_column=3)
    return w, UnitHessian(x.double().t() @ x.double(), x.shape[0])


@pytest.mark.parametrize("kwargs", LAYOUTS, ids=str)
def test_rtns_grid_with_a_lower_output_error(problem, kwargs):
    w, hessian = problem
    rtn = quantize_tensor(w, QuantSpec(**kwargs))
    learned = learned_rounding(w, QuantSpec(**kwargs, method="learned"), hessian, FAST)
    assert torch.equal(learned.scale, rtn.scale) and learned.scale_exponent == rtn.scale_exponent
    assert (learned.zero_point is None) == (rtn.zero_point is None)
    if rtn.zero_point is not None:
        assert torch.equal(learned.zero_point, rtn.zero_point)
    low, high = code_range(learned.spec)
    assert int(learned.codes.min()) >= low and int(learned.codes.max()) <= high
    # only rounding directions move: every code is rtn's or one step from it
    assert int((learned.codes - rtn.codes).abs().max()) <= 1
    rtn_error = hessian.output_error(rtn.dequantize() - w)
    assert hessian.output_error(learned.dequantize() - w) < 0.9 * rtn_error


def test_no_worse_than_rtn_even_when_learning_fails(problem):
    """One step of learning (too few to help) falls back to rtn's codes rather than keep worse ones."""
    w, hessian = problem
    spec = QuantSpec(3, method="learned")
    learned = learned_rounding(w, spec, hessian, LearnedOptions(iterations=1, learning_rate=50.0, warmup=0.0))
    rtn = quantize_tensor(w, QuantSpec(3))
    assert hessian.output_error(learned.dequantize() - w) <= hessian.output_error(rtn.dequantize() - w)


def test_a_diagonal_hessian_gives_rtn_codes():
    """Uncorrelated inputs: each weight's error counts alone, so nearest rounding is already optimal."""
    w = torch.randn(ROWS, COLS, generator=torch.Generator().manual_seed(1))
    hessian = UnitHessian(torch.diag(torch.linspace(0.5, 2.0, COLS, dtype=torch.float64)), 1)
    learned = learned_rounding(w, QuantSpec(3, method="learned"), hessian, FAST)
    rtn = quantize_tensor(w, QuantSpec(3))
    assert hessian.output_error(learned.dequantize() - w) <= hessian.output_error(rtn.dequantize() - w) * (1 + 1e-9)


def test_the_same_inputs_give_the_same_codes_also_under_inference_mode(problem):
    """The search quantizes under no_grad or inference mode; learning still runs, to the same codes."""
    w, hessian = problem
    spec = QuantSpec(2, method="learned")
    first = learned_rounding(w, spec, hessian, FAST)
    with torch.inference_mode():
        second = learned_rounding(w, spec, hessian, FAST)
    assert torch.equal(first.codes, second.codes)


def test_stored_as_rtn_stores_it(problem):
    w, hessian = problem
    spec = QuantSpec(3, "group", 8, method="learned", scale_dtype="float16")
    method = method_named("learned")
    assert method.stored_bytes(w.shape, spec) == method_named("rtn").stored_bytes(w.shape, dataclasses.replace(
        spec, method="rtn"))
    quantized = quantize_unit("w", w, spec, QuantContext({"w": hessian}, learned=FAST))
    stored = method.stored_tensors(quantized)
    assert sum(t.numel() * t.element_size() for t in stored.values()) == method.stored_bytes(w.shape, spec)
    assert torch.equal(method.dequantize_stored(stored, spec, w.shape).reshape(w.shape), quantized.dequantize())


def test_what_it_cannot_do_is_refused(problem):
    w, hessian = problem
    with pytest.raises(QslmError, match=r"unit 'emb'.*needs its calibration Hessian for learned.*no QuantContext"):
        quantize_unit("emb", w, QuantSpec(3, method="learned"))
    with pytest.raises(QslmError, match=r"its Hessian is \[40, 40\] but its weight \[40, 20\] has 20 input"):
        learned_rounding(w.t(), QuantSpec(3, method="learned"), hessian)
    with pytest.raises(QslmError, match="bits=1 is not supported by method 'learned'"):
        QuantSpec(1, method="learned")
    for bad, said in [(dict(iterations=0), "iterations must be a positive integer, got 0"),
                      (dict(learning_rate=-1.0), "learning_rate must be a positive number, got -1.0"),
                      (dict(warmup=1.0), r"warmup must be a fraction in \[0, 1\), got 1.0")]:
        with pytest.raises(QslmError, match=said):
            LearnedOptions(**bad)


def test_a_learned_plan_writes_exact_bytes_and_loads_back(classifier, tmp_path):
    model, ids, _ = classifier
    calibration = [ids[:32], ids[32:64]]
    context = QuantContext(record_hessians(model, calibration, reset_neuron_states))
    units = find_units(model)
    plan = QuantPlan({name: QuantSpec(2, method="learned" if context.hessian(name) else "rtn", scale_dtype="float16")
                      for name in units})
    assert sum(spec.method == "learned" for spec in plan.units.values()) >= 2
    result = qslm.quantize(model, plan=plan, calibration=calibration, out=tmp_path / "l")
    assert result.bytes == safetensors_tensor_bytes(tmp_path / "l" / "model.safetensors")
    rtn = qslm.quantize(model, plan=QuantPlan({n: QuantSpec(2, scale_dtype="float16") for n in units}),
                        out=tmp_path / "r")
    assert result.bytes == rtn.bytes
    packed = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "l")
    with fake_quantized(model, plan, context=context):
        expected = model(ids[:8])
    assert torch.allclose(packed(ids[:8]), expected, atol=1e-6)
    assert "learned" in {u.packed.method for u in find_units(packed).values()}


@pytest.mark.slow
def test_a_search_may_choose_it_per_unit(classifier, tmp_path):
    model, ids, labels = classifier
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:144], labels[96:144]), calibration=[ids[:32]],
                     quantizer_calibration=[ids[:96]])
    result = qslm.search(model, task, out=tmp_path / "s", constraints=qslm.Constraints(max_drop=80.0),
                         config=qslm.SearchConfig(bit_choices=(3, 8), methods=("rtn", "learned"), strategy="uniform"),
                         progress=False, cache_dir=tmp_path / "cache")
    chosen = [m for by_bits in result.report["methods"].values() for b, m in by_bits.items() if b == "3"]
    assert "learned" in chosen and "rtn" in chosen  # per unit: where it moves the outputs least
