"""Block-local sensitivity: the Fisher estimate by hand, block locality, agreement with the exact measure
on a bundled model, and the refusal of blocks that keep state."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qslm.analysis.hierarchy import build_hierarchy
from qslm.analysis.local_sensitivity import BlockLocalSensitivity, rank_correlation
from qslm.analysis.sensitivity import OutputReference
from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.quant.apply import WeightCache, fake_quantized
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.tasks.calibration import classification_calibration
from qslm.tasks.datasets import sst2


class Residual(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + torch.tanh(self.fc(x))


class Tiny(nn.Module):
    def __init__(self, d: int = 8, classes: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList([Residual(d) for _ in range(3)])
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def tiny_setup():
    torch.manual_seed(0)
    model = Tiny().eval()
    inputs = torch.randn(16, 8)
    return model, OutputReference(model, [inputs[:10], inputs[10:]])


def test_unchanged_model_has_zero_damage():
    model, calibration = tiny_setup()
    local = BlockLocalSensitivity(model, ["blocks.0", "blocks.1", "blocks.2"], calibration)
    assert local.damage("blocks.1") == {"damage": 0.0, "measure": "kl"}


def test_fisher_estimate_by_hand():
    model, calibration = tiny_setup()
    local = BlockLocalSensitivity(model, ["blocks.0", "blocks.1", "blocks.2"], calibration)
    # Perturb the middle block's weight and compute 1/2 sum (g * d)^2 / n directly.
    perturbation = 0.05 * torch.randn_like(model.blocks[1].fc.weight)
    expected_fisher = 0.0
    for x in calibration.inputs:
        y = model(x).argmax(-1).detach()  # the float model's own predictions: no labels needed
        h0 = model.blocks[0](x).detach()
        h1 = model.blocks[1](h0).detach().requires_grad_(True)
        loss = F.cross_entropy(model.head(model.blocks[2](h1)), y, reduction="sum")
        grad, = torch.autograd.grad(loss, h1)
        with torch.no_grad():
            delta = h0 + torch.tanh(F.linear(h0, model.blocks[1].fc.weight + perturbation,
                                             model.blocks[1].fc.bias)) - h1
        expected_fisher += 0.5 * float((grad * delta).pow(2).sum())
    with torch.no_grad():
        model.blocks[1].fc.weight += perturbation
    result = local.damage("blocks.1")
    assert result["damage"] == pytest.approx(expected_fisher / 16, rel=1e-4) and result["damage"] > 0


def test_measurement_runs_only_its_block():
    model, calibration = tiny_setup()
    local = BlockLocalSensitivity(model, ["blocks.0", "blocks.1", "blocks.2"], calibration)
    calls = {name: 0 for name in ("blocks.0", "blocks.1", "blocks.2", "head")}
    for name in calls:
        module = dict(model.named_modules())[name]
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    local.damage("blocks.2")
    assert calls == {"blocks.0": 0, "blocks.1": 0, "blocks.2": 2, "head": 0}  # one call per batch
    with pytest.raises(QslmError, match="no block 'head'"):
        local.damage("head")


class Stateful(nn.Module):
    """Adds a running counter: a block whose output depends on earlier calls."""
    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) + self.calls


def test_blocks_that_keep_state_are_refused_by_name():
    model, calibration = tiny_setup()
    model.blocks[1] = Stateful(8)
    with pytest.raises(QslmError, match="block 'blocks.1' gives another output when re-run"):
        BlockLocalSensitivity(model, ["blocks.0", "blocks.1", "blocks.2"], calibration)


def test_rank_correlation_compares_orders_not_values():
    assert rank_correlation([0.1, 0.2, 0.3, 0.4], [1.0, 10.0, 100.0, 1000.0]) == pytest.approx(1.0)
    assert rank_correlation([0.1, 0.2, 0.3, 0.4], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # ranks 0,1,2,3 against 1,0,3,2: 1 - 6 * 4 / (4 * 15) = 0.6
    assert rank_correlation([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0]) == pytest.approx(0.6)


@pytest.mark.slow
def test_ranks_units_like_the_exact_measure_on_a_bundled_model(data_dir):
    """On the bundled SpikeGPT classifier the local estimate orders (unit, bit-width) pairs almost as the
    exact whole-model KL does (measured over all block units at 2/3/4 bits: Spearman 0.90,
    bench/sensitivity_rank_bench.py)."""
    loaded = load_model("spikegpt-sst2")
    model = loaded.model
    held = sorted(sst2.calibration_examples(data_dir), key=lambda ex: -len(ex.sentence.split()))[:32]
    calibration = classification_calibration(loaded.tokenizer, held, loaded.config.ctx_len)
    reference = OutputReference(model, [(ids, mask) for ids, mask, _ in calibration.batches])
    hierarchy = build_hierarchy(model)
    local = BlockLocalSensitivity(model, [b.name for b in hierarchy.blocks], reference)
    cache = WeightCache()
    exact, estimate = [], []
    for block in hierarchy.blocks[:2]:
        for unit in block.modules:
            for bits in (2, 4):
                with fake_quantized(model, QuantPlan({unit: QuantSpec(bits)}), cache):
                    exact.append(reference.damage()["damage"])
                    estimate.append(local.damage(block.name)["damage"])

    spearman = rank_correlation(exact, estimate)
    assert spearman > 0.75, (spearman, exact, estimate)
