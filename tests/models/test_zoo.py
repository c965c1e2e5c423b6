"""Model folders: save/load round trip and clear errors for every broken or unknown model."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from qslm.checkpoint import TOKENIZER_FILE, WEIGHTS_FILE, load_model, save_model
from qslm.quant.api import quantize
from qslm.errors import QslmError
from qslm.models import zoo
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig
from qslm.models.zoo import CONFIG_FILE
from qslm.outputs import MANIFEST_FILE
from qslm.quant.pack import PLAN_FILE
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec


def build(kind: str, vocab_size: int):
    torch.manual_seed(0)
    if kind == "spikegpt-lm":
        return SpikeGPT(SpikeGPTConfig(vocab_size=vocab_size, n_embd=8, n_layer=1, ctx_len=16))
    if kind == "spikegpt-classifier":
        return SpikeGPT(SpikeGPTConfig(vocab_size=vocab_size, n_embd=8, n_layer=1, ctx_len=16,
                                       task="classification", num_classes=3))
    return SpikingEncoder(SpikingEncoderConfig(vocab_size=vocab_size, n_embd=8, n_layer=1, n_head=2,
                                               max_len=16, time_steps=2))


@pytest.mark.parametrize("kind", ["spikegpt-lm", "spikegpt-classifier", "spiking-encoder"])
def test_save_load_round_trip(kind, tiny_tokenizer, tmp_path):
    model = build(kind, tiny_tokenizer.get_vocab_size()).eval()
    out = save_model(tmp_path / "model", model, tiny_tokenizer, extra_files={"notes.txt": "hello\n"})
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, "notes.txt",
                                                            MANIFEST_FILE])
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left behind
    loaded = load_model(out)
    assert loaded.path == out.resolve()
    assert loaded.config == model.config
    assert type(loaded.model) is type(model) and not loaded.model.training
    assert loaded.tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    expected = model.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    ids = torch.tensor([tiny_tokenizer.encode("a fine film").ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), model(ids))
    assert json.loads((out / CONFIG_FILE).read_text())["arch"] == model.config.arch


def test_saving_over_a_folder_replaces_it(tiny_tokenizer, tmp_path):
    first = build("spikegpt-lm", tiny_tokenizer.get_vocab_size())
    second = build("spiking-encoder", tiny_tokenizer.get_vocab_size())
    save_model(tmp_path / "model", first, tiny_tokenizer, extra_files={"old.txt": "x"})
    save_model(tmp_path / "model", second, tiny_tokenizer)
    assert not (tmp_path / "model" / "old.txt").exists()
    assert load_model(tmp_path / "model").config.arch == "spiking-encoder"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_save_leaves_nothing(tiny_tokenizer, tmp_path):
    class BrokenTokenizer:
        def save(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path / "model", build("spikegpt-lm", 300), BrokenTokenizer())
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def model_copy(tiny_classifier, tmp_path):
    return shutil.copytree(tiny_classifier, tmp_path / "copy")


@pytest.mark.parametrize("missing, message", [
    (CONFIG_FILE, "missing {path}: a model folder needs"),
    (WEIGHTS_FILE, "missing weights {path}"),
    (TOKENIZER_FILE, "missing tokenizer {path}"),
])
def test_missing_files(model_copy, missing, message):
    (model_copy / missing).unlink()
    with pytest.raises(QslmError) as info:
        load_model(model_copy)
    assert message.format(path=model_copy.resolve() / missing) in str(info.value)


def edit_config(folder, **changes):
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_unknown_arch(model_copy):
    edit_config(model_copy, arch="transformer-xl")
    with pytest.raises(QslmError, match=r"unknown arch 'transformer-xl'; expected one of \['spikegpt', "
                                        r"'spiking-encoder'\]"):
        load_model(model_copy)


def test_missing_arch(model_copy):
    config = json.loads((model_copy / CONFIG_FILE).read_text())
    del config["arch"]
    (model_copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(QslmError, match="unknown arch None"):
        load_model(model_copy)


def test_unknown_config_key(model_copy):
    edit_config(model_copy, n_experts=4)
    with pytest.raises(QslmError, match=r"unknown config keys \['n_experts'\] for arch 'spikegpt'"):
        load_model(model_copy)


def test_config_not_json(model_copy):
    (model_copy / CONFIG_FILE).write_text("{arch: spikegpt")
    with pytest.raises(QslmError, match="config.json is not valid JSON"):
        load_model(model_copy)


def test_weights_of_another_shape(model_copy):
    edit_config(model_copy, n_embd=48)
    with pytest.raises(QslmError) as info:
        load_model(model_copy)
    assert f"{model_copy.resolve() / WEIGHTS_FILE} does not match arch 'spikegpt'" in str(info.value)
    assert "size mismatch" in str(info.value)


def test_weights_of_another_task(model_copy):
    edit_config(model_copy, task="lm")  # the file has a classifier, the config asks for an LM head
    with pytest.raises(QslmError, match="(?s)does not match arch 'spikegpt'.*missing tensors head.weight"):
        load_model(model_copy)


def test_unreadable_weights(model_copy):
    (model_copy / WEIGHTS_FILE).write_bytes(b"\x00\x01not safetensors")
    with pytest.raises(QslmError, match="is not a readable safetensors file"):
        load_model(model_copy)


def test_unknown_model_name(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "bundled")
    with pytest.raises(QslmError, match=r"model 'spikegpt-nonexistent' is neither a model folder nor a bundled "
                                        r"model \(bundled: none\)"):
        load_model("spikegpt-nonexistent")


def test_bundled_names(tiny_lm, tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    shutil.copytree(tiny_lm, bundled / "tiny-lm")
    (bundled / "not-a-model").mkdir()
    monkeypatch.setattr(zoo, "BUNDLED_DIR", bundled)
    monkeypatch.chdir(tmp_path)  # a bundled name is not a path from here
    assert zoo.bundled_names() == ["tiny-lm"]
    assert load_model("tiny-lm").path == (bundled / "tiny-lm").resolve()
    with pytest.raises(QslmError, match=r"\(bundled: tiny-lm\)"):
        load_model("tiny-classifier")


@pytest.mark.parametrize("config, task", [
    (SpikeGPTConfig(), "language-modeling"),
    (SpikeGPTConfig(task="classification"), "text-classification"),
    (SpikingEncoderConfig(), "text-classification"),
])
def test_evaluation_task_follows_the_head(config, task, tmp_path):
    assert zoo.evaluation_task(config, tmp_path) == task


def test_a_masked_lm_has_no_evaluation_task(tmp_path):
    with pytest.raises(QslmError, match=f"model {tmp_path} is a masked-language-model pre-training stage.*"
                                        f"--task sst2 --init {tmp_path}"):
        zoo.evaluation_task(SpikingEncoderConfig(task="mlm"), tmp_path)


@pytest.mark.parametrize("field, value, expected", [
    ("n_layer", "4", r"n_layer must be an integer in \[1, 256\], got '4'"),
    ("n_layer", 4.0, "n_layer must be an integer in .*, got 4.0"),
    ("n_layer", True, "n_layer must be an integer in .*, got True"),
    ("n_embd", -192, "n_embd must be an integer in .*, got -192"),
    ("ctx_len", 0, "ctx_len must be an integer in .*, got 0"),
    ("vocab_size", 1e9, "vocab_size must be an integer in .*, got 1000000000.0"),
    ("task", "regression", "task must be 'lm' or 'classification', got 'regression'"),
    ("tau", 1.0, r"tau must be a finite number in \(1, .*got 1.0"),
    ("tau", None, "tau must be a finite number in .*got None"),
    ("v_threshold", 0, "v_threshold must be a finite number in .*got 0"),
    ("dropout", 1.0, r"dropout must be a finite number in \[0, 1\), got 1.0"),
    ("num_classes", 1, "num_classes must be an integer in .*got 1"),
])
def test_config_fields_are_type_and_range_checked(model_copy, field, value, expected):
    edit_config(model_copy, **{field: value})
    with pytest.raises(QslmError, match=f"{model_copy.resolve() / CONFIG_FILE}: config field {expected}"):
        load_model(model_copy)


def test_encoder_heads_must_divide_the_width(tiny_encoder, tmp_path):
    folder = shutil.copytree(tiny_encoder, tmp_path / "copy")
    edit_config(folder, n_head=3)
    with pytest.raises(QslmError, match=r"config.json: config field n_embd \(32\) must be divisible by n_head \(3\)"):
        load_model(folder)


@pytest.mark.parametrize("rewrite, expected", [
    (lambda text: text.replace(b'"tau": 2.0', b'"tau": NaN'), "config field tau must be a finite number .*got nan"),
    (lambda text: text.replace(b'"n_layer": 2,', b'"n_layer": 2, "n_layer": 3,'),
     "config.json: key 'n_layer' appears more than once"),
    (lambda text: text.replace(b'"spikegpt"', b'"\xff\xfe"'), "config.json is not UTF-8 text"),
    (lambda text: text.replace(b'"spikegpt"', b'["spikegpt"]'), r"unknown arch \['spikegpt'\]"),
    (lambda text: text.replace(b'"n_layer": 2', b'"n_layer": ' + b'9' * 5000),
     "config.json is not valid JSON: Exceeds the limit"),
    (lambda text: b"[1, 2]", "config.json: expected a JSON object of config fields .*got list"),
    (lambda text: b'"spikegpt"', "config.json: expected a JSON object of config fields .*got str"),
    (lambda text: b"null", "config.json: expected a JSON object of config fields .*got NoneType"),
], ids=["nan", "key-twice", "not-utf8", "arch-list", "huge-int", "array", "string", "null"])
def test_broken_config_files(model_copy, rewrite, expected):
    path = model_copy / CONFIG_FILE
    path.write_bytes(rewrite(path.read_bytes()))
    with pytest.raises(QslmError, match=expected):
        load_model(model_copy)


def test_huge_config_is_refused_before_the_model_is_built(model_copy, monkeypatch):
    """The weights header is compared with shapes from a build whose large tensors are on the meta device."""
    from qslm import checkpoint

    built_on = []
    real_build = checkpoint.build_model

    def spy(config):
        model = real_build(config)
        built_on.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(checkpoint, "build_model", spy)
    edit_config(model_copy, vocab_size=100_000, n_embd=128)  # small enough that the old order would not fail
    with pytest.raises(QslmError, match=r"size mismatch for emb.weight: the file has \[\d+, 32\], the config "
                                        r"implies \[100000, 128\]"):
        load_model(model_copy)
    assert built_on == ["meta"]


def rewrite_weights(folder, change):
    path = folder / WEIGHTS_FILE
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_float_weight_stored_as_integers(model_copy):
    def to_int32(state):
        state["blocks.0.ln1.weight"] = state["blocks.0.ln1.weight"].to(torch.int32)
    rewrite_weights(model_copy, to_int32)
    with pytest.raises(QslmError, match="dtype of blocks.0.ln1.weight: the file has I32, expected a float dtype"):
        load_model(model_copy)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(model_copy, bad):
    def poison(state):
        state["blocks.1.att.key.weight"][3, 5] = bad
        state["emb.weight"].fill_(float("nan"))
    rewrite_weights(model_copy, poison)
    with pytest.raises(QslmError, match="tensors blocks.1.att.key.weight, emb.weight hold NaN or infinite values"):
        load_model(model_copy)


def test_packed_folder_header_is_checked_against_config_and_plan(tiny_lm, tmp_path):
    out = quantize(tiny_lm, plan=QuantPlan({"head": QuantSpec(4)}), out=tmp_path / "q").path
    def truncate_codes(state):
        state["head.weight_codes"] = state["head.weight_codes"][:-1].clone()
    rewrite_weights(out, truncate_codes)
    with pytest.raises(QslmError, match=f"(?s){out / WEIGHTS_FILE}: packed weights do not match {out / PLAN_FILE}"
                                        f".*size mismatch for head.weight_codes"):
        load_model(out)


@pytest.mark.parametrize("name", zoo.bundled_names())
def test_bundled_configs_load_unchanged(name):
    path = zoo.BUNDLED_DIR / name / CONFIG_FILE
    raw = json.loads(path.read_text())
    assert dataclasses.asdict(zoo.config_from_dict(raw, path)) == raw
