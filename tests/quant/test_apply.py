"""Fake quantization in place: weights, restore, the (unit, spec) cache, neuron state, generic models,
the Hessians gptq and codebook units take from a QuantContext."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import qslm.quant.methods.rtn as rtn_module
from qslm.errors import QslmError
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.quant.apply import WeightCache, applied_plan, apply_plan, fake_quantized, float_weight, restore
from qslm.quant.context import QuantContext
from qslm.quant.methods.codebook import codebook_quantize
from qslm.quant.methods.gptq import gptq_quantize
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec, fake_quantize
from qslm.quant.neuron_spec import NeuronSpec
from qslm.quant.unit_inputs import record_hessians
from qslm.quant.units import quantizable_units, unit_tensor


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return SpikeGPT(SpikeGPTConfig(vocab_size=64, n_embd=16, n_layer=2, ctx_len=8)).eval()


@pytest.fixture
def ids():
    return torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def count_quantize(monkeypatch):
    calls = []
    original = rtn_module.quantize_tensor

    def counting(w, spec):
        calls.append(spec)
        return original(w, spec)

    monkeypatch.setattr(rtn_module, "quantize_tensor", counting)
    return calls


def snapshot(model):
    return {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict().items()}


def test_weights_become_dequantized_and_come_back(lm, ids):
    before = snapshot(lm)
    reference = lm(ids)
    plan = QuantPlan.uniform(lm, QuantSpec(3, observer="minmax"))
    with fake_quantized(lm, plan):
        for name, unit in quantizable_units(lm).items():
            assert torch.equal(unit_tensor(lm, unit), fake_quantize(before[f"{name}.weight"][0], plan.units[name]))
            assert torch.equal(float_weight(lm, name), before[f"{name}.weight"][0])
        assert not torch.allclose(lm(ids), reference)
        assert applied_plan(lm) == plan
    assert applied_plan(lm) is None
    for key, (value, pointer) in snapshot(lm).items():
        assert torch.equal(value, before[key][0]) and pointer == before[key][1]  # same storage, no copies
    assert torch.equal(lm(ids), reference)


def test_16_bit_is_close_to_float(lm, ids):
    reference = lm(ids)
    with fake_quantized(lm, QuantPlan.uniform(lm, QuantSpec(16))):
        assert torch.allclose(lm(ids), reference, atol=1e-3)


def test_cache_requantizes_only_the_changed_unit(lm, count_quantize):
    cache = WeightCache()
    units = list(quantizable_units(lm))
    plan_a = QuantPlan.uniform(lm, QuantSpec(4))
    plan_b = QuantPlan({**plan_a.units, "blocks.1.att.value": QuantSpec(2)})
    apply_plan(lm, plan_a, cache)
    assert len(count_quantize) == len(units) == cache.quantize_calls
    apply_plan(lm, plan_b, cache)
    assert count_quantize[len(units):] == [QuantSpec(2)]
    apply_plan(lm, plan_a, cache)  # back to a spec seen before: a look-up
    apply_plan(lm, plan_b, cache)
    assert len(count_quantize) == len(units) + 1 and cache.hits == 2
    assert torch.equal(lm.blocks[1].att.value.weight, fake_quantize(float_weight(lm, "blocks.1.att.value"),
                                                                     QuantSpec(2)))
    restore(lm)


def test_reapplying_without_cache_touches_only_changed_units(lm, count_quantize):
    plan = QuantPlan.uniform(lm, QuantSpec(4))
    apply_plan(lm, plan)
    apply_plan(lm, plan)
    assert len(count_quantize) == len(plan.units)
    apply_plan(lm, QuantPlan({"head": QuantSpec(4)}))  # every other unit back to float, head untouched
    assert len(count_quantize) == len(plan.units)
    assert applied_plan(lm) == QuantPlan({"head": QuantSpec(4)})
    assert torch.equal(lm.emb.weight, float_weight(lm, "emb"))
    restore(lm)


def test_nested_contexts_restore_the_outer_plan(lm, ids):
    outer = QuantPlan({"head": QuantSpec(8)})
    inner = QuantPlan({"emb": QuantSpec(2)}, {"blocks.0.lif1": NeuronSpec(4)})
    with fake_quantized(lm, outer):
        outer_logits = lm(ids)
        with fake_quantized(lm, inner):
            assert applied_plan(lm) == inner
            assert lm.blocks[0].lif1.state_quantizer is not None
        assert applied_plan(lm) == outer and lm.blocks[0].lif1.state_quantizer is None
        assert torch.equal(lm(ids), outer_logits)
    assert applied_plan(lm) is None


def test_restored_after_an_exception(lm):
    before = lm.head.weight.detach().clone()
    with pytest.raises(RuntimeError):
        with fake_quantized(lm, QuantPlan({"head": QuantSpec(2)})):
            raise RuntimeError("boom")
    assert torch.equal(lm.head.weight, before)


def test_neuron_state_quantizer_set_from_threshold_and_restored(lm, ids):
    custom = object()
    lm.blocks[1].lif2.state_quantizer = custom  # someone else's quantizer is put back, not cleared
    plan = QuantPlan(neurons={"blocks.0.lif1": NeuronSpec(6), "blocks.1.lif2": NeuronSpec(8, 4.0)})
    with fake_quantized(lm, plan):
        first = lm.blocks[0].lif1.state_quantizer
        assert first.bits == 6 and first.step == 2.0 * lm.blocks[0].lif1.v_threshold / 32
        assert lm.blocks[1].lif2.state_quantizer.step == 4.0 / 128
    assert lm.blocks[0].lif1.state_quantizer is None and lm.blocks[1].lif2.state_quantizer is custom


def test_invalid_plan_changes_nothing(lm):
    apply_plan(lm, QuantPlan({"head": QuantSpec(4)}))
    with pytest.raises(QslmError, match="closest units: blocks.0.att.key"):
        apply_plan(lm, QuantPlan({"blocks.0.att.kei": QuantSpec(4)}))
    assert applied_plan(lm) == QuantPlan({"head": QuantSpec(4)})
    restore(lm)


def test_cache_bounds_memory_and_rejects_foreign_weights():
    w = torch.randn(32, 32)
    cache = WeightCache(max_bytes=2 * w.nbytes)
    for bits in (2, 3, 4):
        cache.dequantized("fc", w, QuantSpec(bits))
    assert len(cache) == 2 and cache.nbytes == 2 * w.nbytes
    other = torch.randn(32, 32)  # same name and spec, different float weights: recomputed, not reused
    assert torch.equal(cache.dequantized("fc", other, QuantSpec(4)), fake_quantize(other, QuantSpec(4)))
    assert cache.quantize_calls == 4


def test_works_on_any_pytorch_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)).eval()
    x = torch.randn(5, 2, 8)
    reference = model(x)
    with fake_quantized(model, QuantPlan.uniform(model, QuantSpec(8, "group", 6))):
        out = model(x)
    assert not torch.equal(out, reference) and torch.allclose(out, reference, atol=0.05)
    assert torch.equal(model(x), reference)


def test_gptq_and_codebook_units_use_the_context(lm, ids):
    hessians = record_hessians(lm, [ids])
    context = QuantContext(hessians)
    gptq, codebook = QuantSpec(3, method="gptq"), QuantSpec(3, method="codebook")
    plan = QuantPlan({"blocks.0.att.key": gptq, "blocks.0.att.value": codebook, "emb": codebook,
                      "head": QuantSpec(3)})
    key_float = float_weight(lm, "blocks.0.att.key").clone()
    cache = WeightCache()
    with fake_quantized(lm, plan, cache, context=context):
        assert torch.equal(lm.blocks[0].att.key.weight,
                           gptq_quantize(key_float, gptq, hessians["blocks.0.att.key"].hessian).dequantize())
        value_diagonal = torch.diagonal(hessians["blocks.0.att.value"].xtx)  # k-means weights
        assert torch.equal(lm.blocks[0].att.value.weight, codebook_quantize(
            float_weight(lm, "blocks.0.att.value"), codebook, value_diagonal).dequantize())
        assert torch.equal(lm.emb.weight, codebook_quantize(float_weight(lm, "emb"), codebook).dequantize())  # uniform
        assert not torch.equal(lm.blocks[0].att.key.weight, fake_quantize(key_float, QuantSpec(3)))
    assert torch.equal(lm.blocks[0].att.key.weight, key_float)
    calls = cache.quantize_calls
    apply_plan(lm, plan, cache, context=context)  # same Hessians: look-ups
    restore(lm)
    assert cache.quantize_calls == calls
    other = QuantContext(record_hessians(lm, [ids[:, :4]]))  # new Hessians: the units using them recomputed
    apply_plan(lm, plan, cache, context=other)
    restore(lm)
    assert cache.quantize_calls == calls + 2


def test_gptq_without_a_context_is_an_error_naming_the_unit(lm):
    with pytest.raises(QslmError, match="unit 'head' \\(int4 per-channel sym mse gptq\\) needs its calibration"):
        apply_plan(lm, QuantPlan({"head": QuantSpec(4, method="gptq")}))
    apply_plan(lm, QuantPlan({"emb": QuantSpec(4)}))
    with pytest.raises(QslmError, match="unit 'head'"):  # refused before any unit changes
        apply_plan(lm, QuantPlan({"emb": QuantSpec(2), "head": QuantSpec(4, method="gptq")}))
    assert applied_plan(lm) == QuantPlan({"emb": QuantSpec(4)})
    restore(lm)


def test_convolutions_have_no_hessian_so_gptq_refuses_them():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    hessians = record_hessians(model, [torch.randn(4, 2, 6)])
    assert list(hessians) == ["2"]
    plan = QuantPlan({"0": QuantSpec(4, method="gptq"), "2": QuantSpec(4, method="gptq")})
    with pytest.raises(QslmError, match="unit '0' .*a convolution"):
        apply_plan(model, plan, context=QuantContext(hessians))
    apply_plan(model, QuantPlan({"0": QuantSpec(4, method="codebook"), "2": QuantSpec(4, method="gptq")}),
               context=QuantContext(hessians))
    assert applied_plan(model) is not None
    restore(model)
