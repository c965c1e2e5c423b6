"""Export targets: a target registered in a test is written, read back and measured by a search with no
other file changed; unknown and duplicate names are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import qslm
from qslm.errors import QslmError
from qslm.export import export_target, register_target, target_names, unregister_target
from qslm.quant.apply import WeightCache, fake_quantized
from qslm.quant.plan import QuantPlan
from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data, train

TOY_FILE = "weights-fp16.safetensors"


class DequantizedFloat16:
    """Every tensor as float16, the quantized units dequantized: a toy target for a runtime without
    integer kernels."""
    name = "toy-fp16"

    def write(self, model: nn.Module, plan: QuantPlan, folder: Path, context=None) -> dict[str, Path]:
        with fake_quantized(model, plan, WeightCache(), context):
            state = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
        save_file(state, folder / TOY_FILE)
        return {TOY_FILE: folder / TOY_FILE}

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        model.load_state_dict({k: v.float() for k, v in load_file(folder / TOY_FILE).items()})
        return model.eval()

    def memory_bytes(self, files: dict[str, Path]) -> int:
        return sum(t.numel() * 2 for t in load_file(files[TOY_FILE]).values())

    def disk_bytes(self, model: nn.Module, plan: QuantPlan) -> int:
        return sum(t.numel() * 2 for t in model.state_dict().values()) + self.overhead_bytes(model)

    def overhead_bytes(self, model: nn.Module) -> int:
        return 4096 + sum(len(k) + 100 for k in model.state_dict())


@pytest.fixture
def toy_target():
    target = register_target(DequantizedFloat16())
    yield target
    unregister_target(target.name)


def test_a_registered_target_is_what_a_search_writes_and_measures(toy_target, tmp_path):
    torch.manual_seed(0)
    ids, labels = make_data()
    model = train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=40)
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:144], labels[96:144]), calibration=[ids[:32]],
                     higher_is_better=True, test=lambda m: accuracy(m, ids[144:], labels[144:]))
    result = qslm.search(model, task, out=tmp_path / "out", constraints=qslm.Constraints(max_drop=50.0),
                         config=qslm.SearchConfig(bit_choices=(4, 8), methods=("rtn",), export_target="toy-fp16"),
                         progress=False, cache_dir=tmp_path / "cache")
    assert result.report["final"] is not None
    assert (tmp_path / "out" / TOY_FILE).is_file() and not (tmp_path / "out" / "model.safetensors").exists()
    fp16_bytes = sum(t.numel() * 2 for t in model.state_dict().values())
    assert result.report["final"]["memory_bytes"] == fp16_bytes  # the target's own count
    reloaded = toy_target.load(HandwrittenSpikingClassifier(), tmp_path / "out")
    assert accuracy(reloaded, ids[144:], labels[144:]) == pytest.approx(result.report["final"]["metric"])


def test_the_packed_folder_is_the_default_target():
    assert "safetensors" in target_names() and qslm.SearchConfig().export_target == "safetensors"
    assert export_target("safetensors").name == "safetensors"


def test_unknown_and_duplicate_targets_are_refused(toy_target, tmp_path):
    with pytest.raises(QslmError, match=r"unknown export target 'onnx'; expected one of safetensors, toy-fp16"):
        export_target("onnx")
    with pytest.raises(QslmError, match="export target 'toy-fp16' is already registered"):
        register_target(DequantizedFloat16())
    task = qslm.Task(evaluate=lambda m: 1.0, calibration=[torch.zeros(1, 4, dtype=torch.long)])
    with pytest.raises(QslmError, match="unknown export target 'onnx'"):
        qslm.search(nn.Embedding(5, 3), task, out=tmp_path / "out", export_target="onnx")
    assert not (tmp_path / "out").exists()  # refused before the folder is claimed
