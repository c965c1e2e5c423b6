"""Model folders: written and read in one place; a quantized folder reads back packed; a bad plan or a
missing file is refused by name before anything is written or built."""
from __future__ import annotations

import shutil

import pytest
import torch

from qslm.checkpoint import (
    PLAN_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_model,
    load_quantized,
    save_model,
    write_quantized_folder,
)
from qslm.errors import QslmError
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.units import find_units


def ids(loaded) -> torch.Tensor:
    return torch.randint(0, loaded.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))


def test_a_saved_folder_loads_the_same_model(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    save_model(tmp_path / "copy", loaded.model, loaded.tokenizer)
    again = load_model(tmp_path / "copy")
    assert again.config == loaded.config and again.tokenizer.to_str() == loaded.tokenizer.to_str()
    assert torch.equal(again.model(ids(loaded)), loaded.model(ids(loaded)))


def test_a_quantized_folder_loads_packed_into_a_model_of_the_config_or_a_fresh_instance(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    plan = QuantPlan({"head": QuantSpec(4)})
    out = write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path / "q")
    assert find_units(load_model(out).model)["head"].packed == QuantSpec(4)
    fresh = load_quantized(type(loaded.model)(loaded.config), out)
    assert find_units(fresh)["head"].packed == QuantSpec(4)
    assert torch.equal(fresh(ids(loaded)), load_model(out).model(ids(loaded)))


def test_a_bad_plan_is_refused_before_the_folder_is_touched(tiny_lm, tmp_path):
    loaded = load_model(tiny_lm)
    with pytest.raises(QslmError, match="closest units"):
        write_quantized_folder(loaded.model, QuantPlan({"haed": QuantSpec(4)}), loaded.tokenizer, tmp_path / "q")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, TOKENIZER_FILE, "config.json"])
def test_a_missing_file_is_named(tiny_lm, tmp_path, missing):
    folder = shutil.copytree(tiny_lm, tmp_path / "m")
    (folder / missing).unlink()
    with pytest.raises(QslmError, match=missing.replace(".", r"\.")):
        load_model(folder)


def test_a_folder_without_a_plan_is_not_loaded_as_quantized(tiny_lm):
    loaded = load_model(tiny_lm)
    with pytest.raises(QslmError, match=f"holds no {PLAN_FILE}: not a quantized model folder"):
        load_quantized(loaded.model, tiny_lm)
