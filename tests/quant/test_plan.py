"""Quantization plans: JSON round trip, validation against a model with helpful names, helpers."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from qslm.errors import QslmError
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig
from qslm.quant.plan import FLOAT_BITS, PLAN_VERSION, QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.neuron_spec import NeuronSpec
from qslm.quant.units import quantizable_units


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return SpikeGPT(SpikeGPTConfig(vocab_size=64, n_embd=16, n_layer=2, ctx_len=8))


def test_quantizable_units_of_both_architectures(lm):
    names = list(quantizable_units(lm))
    assert names[0] == "emb" and names[-1] == "head"
    assert "blocks.1.att.key" in names and "blocks.0.ffn.value" in names and len(names) == 2 + 2 * 7
    encoder = SpikingEncoder(SpikingEncoderConfig(vocab_size=64, n_embd=16, n_layer=1, n_head=2, max_len=8))
    assert list(quantizable_units(encoder)) == ["emb", "pos_emb", "blocks.0.attn.query", "blocks.0.attn.key",
                                                "blocks.0.attn.value", "blocks.0.attn.proj", "blocks.0.mlp.fc1",
                                                "blocks.0.mlp.fc2", "classifier"]


def test_quantizable_units_are_generic():
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.Linear(4, 2)),
                          nn.LayerNorm(2))
    assert list(quantizable_units(model)) == ["0", "2.0", "2.1"]


def test_json_round_trip(lm, tmp_path):
    plan = QuantPlan({"emb": QuantSpec(8, "group", 8, False, "percentile", 99.5), "blocks.0.att.key": QuantSpec(3),
                      "head": None},
                     {"blocks.1.lif2": NeuronSpec(6, 2.0)})
    raw = json.loads(plan.to_json())
    assert raw["version"] == PLAN_VERSION and raw["units"]["head"] is None
    assert QuantPlan.from_json(plan.to_json()) == plan
    plan.save(tmp_path / "plan.json")
    assert QuantPlan.load(tmp_path / "plan.json") == plan
    plan.validate(lm)


def test_missing_fields_take_defaults():
    plan = QuantPlan.from_dict({"version": 1, "units": {"head": {"bits": 4}}})
    assert plan.units["head"] == QuantSpec(4) and plan.neurons == {}


@pytest.mark.parametrize("raw,message", [
    ({"units": {}}, "unsupported plan version None"),
    ({"version": 99, "units": {}}, "unsupported plan version 99"),
    ({"version": 1, "units": {}, "bits": 4}, r"unknown keys \['bits'\]"),
    ({"version": 1, "units": {"head": {"bits": 4, "clip": 0.9}}}, r"unit 'head': unknown keys \['clip'\]"),
    ({"version": 1, "units": {"head": {"bits": 7}}}, "unit 'head': unsupported bit-width 7"),
    ({"version": 1, "units": {"head": 4}}, "unit 'head': expected an object"),
    ({"version": 1, "units": [], "neurons": {}}, "'units' must be an object"),
    ({"version": 1, "neurons": {"blocks.0.lif1": {"bits": 99}}}, "neuron 'blocks.0.lif1': neuron state bits"),
    ({"version": 1.0, "units": {}}, "unsupported plan version 1.0"),
    ({"version": True, "units": {}}, "unsupported plan version True"),
    ({"version": 1, "units": {"head": {"bits": 4.0}}}, "unit 'head': unsupported bit-width 4.0; expected an integer"),
    ({"version": 1, "units": {"head": {"bits": True}}}, "unit 'head': unsupported bit-width True"),
    ({"version": 1, "units": {"head": {"bits": "4"}}}, "unit 'head': unsupported bit-width '4'"),
    ({"version": 1, "units": {"head": {"bits": 4, "observer": "percentile", "percentile": "99"}}},
     "unit 'head': percentile must be in \\(50, 100\\] \\(a number\\), got '99'"),
    ({"version": 1, "units": {"head": {"bits": 4, "observer": "percentile", "percentile": float("nan")}}},
     "unit 'head': percentile must be in .*got nan"),
    ({"version": 1, "units": {"head": {"bits": 4, "granularity": "group", "group_size": 8.0}}},
     "unit 'head': granularity 'group' needs a positive integer group_size, got 8.0"),
    ({"version": 1, "neurons": {"blocks.0.lif1": {"bits": 8.0}}},
     "neuron 'blocks.0.lif1': neuron state bits .*got 8.0"),
    ({"version": 1, "neurons": {"blocks.0.lif1": {"bits": False}}}, "neuron state bits .*got False"),
    ({"version": 1, "neurons": {"blocks.0.lif1": {"range_multiple": "2"}}},
     "neuron 'blocks.0.lif1': neuron range_multiple must be a positive finite number, got '2'"),
    ({"version": 1, "neurons": {"blocks.0.lif1": {"range_multiple": float("inf")}}}, "range_multiple .*got inf"),
    ({"version": 1, "neurons": {"blocks.0.lif1": None}}, "neuron 'blocks.0.lif1': expected an object"),
])
def test_bad_plan_json_is_rejected(raw, message):
    with pytest.raises(QslmError, match=message):
        QuantPlan.from_dict(raw)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(QslmError, match="p.json is not valid JSON"):
        QuantPlan.load(path)
    with pytest.raises(QslmError, match="not found"):
        QuantPlan.load(tmp_path / "missing.json")


@pytest.mark.parametrize("section, entry", [("units", '{"bits": 4}'), ("neurons", '{"bits": 8}')])
def test_a_name_given_twice_is_refused(tmp_path, section, entry):
    path = tmp_path / "quant_plan.json"
    path.write_text(f'{{"version": 1, "{section}": {{"blocks.0.lif1": {entry}, "blocks.0.lif1": {entry}}}}}')
    with pytest.raises(QslmError, match=f"{path}: key 'blocks.0.lif1' appears more than once"):
        QuantPlan.load(path)


def test_plan_file_not_utf8(tmp_path):
    path = tmp_path / "quant_plan.json"
    path.write_bytes(b'{"version": 1, "units": {"\xff": null}}')
    with pytest.raises(QslmError, match="quant_plan.json is not UTF-8 text"):
        QuantPlan.load(path)


def test_unknown_unit_lists_close_matches(lm):
    with pytest.raises(QslmError) as err:
        QuantPlan({"blocks.1.att.keys": QuantSpec(4)}).validate(lm)
    message = str(err.value)
    assert "unit 'blocks.1.att.keys' is not a module or weight of this model" in message
    assert "closest units: blocks.1.att.key" in message


def test_non_quantizable_module_is_named_as_such(lm):
    with pytest.raises(QslmError, match="'blocks.0.ln1' is a LayerNorm, not a quantizable unit"):
        QuantPlan({"blocks.0.ln1": QuantSpec(4)}).validate(lm)


def test_unknown_neuron_lists_close_matches(lm):
    with pytest.raises(QslmError, match="neuron 'blocks.0.lif3' is not a LIF module.*blocks.0.lif1"):
        QuantPlan(neurons={"blocks.0.lif3": NeuronSpec(8)}).validate(lm)
    with pytest.raises(QslmError, match="neuron 'blocks.0.att.key' is not a LIF"):
        QuantPlan(neurons={"blocks.0.att.key": NeuronSpec(8)}).validate(lm)


def test_all_problems_reported_at_once(lm):
    plan = QuantPlan({"embb": QuantSpec(4), "head": QuantSpec(4, "group", 5)}, {"lif": NeuronSpec(8)})
    with pytest.raises(QslmError) as err:
        plan.validate(lm)
    lines = str(err.value).splitlines()
    assert len(lines) == 4
    assert "closest units: emb" in lines[1]
    assert "unit 'head': group_size 5 does not divide its input size 16" in lines[2]


def test_strict_requires_every_unit(lm):
    plan = QuantPlan({name: QuantSpec(4) for name in list(quantizable_units(lm))[:-2]})
    plan.validate(lm)  # not strict: the rest stays fp32
    with pytest.raises(QslmError, match="leaves 2 quantizable units unmentioned.*blocks.1.ffn.value, head"):
        plan.validate(lm, strict=True)
    plan.units.update({"blocks.1.ffn.value": QuantSpec(8), "head": None})  # null = keep fp32, explicitly
    plan.validate(lm, strict=True)


def test_uniform_and_from_bits(lm):
    plan = QuantPlan.uniform(lm, QuantSpec(4), neuron_bits=8)
    assert set(plan.units) == set(quantizable_units(lm)) and set(plan.quantized) == set(plan.units)
    assert plan.neurons == {f"blocks.{i}.lif{j}": NeuronSpec(8) for i in range(2) for j in (1, 2)}
    plan.validate(lm, strict=True)
    mixed = QuantPlan.from_bits({"emb": 8, "head": FLOAT_BITS, "blocks.0.att.key": 2}, QuantSpec(4, "group", 8))
    assert mixed.units == {"emb": QuantSpec(8, "group", 8), "head": None, "blocks.0.att.key": QuantSpec(2, "group", 8)}
    assert list(mixed.quantized) == ["emb", "blocks.0.att.key"]
    with pytest.raises(QslmError, match="unit 'emb': unsupported bit-width 7"):
        QuantPlan.from_bits({"emb": 7}, QuantSpec(4))


def test_methods_in_plans(lm):
    plan = QuantPlan({"emb": QuantSpec(3, method="codebook"), "blocks.0.att.key": QuantSpec(4, method="gptq"),
                      "head": QuantSpec(4)})
    raw = json.loads(plan.to_json())
    assert raw["units"]["emb"]["method"] == "codebook" and "method" not in raw["units"]["head"]
    assert QuantPlan.from_json(plan.to_json()) == plan
    mixed = QuantPlan.from_bits({"emb": 2, "head": 8}, QuantSpec(4, method="gptq"))
    assert {spec.method for spec in mixed.units.values()} == {"gptq"}
    with pytest.raises(QslmError, match="unit 'emb': bits=16 is not supported by method 'codebook'"):
        QuantPlan.from_bits({"emb": 16}, QuantSpec(4, method="codebook"))
    with pytest.raises(QslmError, match="unit 'head'.*symmetric=false makes no sense"):
        QuantPlan.from_dict({"version": 1, "units": {"head": {"bits": 4, "method": "codebook", "symmetric": False}}})
