"""Export to a packed folder and load it back: same outputs as fake quantization, weights stay packed."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from qslm.checkpoint import write_quantized_folder, load_model
from qslm.errors import QslmError
from qslm.outputs import MANIFEST_FILE
from qslm.quant.apply import applied_plan, apply_plan, fake_quantized, restore
from qslm.quant.pack import PLAN_FILE
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.neuron_spec import NeuronSpec
from qslm.quant.units import quantizable_units
from tests.quant.calibration import calibration_context, methods_plan, model_inputs

inputs = model_inputs


def mixed_plan(model) -> QuantPlan:
    """Every bit-width, layout and symmetry somewhere in the model, one unit kept float, neuron state."""
    specs = [QuantSpec(2), QuantSpec(3, "group", 16, False), QuantSpec(4, "per-tensor", None, False, "minmax"),
             QuantSpec(5, "group", 8), QuantSpec(6, "per-channel", None, False, "percentile", 99.0), QuantSpec(8),
             QuantSpec(16, "per-channel", None, False)]
    names = list(quantizable_units(model))
    units = {name: specs[i % len(specs)] for i, name in enumerate(names)}
    units[names[1]] = None
    neurons = {name: NeuronSpec(8) for name, m in model.named_modules() if type(m).__name__ == "LIF"}
    return QuantPlan(units, dict(list(neurons.items())[::2]))


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_classifier", "tiny_encoder"])
def test_loaded_model_equals_fake_quantized(fixture, request, tmp_path):
    loaded = load_model(request.getfixturevalue(fixture))
    model = loaded.model
    plan = mixed_plan(model)
    with fake_quantized(model, plan):
        expected = model(*inputs(loaded))
        out = write_quantized_folder(model, plan, loaded.tokenizer, tmp_path / "q")  # from the float originals
    assert applied_plan(model) is None
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, "config.json", "model.safetensors", PLAN_FILE,
                                                     "tokenizer.json"]
    assert QuantPlan.load(out / PLAN_FILE) == plan
    packed = load_model(out)
    assert list(dict(packed.model.named_modules())) == list(dict(model.named_modules()))  # names unchanged
    assert torch.allclose(packed.model(*inputs(packed)), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(model(*inputs(loaded)), expected)  # and the float model really differs
    for name, unit in quantizable_units(packed.model).items():
        assert (unit.packed is not None) == (plan.units[name] is not None), name
        assert unit.packed == plan.units[name]
    for name, spec in plan.neurons.items():
        assert packed.model.get_submodule(name).state_quantizer.bits == spec.bits


def test_weights_stay_packed_in_memory(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    write_quantized_folder(loaded.model, QuantPlan.uniform(loaded.model, QuantSpec(4)), loaded.tokenizer, tmp_path / "q")
    model = load_model(tmp_path / "q").model
    assert isinstance(model.emb, torch.nn.Embedding) and isinstance(model.blocks[0].att.key, torch.nn.Linear)
    key = model.blocks[0].att.key
    assert dict((k, v.dtype) for k, v in key.state_dict().items()) == {"weight_codes": torch.uint8,
                                                                       "weight_scale": torch.float32}
    assert key.weight_codes.numel() == 32 * 32 // 2  # two 4-bit codes a byte
    parameters = dict(model.named_parameters())
    assert not any(f"{unit}.weight" in parameters for unit in quantizable_units(model))
    assert not any(t.is_floating_point() and t.numel() >= 32 * 32 for t in model.state_dict().values()
                   if t.dtype != torch.uint8)  # no float copy of any weight is kept
    assert key.weight.shape == (32, 32)  # dequantized on demand


def test_export_replaces_an_existing_folder_atomically(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    out = tmp_path / "q"
    write_quantized_folder(loaded.model, QuantPlan.uniform(loaded.model, QuantSpec(8)), loaded.tokenizer, out)
    write_quantized_folder(loaded.model, QuantPlan.uniform(loaded.model, QuantSpec(2)), loaded.tokenizer, out)
    assert QuantPlan.load(out / PLAN_FILE).units["head"].bits == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no temporary folders left
    with pytest.raises(QslmError, match="closest units"):
        write_quantized_folder(loaded.model, QuantPlan({"hed": QuantSpec(4)}), loaded.tokenizer, out)
    assert QuantPlan.load(out / PLAN_FILE).units["head"].bits == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_encoder"])
def test_room_checked_before_an_export_holds_its_files(fixture, request, tmp_path, monkeypatch):
    from qslm.checkpoint import quantized_files_bytes
    from tests.test_diskspace import fake_free_space

    loaded = load_model(request.getfixturevalue(fixture))
    plan = mixed_plan(loaded.model)
    bound = quantized_files_bytes(loaded.model, plan, loaded.tokenizer)
    out = write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path / "q")
    files = [path for path in out.iterdir() if path.name != MANIFEST_FILE]
    written = sum(path.stat().st_size for path in files)
    on_disk = sum(path.stat().st_blocks * 512 for path in files)
    assert max(written, on_disk) <= bound < written + 64 * 1024  # a bound, and not a loose one
    fake_free_space(monkeypatch, bound - 1)
    with pytest.raises(QslmError, match=f"not enough free space in {tmp_path / 'new'} for the quantized model: "
                                        f"{bound:,} bytes"):
        write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_export_into_a_folder_of_other_files_needs_overwrite_and_keeps_them(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    plan = QuantPlan.uniform(loaded.model, QuantSpec(4))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(QslmError, match="already holds files qslm did not write"):
        write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and load_model(tmp_path).model is not None
    with pytest.raises(QslmError, match="is the input model"):
        write_quantized_folder(loaded.model, plan, loaded.tokenizer, tiny_lm, overwrite=True, protect=(tiny_lm,))


def test_export_does_not_disturb_a_fake_quantized_model(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    fake = QuantPlan({"head": QuantSpec(2)})
    apply_plan(loaded.model, fake)
    write_quantized_folder(loaded.model, QuantPlan({"head": QuantSpec(8)}), loaded.tokenizer, tmp_path / "q")
    assert applied_plan(loaded.model) == fake
    restore(loaded.model)
    packed = load_model(tmp_path / "q").model
    float_head = loaded.model.head.weight.detach()
    assert float((packed.head.weight - float_head).abs().max()) < float(float_head.abs().max()) / 100  # 8-bit of the float, not 2-bit


def test_mismatched_plan_and_weights_are_clear_errors(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    out = write_quantized_folder(loaded.model, QuantPlan({"head": QuantSpec(4)}), loaded.tokenizer, tmp_path / "q")
    (out / PLAN_FILE).write_text(QuantPlan({"head": QuantSpec(3)}).to_json())
    with pytest.raises(QslmError, match="packed weights do not match"):
        load_model(out)
    raw = json.loads(QuantPlan({"heads": QuantSpec(4)}).to_json())
    (out / PLAN_FILE).write_text(json.dumps(raw))
    with pytest.raises(QslmError, match="closest units: head"):
        load_model(out)


def test_stored_tensors(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    plan = QuantPlan({"head": QuantSpec(3, "group", 8, False), "emb": QuantSpec(16)})
    state = load_file(str(write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path / "q") /
                          "model.safetensors"))
    vocab = loaded.config.vocab_size
    assert state["head.weight_codes"].shape == ((vocab * 32 * 3 + 7) // 8,)
    assert state["head.weight_scale"].shape == (vocab * 4,)
    assert state["head.weight_zero_point"].shape == ((vocab * 4 * 3 + 7) // 8,)
    assert state["emb.weight_codes"].shape == (vocab * 32 * 2,) and "emb.weight_zero_point" not in state
    assert "head.weight" not in state and state["blocks.0.att.key.weight"].dtype == torch.float32


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_encoder"])
def test_methods_export_equals_fake_quantization(fixture, request, tmp_path):
    """gptq and codebook units: the loaded packed model computes what fake quantization computed."""
    loaded = load_model(request.getfixturevalue(fixture))
    model = loaded.model
    plan = methods_plan(model)
    context = calibration_context(loaded)
    with fake_quantized(model, plan, context=context):
        expected = model(*inputs(loaded))
        out = write_quantized_folder(model, plan, loaded.tokenizer, tmp_path / "q", context=context)
    assert QuantPlan.load(out / PLAN_FILE) == plan
    packed = load_model(out)
    assert torch.allclose(packed.model(*inputs(packed)), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(model(*inputs(loaded)), expected)
    state = load_file(str(out / "model.safetensors"))
    codebook_units = [name for name, spec in plan.quantized.items() if spec.method == "codebook"]
    assert codebook_units and all(state[f"{name}.weight_codebook"].dtype == torch.float16 for name in codebook_units)
    assert not any(f"{name}.weight_scale" in state for name in codebook_units)
    for name, unit in quantizable_units(packed.model).items():
        assert unit.packed == plan.units[name]


def test_gptq_without_hessians_names_the_unit(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    with pytest.raises(QslmError, match="unit 'head' .*needs its calibration Hessian for gptq, but no QuantContext"):
        write_quantized_folder(loaded.model, QuantPlan({"head": QuantSpec(4, method="gptq")}), loaded.tokenizer,
                         tmp_path / "q")
    assert not (tmp_path / "q" / PLAN_FILE).exists()
    with pytest.raises(QslmError, match="unit 'emb' .*no calibration inputs were recorded for it"):
        write_quantized_folder(loaded.model, QuantPlan({"emb": QuantSpec(4, method="gptq")}), loaded.tokenizer,
                         tmp_path / "q", context=calibration_context(loaded))
