"""``qslm.quantize`` on a user's own ``nn.Module``: bits, a plan, calibration for gptq; the written folder
loads back with ``qslm.load_quantized`` and computes what fake quantization computed."""
from __future__ import annotations

import json

import pytest
import torch

import qslm
from qslm.errors import QslmError
from qslm.quant.apply import fake_quantized
from qslm.quant.memory import safetensors_tensor_bytes
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.units import find_units
from tests.handwritten import HandwrittenSpikingClassifier, make_data, train


@pytest.fixture(scope="module")
def model_and_ids():
    torch.manual_seed(0)
    ids, labels = make_data()
    return train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=30), ids


def test_bits_on_a_module_load_back_into_a_fresh_instance(model_and_ids, tmp_path):
    model, ids = model_and_ids
    result = qslm.quantize(model, bits=4, out=tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir() if not p.name.startswith(".")) == [
        "model.safetensors", "quant_plan.json"]
    with fake_quantized(model, result.plan):
        expected = model(ids[:8])
    packed = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "q")
    assert torch.allclose(packed(ids[:8]), expected, atol=1e-6)
    assert all(unit.packed == result.plan.units[name] and unit.packed.bits == 4 for name, unit in find_units(packed).items())
    assert result.bytes == safetensors_tensor_bytes(tmp_path / "q" / "model.safetensors") < result.bytes_fp32 / 5
    assert find_units(model)["embed"].packed is None  # the user's model is left float


def test_a_plan_file_or_object_and_gptq_with_calibration(model_and_ids, tmp_path):
    model, ids = model_and_ids
    plan = QuantPlan({"classify": QuantSpec(3, method="gptq"), "embed": QuantSpec(8)})
    with pytest.raises(QslmError, match="unit 'classify' .*needs its calibration Hessian for gptq"):
        qslm.quantize(model, plan=plan, out=tmp_path / "no-calibration")
    assert not (tmp_path / "no-calibration").exists()
    (tmp_path / "plan.json").write_text(plan.to_json())
    result = qslm.quantize(model, plan=tmp_path / "plan.json", calibration=[ids[:32], ids[32:64]], out=tmp_path / "q")
    assert QuantPlan.load(tmp_path / "q" / "quant_plan.json") == result.plan
    assert json.loads((tmp_path / "q" / "quant_plan.json").read_text())["units"]["classify"]["method"] == "gptq"
    packed = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "q")
    assert find_units(packed)["classify"].packed == QuantSpec(3, method="gptq")


def test_a_quantized_module_or_no_output_is_refused(model_and_ids, tmp_path):
    model, _ = model_and_ids
    with pytest.raises(QslmError, match="quantize needs an output folder"):
        qslm.quantize(model, bits=4)
    qslm.quantize(model, bits=4, out=tmp_path / "q")
    packed = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "q")
    with pytest.raises(QslmError, match="this HandwrittenSpikingClassifier is already quantized"):
        qslm.quantize(packed, bits=4, out=tmp_path / "again")
    with pytest.raises(QslmError, match="calibration must be a non-empty list of model inputs"):
        qslm.quantize(model, bits=4, calibration=torch.zeros(2, 3, dtype=torch.long), out=tmp_path / "x")
