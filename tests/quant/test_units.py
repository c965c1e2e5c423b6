"""Units: every floating weight matrix of a model, whatever holds it, named once however often it is
used; ``ignore`` globs match names and parameter paths."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qslm.errors import QslmError
from qslm.quant.units import alias_owner, find_units, unit_tensor


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.conv = nn.Conv1d(6, 6, 3)
        self.proj = nn.Linear(6, 6)
        self.mix = nn.Parameter(torch.randn(6, 6))  # a bare matrix, used through F.linear
        self.gain = nn.Parameter(torch.ones(1, 6))  # a row vector: not a unit
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: one unit in two places


def test_every_weight_matrix_is_a_unit_once():
    units = find_units(Mixed())
    assert list(units) == ["mix", "embed", "conv", "proj"]  # model order: the root's own parameters first
    assert [units[n].kind for n in units] == ["Parameter", "Embedding", "Conv1d", "Linear"]
    assert units["embed"].aliases == ("head.weight",) and units["embed"].places == ("embed.weight", "head.weight")
    assert units["conv"].shape == (6, 6, 3) and units["conv"].numel == 108
    assert units["mix"].path == "mix"  # a parameter of the root module


def test_unit_tensor_is_the_models_own_parameter_and_aliases_name_their_owner():
    model = Mixed()
    units = find_units(model)
    assert unit_tensor(model, units["proj"]) is model.proj.weight
    assert unit_tensor(model, units["embed"]) is model.head.weight
    assert alias_owner(model, "head.weight") == "embed" and alias_owner(model, "head") == "embed"
    assert alias_owner(model, "proj.weight") is None


def test_ignore_matches_names_and_parameter_paths():
    assert list(find_units(Mixed(), ignore=["head.weight"])) == ["mix", "conv", "proj"]  # the tied unit by its alias
    assert list(find_units(Mixed(), ignore=["c*", "m?x"])) == ["embed", "proj"]


@pytest.mark.parametrize("ignore, said", [
    (["nothing"], "ignore pattern 'nothing' matches no unit of the model (units are named like mix, embed, conv"),
    ("conv", "ignore must be a list of glob patterns, got the string 'conv'"),
    ([""], "ignore patterns must be non-empty strings"),
])
def test_bad_ignore_patterns_are_refused_by_name(ignore, said):
    with pytest.raises(QslmError, match=said.replace("(", r"\(")):
        find_units(Mixed(), ignore=ignore)
