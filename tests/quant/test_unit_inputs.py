"""Unit input recording: H = 2/n sum x x^T per unit, wherever and however its weight is used."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qslm.errors import QslmError
from qslm.quant.unit_inputs import UnitInputRecorder, record_hessians


def second_moment(x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).double()
    return 2 * rows.t() @ rows / rows.shape[0]


class Uses(nn.Module):
    """One weight per way of using it; ``left`` is square, so orientation cannot come from shapes."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.linear = nn.Linear(6, 5)
        self.bare = nn.Parameter(torch.randn(4, 6))  # [out, in], through F.linear
        self.right = nn.Parameter(torch.randn(3, 6))  # x @ right.t()
        self.left = nn.Parameter(torch.randn(6, 6))  # left @ x^T
        self.inner = nn.Parameter(torch.randn(6, 2))  # x @ inner: contracts its first dimension
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, ids):
        x = self.emb(ids)
        self.seen["x"] = x
        a = self.linear(x)
        b = F.linear(x, self.bare)
        c = x @ self.right.t()
        d = self.left @ x.transpose(-1, -2)
        e = x @ self.inner
        return a.sum() + b.sum() + c.sum() + d.sum() + e.sum()


def test_every_way_of_using_a_weight():
    torch.manual_seed(0)
    model = Uses()
    ids = torch.randint(0, 10, (3, 7))
    hessians = record_hessians(model, [ids])
    expected = second_moment(model.seen["x"])
    assert set(hessians) == {"linear", "bare", "right", "left"}  # not emb (a look-up), not inner (rows are inputs)
    for name, entry in hessians.items():
        assert entry.samples == 21, name
        assert torch.allclose(entry.hessian, expected), name


def test_inputs_accumulate_over_batches_and_places():
    torch.manual_seed(0)
    shared = nn.Linear(4, 4, bias=False)
    model = nn.Sequential(shared, nn.ReLU(), shared)  # one tensor used twice: one unit
    batches = [torch.randn(5, 4), torch.randn(3, 4)]
    hessians = record_hessians(model, batches)
    with torch.no_grad():
        seen = torch.cat([torch.cat([b, torch.relu(shared(b))]) for b in batches])
    assert list(hessians) == ["0"] and hessians["0"].samples == 16
    assert torch.allclose(hessians["0"].hessian, second_moment(seen))


def test_recording_leaves_outputs_and_nothing_behind():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(6, 4)
    reference = model(x)
    with UnitInputRecorder(model) as recorder:
        assert torch.equal(model(x), reference)
    assert set(recorder.hessians()) == {"0", "2"}
    assert recorder.hessians()["2"].xtx.dtype == torch.float64 and recorder.hessians()["2"].xtx.shape == (3, 3)


def test_no_batches_is_an_error():
    with pytest.raises(QslmError, match="no calibration batches"):
        record_hessians(nn.Linear(2, 2), [])


def test_output_error_is_the_mean_squared_change_of_the_outputs_on_the_recorded_inputs():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=False)
    batches = [torch.randn(4, 2, 5), torch.randn(6, 5)]
    entry = record_hessians(layer, batches)["weight"]
    delta = torch.randn(3, 5) * 0.1
    inputs = torch.cat([b.reshape(-1, 5) for b in batches]).double()
    expected = (inputs @ delta.double().t()).square().sum(dim=1).mean()
    assert entry.output_error(delta) == pytest.approx(float(expected), rel=1e-6)
    assert entry.output_error(torch.zeros(3, 5)) == 0.0
