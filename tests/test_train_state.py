"""The resume state file: a faithful round trip without pickle, atomic replacement, refusal of bad files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from qslm import train_state
from qslm.errors import QslmError
from qslm.train_state import METADATA_KEY, TrainingState, read_state, refuse_legacy_files, write_state


def trained_state(steps: int = 3, rng_seed: int = 1) -> tuple[TrainingState, nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
        ema.update_parameters(model)
    state = TrainingState(model=model.state_dict(), optimizer=optimizer.state_dict(), ema=ema.state_dict(),
                          step=steps, history=[{"step": 1, "loss": 0.25}], seconds=1.5, options='{"lr": 0.01}',
                          python_rng=random.Random(rng_seed).getstate(), torch_rng=torch.get_rng_state(),
                          epoch_batches=[[3, 1], [0, 2]])
    return state, model, optimizer


def assert_same_tensors(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_round_trip_restores_every_part(tmp_path):
    state, model, optimizer = trained_state()
    path = tmp_path / train_state.STATE_FILE
    write_state(path, state)
    loaded = read_state(path, tmp_path)
    assert_same_tensors(loaded.model, state.model)
    assert_same_tensors(loaded.ema, state.ema)
    assert (loaded.step, loaded.history, loaded.seconds, loaded.options, loaded.epoch_batches) == (
        state.step, state.history, state.seconds, state.options, state.epoch_batches)
    assert loaded.python_rng == state.python_rng
    assert torch.equal(loaded.torch_rng, state.torch_rng) and loaded.torch_rng.dtype == torch.uint8
    assert loaded.optimizer["param_groups"] == state.optimizer["param_groups"]  # betas a tuple again
    assert loaded.optimizer["state"].keys() == state.optimizer["state"].keys()
    for index, entries in state.optimizer["state"].items():
        assert_same_tensors(loaded.optimizer["state"][index], entries)
    # An optimizer given the loaded state takes the same next step as the original.
    fresh = torch.optim.AdamW(model.parameters(), lr=1.0)
    fresh.load_state_dict(loaded.optimizer)
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_an_interrupted_write_leaves_the_previous_state(tmp_path, monkeypatch):
    """A run killed while writing (here: before the rename) still resumes from the state before."""
    path = tmp_path / train_state.STATE_FILE
    write_state(path, trained_state(steps=2)[0])

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_state.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_state(path, trained_state(steps=4)[0])
    assert read_state(path, tmp_path).step == 2


def test_a_safetensors_file_without_the_state_is_refused(tmp_path):
    path = tmp_path / train_state.STATE_FILE
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(QslmError, match=f"is not a qslm training state .*{METADATA_KEY}.*delete .* to start over"):
        read_state(path, tmp_path)


def state_with_metadata(tmp_path, edit) -> Path:
    """A written state file whose JSON metadata text is then replaced by ``edit(text)``."""
    path = tmp_path / train_state.STATE_FILE
    write_state(path, trained_state()[0])
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as file:
        text = file.metadata()[METADATA_KEY]
    save_file(tensors, str(path), {METADATA_KEY: edit(text)})
    return path


def test_a_malformed_python_random_state_is_refused(tmp_path):
    path = state_with_metadata(tmp_path, lambda text: json.dumps({**json.loads(text),
                                                                  "python_rng": [3, [1, 2, 3], None]}))
    with pytest.raises(QslmError, match="is not a qslm training state"):
        read_state(path, tmp_path)


def test_state_metadata_with_a_key_twice_is_refused(tmp_path):
    path = state_with_metadata(tmp_path, lambda text: text.replace("{", '{"step": 99, ', 1))
    with pytest.raises(QslmError, match="is not a qslm training state.*key 'step' appears more than once"):
        read_state(path, tmp_path)


def test_legacy_files_are_refused(tmp_path):
    refuse_legacy_files(tmp_path)  # an empty folder is fine
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(QslmError, match="checkpoint.pt is a checkpoint of an older qslm version"):
        refuse_legacy_files(tmp_path)
