"""Memory accounting: plan_bytes equals the exported tensor bytes exactly; the report ``qslm info`` prints."""
from __future__ import annotations

import math

import pytest
import torch

from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.quant.api import quantize
from qslm.quant.memory import (
    fixed_bytes,
    memory_report,
    plan_bytes,
    plan_bytes_by_unit,
    safetensors_tensor_bytes,
    unit_bytes,
)
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.neuron_spec import NeuronSpec
from qslm.quant.units import quantizable_units
from tests.quant.calibration import calibration_batches, methods_plan

PLANS = {
    "int8 per-channel": lambda m: QuantPlan.uniform(m, QuantSpec(8)),
    "int4 per-tensor asym": lambda m: QuantPlan.uniform(m, QuantSpec(4, "per-tensor", None, False)),
    "int3 group16 asym": lambda m: QuantPlan.uniform(m, QuantSpec(3, "group", 16, False), neuron_bits=8),
    "int2/5/6/16 mixed": lambda m: QuantPlan.from_bits(
        {name: (2, 5, 6, 16, 32)[i % 5] for i, name in enumerate(quantizable_units(m))}, QuantSpec(4, "group", 8)),
    "int2/3 signed per-channel mixed": lambda m: QuantPlan.from_bits(
        {name: (2, 3, 32)[i % 3] for i, name in enumerate(quantizable_units(m))}, QuantSpec(2, all_levels=True)),
    "gptq and codebook": methods_plan,
    "codebook 2/3/4/8 mixed": lambda m: QuantPlan.from_bits(
        {name: (2, 3, 4, 8, 32)[i % 5] for i, name in enumerate(quantizable_units(m))},
        QuantSpec(4, "group", 16, method="codebook")),
}


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_encoder"])
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_plan_bytes_equal_exported_tensor_bytes(fixture, plan_name, request, tmp_path):
    folder = request.getfixturevalue(fixture)
    loaded = load_model(folder)
    plan = PLANS[plan_name](loaded.model)
    out = quantize(folder, plan=plan, calibration=calibration_batches(loaded), out=tmp_path / "q").path
    stored = safetensors_tensor_bytes(out / "model.safetensors")
    assert plan_bytes(loaded.model, plan) == stored
    assert memory_report(load_model(out).model, out)["bytes"] == stored


def test_unit_bytes_by_hand():
    linear = torch.nn.Linear(48, 10)  # the unit is the weight: the bias is a fixed float tensor
    assert unit_bytes(linear, None) == 48 * 10 * 4
    # 3-bit codes share bytes: 480 codes -> 180 bytes; 10 float32 scales
    assert unit_bytes(linear, QuantSpec(3)) == 180 + 10 * 4
    # group 16 asym: 30 groups -> 30 scales, 30 zero-points of 3 bits packed in 12 bytes
    assert unit_bytes(linear, QuantSpec(3, "group", 16, False)) == 180 + 30 * 4 + math.ceil(30 * 3 / 8)
    assert unit_bytes(linear, QuantSpec(16, "per-tensor")) == 960 + 4
    embedding = torch.nn.Embedding(100, 8)
    assert unit_bytes(embedding, QuantSpec(4)) == 400 + 100 * 4
    # gptq stores what rtn stores; a codebook stores indices and 2**bits float16 levels per group
    assert unit_bytes(linear, QuantSpec(3, "group", 16, False, method="gptq")) == unit_bytes(
        linear, QuantSpec(3, "group", 16, False))
    assert unit_bytes(linear, QuantSpec(3, method="codebook")) == 180 + 10 * 8 * 2
    assert unit_bytes(linear, QuantSpec(2, "group", 16, method="codebook")) == 120 + 30 * 4 * 2
    assert unit_bytes(embedding, QuantSpec(8, "per-tensor", method="codebook")) == 800 + 256 * 2


def test_totals_add_up(tiny_lm):
    model = load_model(tiny_lm).model
    plan = QuantPlan.uniform(model, QuantSpec(4), neuron_bits=6)  # neuron state costs no stored bytes
    by_unit = plan_bytes_by_unit(model, plan)
    assert plan_bytes(model, plan) == fixed_bytes(model) + sum(by_unit.values())
    float_total = sum(t.numel() * 4 for t in model.state_dict().values())
    assert plan_bytes(model, QuantPlan()) == float_total
    assert plan_bytes(model, QuantPlan(neurons={"blocks.0.lif1": NeuronSpec(4)})) == float_total
    assert plan_bytes(model, plan) < float_total / 5


def test_report_of_a_float_folder(tiny_lm):
    loaded = load_model(tiny_lm)
    report = memory_report(loaded.model, loaded.path)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    assert report["parameters"] == parameters and report["bytes"] == report["bytes_fp32"] == 4 * parameters
    names = [u["name"] for u in report["units"]]
    assert names[:2] == ["emb", "blocks.0.att.key"] and "head" in names
    assert {"other: LayerNorm", "other: RWKVTimeMix", "other: RWKVChannelMix"} <= set(names)
    assert all(u["spec"] == "fp32" and u["bytes"] == u["bytes_fp32"] for u in report["units"])
    assert sum(u["parameters"] for u in report["units"]) == parameters
    assert report["file_bytes"] > report["bytes"]  # plus the safetensors header


def test_report_of_a_quantized_folder(tiny_encoder, tmp_path):
    loaded = load_model(tiny_encoder)
    plan = QuantPlan({"emb": QuantSpec(4), "blocks.0.mlp.fc1": QuantSpec(3, "group", 16, False, "minmax")},
                     {"blocks.1.mlp.hidden_lif": NeuronSpec(8)})
    out = quantize(tiny_encoder, plan=plan, out=tmp_path / "q").path
    report = memory_report(load_model(out).model, out)
    rows = {u["name"]: u for u in report["units"]}
    float_report = memory_report(loaded.model)
    assert report["parameters"] == float_report["parameters"]
    assert report["bytes_fp32"] == float_report["bytes_fp32"]
    assert rows["emb"]["spec"] == "int4 per-channel sym mse"
    assert rows["blocks.0.mlp.fc1"]["spec"] == "int3 group16 asym minmax"
    assert rows["blocks.0.mlp.fc1"]["bytes"] == unit_bytes(loaded.model.blocks[0].mlp.fc1, plan.units["blocks.0.mlp.fc1"])
    assert rows["blocks.0.mlp.fc2"]["spec"] == "fp32"
    assert report["bytes"] == plan_bytes(loaded.model, plan)
    assert report["neurons"] == {"blocks.1.mlp.hidden_lif": "fixed8 range +-2*v_th"}


def test_a_safetensors_header_with_a_key_twice_is_refused(tmp_path):
    # Two entries for one name: counting either would be a guess at what a loader keeps.
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
             b'"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    path = tmp_path / "twice.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(QslmError, match="twice.safetensors header: key 'w' appears more than once"):
        safetensors_tensor_bytes(path)
