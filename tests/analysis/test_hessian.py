"""Hutchinson's Hessian-trace estimator against exact traces on models small enough to differentiate twice."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qslm.analysis.hessian import hutchinson_traces
from qslm.analysis.sensitivity import OutputReference


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def calibration(model: nn.Module, batches: int = 2, size: int = 6) -> OutputReference:
    generator = torch.Generator().manual_seed(1)
    return OutputReference(model, [torch.randn(size, 4, generator=generator) for _ in range(batches)])


def exact_trace(model: nn.Module, name: str, calibration: OutputReference, max_batches: int) -> float:
    """Mean over batches of tr(d2 loss / d weight2), from the full Hessian of that weight, for the
    cross-entropy with the float model's own predictions."""
    module = dict(model.named_modules())[name]
    total = 0.0
    for x, reference in list(zip(calibration.inputs, calibration.reference))[:max_batches]:
        targets = reference[0].argmax(-1)
        def loss_of(weight):
            original = module.weight
            del module.weight
            module.weight = weight
            try:
                return F.cross_entropy(model(x), targets)
            finally:
                module.weight = original
        hessian = torch.autograd.functional.hessian(loss_of, module.weight.detach().clone())
        total += float(hessian.reshape(module.weight.numel(), -1).diagonal().sum())
    return total / min(max_batches, len(calibration.inputs))


def test_single_linear_matches_closed_form():
    """Softmax regression: tr H = mean_n sum_k p_k (1 - p_k) * |x_n|^2."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    data = calibration(model, batches=1, size=8)
    x = data.inputs[0]
    p = model(x).softmax(-1).detach()
    closed_form = float(((p * (1 - p)).sum(-1) * x.pow(2).sum(-1)).mean())
    estimate = hutchinson_traces(model, {"0": model[0].weight}, data, samples=400, seed=0)["0"]
    assert estimate == pytest.approx(closed_form, rel=0.1)


def test_two_layers_match_exact_hessian_traces():
    torch.manual_seed(0)
    model = TwoLayer()
    data = calibration(model, batches=3)
    units = {"fc1": model.fc1.weight, "fc2": model.fc2.weight}
    estimate = hutchinson_traces(model, units, data, samples=400, max_batches=2, seed=0)
    for name in units:
        assert estimate[name] == pytest.approx(exact_trace(model, name, data, max_batches=2), rel=0.15)


def test_seeded_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = TwoLayer()
    model.fc1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = calibration(model)
    units = {"fc1": model.fc1.weight, "fc2": model.fc2.weight}
    first = hutchinson_traces(model, units, data, samples=3, seed=5)
    assert first == hutchinson_traces(model, units, data, samples=3, seed=5)
    assert first != hutchinson_traces(model, units, data, samples=3, seed=6)
    assert not model.fc1.weight.requires_grad and model.fc2.weight.requires_grad
    assert model.fc1.weight.grad is None and model.fc2.weight.grad is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unit_outside_the_loss_has_zero_trace():
    torch.manual_seed(0)
    model = TwoLayer()
    unused = nn.Linear(2, 2)
    traces = hutchinson_traces(model, {"fc2": model.fc2.weight, "unused": unused.weight}, calibration(model),
                               samples=2)
    assert traces["unused"] == 0.0 and traces["fc2"] > 0
    assert hutchinson_traces(model, {"unused": unused.weight}, calibration(model), samples=2) == {"unused": 0.0}
