"""Neurons found by behaviour in models built with snnTorch, SpikingJelly and by hand, their firing rates
checked against counts taken from the neurons' own outputs, and their state reset between forwards."""
from __future__ import annotations

from typing import Callable

import pytest
import snntorch as snn
import torch
from spikingjelly.activation_based import neuron as sj
from torch import nn

from qslm.analysis.hierarchy import build_hierarchy
from qslm.analysis.neurons import SpikeRecorder, measure_firing_rates
from qslm.models.neuron_state import reset_neuron_states
from qslm.models.neurons import LIF

WIDTH, VOCAB, DEPTH, STEPS = 8, 13, 3, 3


class LearnableThresholdNeuron(nn.Module):
    """Leaf, stateless: fires where the input reaches a threshold that training may move."""

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= self.threshold).to(x.dtype)


class Heaviside(nn.Module):
    """A spike function as a module: binary output from dense input, but no threshold of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= 0).to(x.dtype)


class IntegrateAndFire(nn.Module):
    """Not a leaf: integrates over the leading (time) axis and fires through a child spike function."""

    def __init__(self, v_th: float = 1.0):
        super().__init__()
        self.v_th = v_th
        self.spike = Heaviside()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x_seq[0])
        out = []
        for x in x_seq:
            v = v + x
            s = self.spike(v - self.v_th)
            v = v * (1 - s)
            out.append(s)
        return torch.stack(out)


class Block(nn.Module):
    """Linear -> neuron -> a pass-through on the spikes (binary in, binary out, no threshold: no neuron).

    Keeps every spike tensor its neuron emitted, so the tests count spikes without the recorder's hooks.
    """

    def __init__(self, neuron: nn.Module):
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.neuron = neuron
        self.pass_through = nn.Identity()
        self.emitted: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.neuron(self.fc(x))
        spikes = out[0] if isinstance(out, tuple) else out  # snnTorch: (spk, mem) or (spk, syn, mem)
        self.emitted.append(spikes.detach().clone())
        return self.pass_through(spikes)


class SpikingLM(nn.Module):
    """Embedding, a ModuleList of blocks, a head. Single-step neurons are called once per time step,
    multi-step ones once on a [T, batch, length, width] sequence."""

    def __init__(self, make_neuron: Callable[[], nn.Module], multi_step: bool):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.blocks = nn.ModuleList([Block(make_neuron()) for _ in range(DEPTH)])
        self.head = nn.Linear(WIDTH, VOCAB)
        self.multi_step = multi_step

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h * 6.0)  # gain so that every layer fires some, not all
        return self.head(h)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        if self.multi_step:
            return self.run_blocks(x.expand(STEPS, *x.shape)).mean(0)
        return sum(self.run_blocks(x) for _ in range(STEPS)) / STEPS


NEURONS = {
    "snntorch-leaky-hidden": (lambda: snn.Leaky(beta=0.8, init_hidden=True), False),
    "snntorch-leaky": (lambda: snn.Leaky(beta=0.8), False),
    "snntorch-synaptic-hidden": (lambda: snn.Synaptic(alpha=0.7, beta=0.8, init_hidden=True), False),
    "snntorch-synaptic": (lambda: snn.Synaptic(alpha=0.7, beta=0.8), False),
    "snntorch-rleaky-hidden": (lambda: snn.RLeaky(beta=0.8, linear_features=WIDTH, init_hidden=True), False),
    "snntorch-rleaky": (lambda: snn.RLeaky(beta=0.8, linear_features=WIDTH), False),
    "spikingjelly-lif-s": (lambda: sj.LIFNode(step_mode="s"), False),
    "spikingjelly-lif-m": (lambda: sj.LIFNode(step_mode="m"), True),
    "spikingjelly-if-s": (lambda: sj.IFNode(step_mode="s"), False),
    "spikingjelly-if-m": (lambda: sj.IFNode(step_mode="m"), True),
    "spikingjelly-plif-s": (lambda: sj.ParametricLIFNode(step_mode="s"), False),
    "spikingjelly-plif-m": (lambda: sj.ParametricLIFNode(step_mode="m"), True),
    "hand-learnable-threshold": (LearnableThresholdNeuron, False),
    "hand-non-leaf": (IntegrateAndFire, True),
    "qslm-lif": (LIF, True),
}
STATEFUL = [k for k in NEURONS if k.startswith(("snntorch", "spikingjelly"))]
NEURON_NAMES = [f"blocks.{i}.neuron" for i in range(DEPTH)]


def build(kind: str) -> SpikingLM:
    make_neuron, multi_step = NEURONS[kind]
    torch.manual_seed(0)
    return SpikingLM(make_neuron, multi_step)


def token_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1))


def emitted_rate(block: Block) -> tuple[float, int]:
    return (sum(float(s.sum()) for s in block.emitted), sum(s.numel() for s in block.emitted))


@pytest.mark.parametrize("kind", list(NEURONS))
def test_every_neuron_is_found_and_counted(kind):
    model = build(kind)
    ids = token_ids()
    with torch.no_grad():
        records = measure_firing_rates(model, lambda: [model(ids), model(ids)])
    # only the neurons: not the blocks that return their spikes, not the pass-throughs, not spike functions
    assert list(records) == NEURON_NAMES
    for name, block in zip(NEURON_NAMES, model.blocks):
        spikes, elements = emitted_rate(block)
        assert (records[name].spikes, records[name].elements) == (spikes, elements)
        assert elements == 2 * STEPS * ids.numel() * WIDTH
        assert 0 < records[name].rate < 1

    hierarchy = build_hierarchy(model)
    hierarchy.attach_firing_rates(records)
    assert [list(block.neurons) for block in hierarchy.blocks] == [[name] for name in NEURON_NAMES]
    for block, name in zip(hierarchy.blocks, NEURON_NAMES):
        assert block.firing_rate == pytest.approx(records[name].rate)
    assert hierarchy.neurons_outside_blocks == {}


def test_a_neuron_fed_spikes_is_found_by_its_threshold():
    """Binary in and binary out: the learnable threshold makes the second one a neuron, Identity is none."""
    model = nn.Sequential(nn.Linear(4, 4), LearnableThresholdNeuron(0.0), LearnableThresholdNeuron(0.5),
                          nn.Identity(), nn.Linear(4, 2))
    with torch.no_grad():
        records = measure_firing_rates(model, lambda: model(torch.randn(6, 4)))
    assert list(records) == ["1", "2"]
    assert records["2"].spikes == records["1"].spikes  # spikes pass a 0.5 threshold unchanged


class ThresholdedWrapper(nn.Module):
    """A wrapper around a neuron that happens to carry a threshold attribute itself."""

    def __init__(self):
        super().__init__()
        self.threshold = 1.0
        self.inner = sj.LIFNode(step_mode="m")

    def forward(self, x):
        return self.inner(x)


def test_a_wrapper_around_a_neuron_is_not_a_neuron():
    model = nn.Sequential(nn.Linear(4, 4), ThresholdedWrapper(), nn.Linear(4, 2))
    with torch.no_grad():
        records = measure_firing_rates(model, lambda: model(3 * torch.randn(STEPS, 2, 4)))
    assert list(records) == ["1.inner"]


def test_modules_seen_as_binary_once_but_dense_later_are_not_neurons():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad(), SpikeRecorder(model) as recorder:
        model(torch.full((1, 4), -50.0))  # ReLU of large negatives: all zeros, binary this once
        model(torch.randn(8, 4))
    assert recorder.records == {}


def run_twice(model: SpikingLM, reset: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ids = token_ids()
    outputs = []
    with torch.no_grad():
        for _ in range(2):
            if reset:
                reset_neuron_states(model)
            outputs.append(model(ids))
    return outputs[0], outputs[1]


@pytest.mark.parametrize("kind", STATEFUL)
def test_reset_makes_identical_forwards_identical(kind):
    first, second = run_twice(build(kind), reset=False)
    assert not torch.equal(first, second)  # the membrane left by the first pass changes the second
    first, second = run_twice(build(kind), reset=True)
    assert torch.equal(first, second)


def test_reset_resets_each_stateful_neuron_and_nothing_else():
    assert reset_neuron_states(build("spikingjelly-lif-s")) == NEURON_NAMES
    assert reset_neuron_states(build("snntorch-synaptic-hidden")) == NEURON_NAMES
    assert reset_neuron_states(build("qslm-lif")) == []


class ReinitialisesOnReset(nn.Linear):
    """A ``reset()`` that means something else: it must not be called."""

    def reset(self):
        nn.init.zeros_(self.weight)


def test_reset_leaves_unrelated_reset_methods_alone():
    layer = ReinitialisesOnReset(3, 3)
    before = layer.weight.detach().clone()
    assert reset_neuron_states(nn.Sequential(layer, sj.IFNode())) == ["1"]
    assert torch.equal(layer.weight, before)
