"""Sensitivity pieces: the damage measure, its disk cache, and the digests that key the cache."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from qslm.analysis.sensitivity import (CalibrationSet, SensitivityCache, classification_calibration, damage,
                                       default_cache_dir, lm_calibration, model_hash, output_log_probs)
from qslm.data import sst2, wikitext
from qslm.models.zoo import load_model


def calibration_of(targets: list[torch.Tensor]) -> CalibrationSet:
    return CalibrationSet(False, [(torch.zeros(len(t), 1, dtype=torch.long), None, t) for t in targets], "test")


def test_damage_is_zero_for_identical_outputs():
    torch.manual_seed(0)
    outputs = [F.log_softmax(torch.randn(4, 3), -1), F.log_softmax(torch.randn(2, 3), -1)]
    calibration = calibration_of([torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1])])
    assert damage(outputs, [o.clone() for o in outputs], calibration) == {"kl": 0.0, "loss_increase": 0.0}


def test_damage_by_hand():
    reference = [torch.log(torch.tensor([[0.8, 0.2], [0.5, 0.5]]))]
    quantized = [torch.log(torch.tensor([[0.6, 0.4], [0.5, 0.5]]))]
    calibration = calibration_of([torch.tensor([0, 1])])
    result = damage(reference, quantized, calibration)
    kl = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)  # second example: identical
    assert result["kl"] == pytest.approx(kl / 2) and result["kl"] > 0
    assert result["loss_increase"] == pytest.approx((-math.log(0.6) + math.log(0.8)) / 2)


def test_damage_per_token_for_language_models():
    torch.manual_seed(1)
    reference = [F.log_softmax(torch.randn(2, 5, 7), -1)]
    quantized = [F.log_softmax(reference[0] + 0.3 * torch.randn(2, 5, 7), -1)]
    calibration = CalibrationSet(True, [(torch.zeros(2, 5, dtype=torch.long), None, torch.randint(0, 7, (2, 5)))],
                                 "lm")
    result = damage(reference, quantized, calibration)
    expected = F.kl_div(quantized[0], reference[0], log_target=True, reduction="sum") / 10
    assert result["kl"] == pytest.approx(float(expected), rel=1e-5) and result["kl"] > 0


def test_cache_persists_and_skips_corrupt_lines(tmp_path):
    path = tmp_path / "cache" / "sensitivity.jsonl"
    key = SensitivityCache.key("model", "calibration", ("b.x", "a.y"), "int4")
    assert key == SensitivityCache.key("model", "calibration", ("a.y", "b.x"), "int4")  # unit order
    assert key != SensitivityCache.key("model", "calibration", ("a.y", "b.x"), "int3")
    cache = SensitivityCache(path)
    assert cache.get(key) is None
    cache.put(key, {"kl": 0.5, "loss_increase": 0.1})
    assert SensitivityCache(path).get(key) == {"kl": 0.5, "loss_increase": 0.1}
    with open(path, "a") as handle:
        handle.write("garbage\n")
        handle.write(json.dumps({"key": "other", "value": {"kl": 1.0}}) + "\n")
        handle.write('{"key": "torn", "val')  # a crash mid-line
    reloaded = SensitivityCache(path)
    assert reloaded.get(key) == {"kl": 0.5, "loss_increase": 0.1} and reloaded.get("other") == {"kl": 1.0}
    reloaded.put("after", {"kl": 2.0})  # what a resumed run adds after the torn line stays readable
    assert SensitivityCache(path).get("after") == {"kl": 2.0}


def test_cache_without_path_stays_in_memory(tmp_path):
    cache = SensitivityCache(None)
    cache.put("k", {"kl": 1.0})
    assert cache.get("k") == {"kl": 1.0}


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QSLM_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_model_hash_changes_with_any_weight(tiny_classifier):
    model = load_model(tiny_classifier).model
    digest = model_hash(model)
    assert digest == model_hash(load_model(tiny_classifier).model)
    with torch.no_grad():
        model.blocks[1].ffn.value.weight[0, 0] += 1e-3
    assert model_hash(model) != digest


def test_classification_calibration_digest_is_stable(tiny_classifier, small_data_dir):
    loaded = load_model(tiny_classifier)
    examples = sst2.calibration_examples(small_data_dir, size=20)
    first = classification_calibration(loaded.tokenizer, examples, 48, batch_size=8)
    second = classification_calibration(loaded.tokenizer, list(examples), 48, batch_size=8)
    assert first.digest == second.digest and first.size == 20 and len(first.batches) == 3
    assert classification_calibration(loaded.tokenizer, examples[:19], 48, batch_size=8).digest != first.digest
    assert not first.is_lm
    outputs = output_log_probs(loaded.model, first)
    assert [o.shape for o in outputs] == [(len(ids), 2) for ids, _, _ in first.batches]
    assert torch.allclose(outputs[0].exp().sum(-1), torch.ones(len(first.batches[0][0])))


def test_lm_calibration_windows_and_digest(tiny_lm, small_data_dir):
    loaded = load_model(tiny_lm)
    text = wikitext.calibration_text(small_data_dir)
    first = lm_calibration(loaded.tokenizer, text, ctx_len=32, max_tokens=100, batch_size=2)
    assert first.is_lm and first.size == 3  # 100 // 32 windows of 32 inputs and their 32 next tokens
    ids, mask, targets = first.batches[0]
    assert mask is None and ids.shape == targets.shape == (2, 32)
    assert torch.equal(ids[0, 1:], targets[0, :-1])  # targets are the inputs shifted by one
    assert first.digest == lm_calibration(loaded.tokenizer, text, 32, 100, batch_size=2).digest
    assert first.digest != lm_calibration(loaded.tokenizer, text, 32, 64, batch_size=2).digest
