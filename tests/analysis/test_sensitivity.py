"""Sensitivity pieces: the damage measure, its disk cache, and the digests that key the cache."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qslm.analysis.sensitivity import (
    OutputReference,
    SensitivityCache,
    default_cache_dir,
    model_hash,
)
from qslm.checkpoint import load_model
from qslm.digest_lines import digested_line
from qslm.errors import QslmError


class Fixed(nn.Module):
    """Returns the logits (or any outputs) it holds, whatever the input: damage tests set them by hand."""

    def __init__(self, *outputs: torch.Tensor, as_dict: bool = False):
        super().__init__()
        self.outputs = [o.clone() for o in outputs]
        self.as_dict = as_dict

    def forward(self, index: torch.Tensor):
        out = self.outputs[int(index[0])]
        return {"a": out, "b": 2 * out} if self.as_dict else out


def inputs(n: int) -> list[torch.Tensor]:
    return [torch.tensor([i]) for i in range(n)]


def test_damage_is_zero_for_identical_outputs():
    torch.manual_seed(0)
    model = Fixed(torch.randn(4, 3), torch.randn(2, 3))
    reference = OutputReference(model, inputs(2))
    assert reference.measure == "kl" and reference.damage() == {"damage": 0.0, "measure": "kl"}


def test_kl_by_hand():
    model = Fixed(torch.log(torch.tensor([[0.8, 0.2], [0.5, 0.5]])))
    reference = OutputReference(model, inputs(1))
    model.outputs[0] = torch.log(torch.tensor([[0.6, 0.4], [0.5, 0.5]]))
    kl = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)  # second example: identical
    assert reference.damage()["damage"] == pytest.approx(kl / 2) and kl > 0


def test_kl_per_position_for_language_models():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 7)
    model = Fixed(logits)
    reference = OutputReference(model, inputs(1))
    model.outputs[0] = logits + 0.3 * torch.randn(2, 5, 7)
    expected = F.kl_div(F.log_softmax(model.outputs[0], -1), F.log_softmax(logits, -1), log_target=True,
                        reduction="sum") / 10
    assert reference.damage()["damage"] == pytest.approx(float(expected), rel=1e-5) and float(expected) > 0


def test_dict_outputs_use_normalised_mse_and_output_picks_one():
    torch.manual_seed(2)
    values = torch.randn(3, 4)
    model = Fixed(values, as_dict=True)
    reference = OutputReference(model, inputs(1))
    assert reference.measure == "mse"
    model.outputs[0] = values + 0.1
    energy = float(values.pow(2).sum() * 5)  # a and b = 2a
    expected = float((0.1 ** 2) * 12 * 5) / energy
    assert reference.damage()["damage"] == pytest.approx(expected, rel=1e-5)
    picked = OutputReference(Fixed(values, as_dict=True), inputs(1), output=lambda out: out["a"])
    assert picked.measure == "kl"
    with pytest.raises(QslmError, match="damage measure"):
        OutputReference(model, inputs(1), measure="l1")


def test_outputs_without_floating_tensors_are_refused():
    class Ids(nn.Module):
        def forward(self, x):
            return x.long()

    with pytest.raises(QslmError, match="no floating tensor"):
        OutputReference(Ids(), [torch.zeros(2)])


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
        handle.write(json.dumps({"key": "other", "value": {"kl": 1.0}}) + "\n")  # no digest: not trusted
        handle.write('{"key": "torn", "val')  # a crash mid-line
    reloaded = SensitivityCache(path)
    assert reloaded.get(key) == {"kl": 0.5, "loss_increase": 0.1} and reloaded.get("other") is None
    assert reloaded.dropped_lines == [3]  # lines that are not JSON (a crash's torn line) are skipped silently
    reloaded.put("after", {"kl": 2.0})  # what a resumed run adds after the torn line stays readable
    again = SensitivityCache(path)
    assert again.get("after") == {"kl": 2.0} and again.dropped_lines == [3]


def test_swapped_cache_values_are_both_dropped(tmp_path):
    """Moving one measurement's damage to another key (which would move units to other widths) is caught."""
    path = tmp_path / "sensitivity.jsonl"
    cache = SensitivityCache(path)
    cache.put("low", {"damage": 0.001, "measure": "kl"})
    cache.put("high", {"damage": 5.0, "measure": "kl"})
    cache.put("kept", {"damage": 0.5, "measure": "kl"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[0]["value"], lines[1]["value"] = lines[1]["value"], lines[0]["value"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    reloaded = SensitivityCache(path)
    assert reloaded.entries == {"kept": {"damage": 0.5, "measure": "kl"}}
    assert reloaded.dropped == 2
    assert reloaded.note() == (f"sensitivity cache {path}: 2 damaged lines dropped (lines 1, 2: edited, corrupt, "
                               "or written before qslm gave each line a digest); those sensitivities are measured "
                               "again")
    reloaded.put("low", {"damage": 0.001, "measure": "kl"})  # measured again: appended, read back, nothing to say
    again = SensitivityCache(path)
    assert again.get("low") == {"damage": 0.001, "measure": "kl"} and again.get("high") is None
    assert again.dropped_lines == [2] and again.note().startswith(f"sensitivity cache {path}: 1 damaged line ")


@pytest.mark.parametrize("line", [
    '[1, 2]', '5', 'null', '"key"', '{"value": {"damage": 1.0}}', '{"key": 3, "value": {}}', '{"key": "k"}',
    '{"key": "k", "value": 1.0}', '{"key": "k", "value": {"damage": 1.0}, "value": {"damage": 2.0}}',
    digested_line({"key": "k", "value": 1.0}, "qslm sensitivity cache").rstrip("\n"),
    digested_line({"key": "k", "value": {}, "extra": 1}, "qslm sensitivity cache").rstrip("\n"),
    digested_line({"key": "k", "value": {"damage": 1.0}}, "another context").rstrip("\n"),
])
def test_cache_lines_that_are_not_entries_are_dropped_and_counted(tmp_path, line):
    """JSON that is not a cache entry with a matching digest: dropped and counted, never a raw KeyError."""
    path = tmp_path / "sensitivity.jsonl"
    SensitivityCache(path).put("kept", {"damage": 0.5})
    with open(path, "a") as handle:
        handle.write(line + "\n")
    reloaded = SensitivityCache(path)
    assert reloaded.entries == {"kept": {"damage": 0.5}} and reloaded.dropped_lines == [2]


def test_cache_bytes_that_are_not_utf8_are_a_dropped_line(tmp_path):
    path = tmp_path / "sensitivity.jsonl"
    SensitivityCache(path).put("kept", {"damage": 0.5})
    with open(path, "ab") as handle:
        handle.write(b'{"key": "\xff"}\n')
    reloaded = SensitivityCache(path)
    assert reloaded.entries == {"kept": {"damage": 0.5}} and reloaded.dropped_lines == [2]


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

