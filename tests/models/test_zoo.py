"""Model folders: save/load round trip and clear errors for every broken or unknown model."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from qslm.errors import QslmError
from qslm.models import zoo
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig
from qslm.models.zoo import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, load_model, save_model
from qslm.outputs import MANIFEST_FILE


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
    with pytest.raises(QslmError, match="(?s)does not match arch 'spikegpt'.*Missing.*head.weight"):
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
    (SpikeGPTConfig(), "wikitext2"),
    (SpikeGPTConfig(task="classification"), "sst2"),
    (SpikingEncoderConfig(), "sst2"),
])
def test_evaluation_task_follows_the_head(config, task, tmp_path):
    assert zoo.evaluation_task(config, tmp_path) == task


def test_a_masked_lm_has_no_evaluation_task(tmp_path):
    with pytest.raises(QslmError, match=f"model {tmp_path} is a masked-language-model pre-training stage.*"
                                        f"--task sst2 --init {tmp_path}"):
        zoo.evaluation_task(SpikingEncoderConfig(task="mlm"), tmp_path)
