"""Reading torch.save'd state dicts without running code from the file."""
from __future__ import annotations

import pickle
import random
import re
import zipfile

import pytest
import torch

from qslm.convert.torch_checkpoint import load_state_dict
from qslm.errors import QslmError


def test_pickle_needing_code_is_refused_without_running_it(hostile_checkpoint, tmp_path):
    marker = tmp_path / "marker"
    path = hostile_checkpoint(tmp_path / "hostile.pth", marker)
    with pytest.raises(QslmError, match="hostile.pth needs full unpickling") as err:
        load_state_dict(path, [])
    assert "refused" in str(err.value)
    assert not marker.exists()
    # The file really runs its payload when fully unpickled: the test would notice a loader that did.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_state_dict_loads_as_is(tmp_path):
    state = {"a.weight": torch.randn(3, 2).to(torch.bfloat16), "b": torch.arange(4)}
    torch.save(state, tmp_path / "plain.pth")
    notes: list[str] = []
    loaded = load_state_dict(tmp_path / "plain.pth", notes)
    assert set(loaded) == set(state) and notes == []
    assert loaded["a.weight"].dtype == torch.bfloat16 and torch.equal(loaded["a.weight"], state["a.weight"])


def test_wrapper_and_parallel_prefix_are_removed_with_notes(tmp_path):
    torch.save({"model": {"module.x": torch.ones(1), "module.y": torch.zeros(2)}, "step": 10}, tmp_path / "w.pth")
    notes: list[str] = []
    assert set(load_state_dict(tmp_path / "w.pth", notes)) == {"x", "y"}
    assert notes[0] == "read the state dict under 'model' in w.pth (ignored entries that are not tensors: step)"
    assert "'module.' prefix" in notes[1]


@pytest.mark.parametrize("content, expected", [
    (None, "missing checkpoint"),
    (b"", "is not a PyTorch checkpoint"),
    (b"certainly not a checkpoint", "is not a PyTorch checkpoint"),
    ([torch.ones(1)], "holds a list, not a state dict"),
    ({"w": torch.ones(1), "epoch": 3}, "epoch is not named tensors"),
    ({}, "empty dict"),
])
def test_not_a_state_dict(tmp_path, content, expected):
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(QslmError, match=expected) as err:
        load_state_dict(path, [])
    assert str(path) in str(err.value)


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"w": [1, 2]}, handle, protocol=4)
    with pytest.raises(QslmError, match="plain.pkl is not a PyTorch checkpoint"):
        load_state_dict(path, [])


def test_legacy_format_loads_and_is_guarded_the_same(hostile_checkpoint, tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict(tmp_path / "legacy.pth", [])["w"], torch.ones(2))
    marker = tmp_path / "marker"
    path = hostile_checkpoint(tmp_path / "hostile.pth", marker, legacy=True)
    with pytest.raises(QslmError, match="needs full unpickling"):
        load_state_dict(path, [])
    assert not marker.exists()


@pytest.mark.parametrize("data_pkl", [random.Random(0).randbytes(4096), b"", bytes(64)],
                         ids=["random", "empty", "zeros"])
def test_a_zip_whose_pickle_is_garbage_is_not_a_checkpoint(tmp_path, data_pkl):
    """torch's restricted unpickler reports garbage as a pickle it will not load; it is no pickle at all."""
    torch.save({"w": torch.ones(2)}, tmp_path / "good.pth")
    path = tmp_path / "garbage.pth"
    with zipfile.ZipFile(tmp_path / "good.pth") as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            target.writestr(name, data_pkl if name.endswith("/data.pkl") else source.read(name))
    with pytest.raises(QslmError, match=f"^{re.escape(str(path))} is not a PyTorch checkpoint") as err:
        load_state_dict(path, [])
    assert "unpickling" not in str(err.value) and ": )" not in str(err.value)  # no empty reason either
