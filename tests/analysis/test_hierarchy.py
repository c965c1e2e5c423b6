"""Hierarchy profiling: blocks, modules and top-level units found from the module tree of any model,
and neurons (qslm LIF and snnTorch Leaky) found while the model runs."""
from __future__ import annotations

import json

import pytest
import snntorch as snn
import torch
from torch import nn

from qslm.analysis.hierarchy import build_hierarchy
from qslm.analysis.neurons import SpikeRecord, SpikeRecorder, measure_firing_rates
from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.models.neurons import LIF, lif_modules
from qslm.quant.quantizer import QuantSpec

SPIKEGPT_MODULES = ["att.key", "att.value", "att.receptance", "att.output", "ffn.key", "ffn.receptance", "ffn.value"]
ENCODER_MODULES = ["attn.query", "attn.key", "attn.value", "attn.proj", "mlp.fc1", "mlp.fc2"]


def block_layout(hierarchy) -> dict[str, list[str]]:
    return {block.name: block.modules for block in hierarchy.blocks}


def test_spikegpt_language_model(tiny_lm):
    model = load_model(tiny_lm).model
    hierarchy = build_hierarchy(model)
    assert hierarchy.containers == ["blocks"]
    assert block_layout(hierarchy) == {f"blocks.{i}": [f"blocks.{i}.{m}" for m in SPIKEGPT_MODULES] for i in range(2)}
    assert hierarchy.top_level == ["emb", "head"]
    assert hierarchy.all_units() == ["emb", *block_layout(hierarchy)["blocks.0"], *block_layout(hierarchy)["blocks.1"],
                                     "head"]
    d, vocab = 32, model.config.vocab_size
    block = hierarchy.blocks[0]
    assert block.parameters == 4 * d * d + 4 * d * d + d * d + 4 * d * d
    assert block.bytes_fp32 == 4 * block.parameters
    # ln0 lives only in block 0; norms and time-mix vectors stay float and are counted apart
    assert block.other_parameters == sum(p.numel() for p in model.blocks[0].parameters()) - block.parameters
    assert hierarchy.blocks[1].other_parameters < block.other_parameters
    assert hierarchy.units["head"].numel == vocab * d
    assert hierarchy.units["emb"].kind == "Embedding"
    assert hierarchy.parameters == sum(p.numel() for p in model.parameters())
    assert hierarchy.block_of("blocks.1.ffn.value") == "blocks.1"
    assert hierarchy.block_of("head") is None
    assert list(hierarchy.groups()) == ["emb", "blocks.0", "blocks.1", "head"]


def test_spikegpt_classifier_keeps_classifier_top_level(tiny_classifier):
    hierarchy = build_hierarchy(load_model(tiny_classifier).model)
    assert hierarchy.top_level == ["emb", "classifier"]
    assert len(hierarchy.blocks) == 2


def test_spiking_encoder(tiny_encoder):
    hierarchy = build_hierarchy(load_model(tiny_encoder).model)
    assert block_layout(hierarchy) == {f"blocks.{i}": [f"blocks.{i}.{m}" for m in ENCODER_MODULES] for i in range(2)}
    assert hierarchy.top_level == ["emb", "pos_emb", "classifier"]
    assert list(hierarchy.groups()) == ["emb", "pos_emb", "blocks.0", "blocks.1", "classifier"]


def lif_outputs(model: nn.Module) -> tuple[dict[str, list[torch.Tensor]], list]:
    """Every output of each LIF of ``model`` from now on (by forward hooks), and the hooks' handles."""
    outputs = {name: [] for name in lif_modules(model)}
    handles = [neuron.register_forward_hook(lambda _m, _args, out, seen=outputs[name]: seen.append(out))
               for name, neuron in lif_modules(model).items()]
    return outputs, handles


def test_lif_firing_rates_are_their_spikes_over_their_outputs(tiny_encoder):
    model = load_model(tiny_encoder).model
    with torch.no_grad():
        model.emb.weight.normal_(std=2.0)  # make the random model spike
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    hierarchy = build_hierarchy(model)
    outputs, handles = lif_outputs(model)
    with torch.no_grad(), SpikeRecorder(model) as recorded:
        model(ids)
        model(ids[:1])
    for handle in handles:
        handle.remove()
    own = {name: sum(float(o.sum()) for o in seen) / sum(o.numel() for o in seen) for name, seen in outputs.items()}
    assert list(recorded.rates) == list(own)
    for name, rate in own.items():
        assert recorded.rates[name] == pytest.approx(rate)
    hierarchy.attach_firing_rates(recorded.records)
    block = hierarchy.blocks[0]
    assert set(block.neurons) == {n for n in own if n.startswith("blocks.0.")}
    spikes = sum(r.spikes for r in block.neurons.values())
    elements = sum(r.elements for r in block.neurons.values())
    assert 0 < block.firing_rate == pytest.approx(spikes / elements)
    assert hierarchy.neurons_outside_blocks == {}
    json.dumps(hierarchy.to_dict())


def test_spikegpt_firing_rates_from_a_run_function(tiny_lm):
    model = load_model(tiny_lm).model
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    records = measure_firing_rates(model, lambda: model(ids))
    assert list(records) == ["blocks.0.lif1", "blocks.0.lif2", "blocks.1.lif1", "blocks.1.lif2"]
    assert all(r.elements == 9 * 32 for r in records.values())


def test_attached_bare_rates_are_averaged():
    model = nn.Sequential(nn.Linear(2, 2), LIF(), nn.Linear(2, 2), LIF())
    hierarchy = build_hierarchy(model)
    hierarchy.attach_firing_rates({"1": 0.25, "3": 0.5})
    assert hierarchy.firing_rates() == {"0": 0.25, "2": 0.5}


def threshold_net() -> nn.Sequential:
    """Linear -> Leaky -> Linear -> Leaky -> Linear with weights chosen so the spikes are known."""
    net = nn.Sequential(nn.Linear(4, 4, bias=False), snn.Leaky(beta=0.5, init_hidden=True),
                        nn.Linear(4, 4, bias=False), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[2].weight.copy_(torch.diag(torch.tensor([2.0, 0.0, 0.5, 0.0])))
    return net


def test_snntorch_sequential_model():
    net = threshold_net()
    hierarchy = build_hierarchy(net)
    assert block_layout(hierarchy) == {"0": ["0"], "2": ["2"], "4": ["4"]}
    assert hierarchy.top_level == []
    # Leaky fires when membrane > threshold (1): first layer spikes [1, 0, 1, 0], second [1, 0, 0, 0]
    records = measure_firing_rates(net, lambda: net(torch.tensor([[2.0, 0.0, 3.0, 0.5]])))
    assert {name: (r.spikes, r.elements) for name, r in records.items()} == {"1": (2.0, 4), "3": (1.0, 4)}
    hierarchy.attach_firing_rates(records)
    # a neuron between blocks spikes on the output of the block before it
    assert hierarchy.firing_rates() == {"0": 0.5, "2": 0.25, "4": None}


class LeakyBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.lif = snn.Leaky(beta=0.9)  # returns (spikes, membrane)
        self.pass_through = nn.Dropout(0.0)  # binary in, binary out, no threshold: not a neuron

    def forward(self, x):
        spikes, _ = self.lif(self.fc(x), self.lif.init_leaky())
        return self.pass_through(spikes)


class LeakyNet(nn.Module):
    def __init__(self, width: int = 8, depth: int = 3):
        super().__init__()
        self.encoder = nn.Linear(5, width)
        self.layers = nn.ModuleList([LeakyBlock(width) for _ in range(depth)])
        self.readout = nn.Linear(width, 2)

    def forward(self, x):
        x = self.encoder(x)
        for layer in self.layers:
            x = layer(x * 10.0)
        return self.readout(x)


def test_snntorch_model_with_a_list_of_blocks():
    torch.manual_seed(0)
    net = LeakyNet().eval()
    hierarchy = build_hierarchy(net)
    assert block_layout(hierarchy) == {f"layers.{i}": [f"layers.{i}.fc"] for i in range(3)}
    assert hierarchy.top_level == ["encoder", "readout"]
    x = torch.randn(16, 5)
    records = measure_firing_rates(net, lambda: net(x))
    assert list(records) == ["layers.0.lif", "layers.1.lif", "layers.2.lif"]
    hierarchy.attach_firing_rates(records)
    for i, rate in enumerate(hierarchy.firing_rates().values()):
        assert rate == records[f"layers.{i}.lif"].rate
        assert 0 < rate < 1


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 2)


class NestedBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList([Head(), Head()])
        self.out = nn.Linear(4, 4)


class NestedModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.stages = nn.Sequential(NestedBlock(), NestedBlock(), NestedBlock())


def test_nested_repeated_containers_use_the_outermost():
    hierarchy = build_hierarchy(NestedModel())
    assert hierarchy.containers == ["stages"]
    assert block_layout(hierarchy) == {
        f"stages.{i}": [f"stages.{i}.heads.0.proj", f"stages.{i}.heads.1.proj", f"stages.{i}.out"] for i in range(3)}
    assert hierarchy.top_level == ["emb"]


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 4, 3)
        self.neurons = nn.ModuleList([LIF(), LIF()])  # repeated, but holds no units: no blocks
        self.head = nn.Linear(4, 3)


def test_model_without_repeated_container_is_all_top_level():
    hierarchy = build_hierarchy(Flat())
    assert hierarchy.blocks == [] and hierarchy.containers == []
    assert hierarchy.top_level == ["emb", "conv", "head"]
    assert hierarchy.groups() == {"emb": ["emb"], "conv": ["conv"], "head": ["head"]}
    assert hierarchy.units["conv"].numel == 4 * 4 * 3  # the bias is a fixed float tensor


def test_model_without_quantizable_modules_is_an_error():
    with pytest.raises(QslmError, match="the profiler found no quantizable units in Sequential"):
        build_hierarchy(nn.Sequential(nn.LayerNorm(4), nn.ReLU()))


def test_unknown_unit_and_block_are_errors(tiny_lm):
    hierarchy = build_hierarchy(load_model(tiny_lm).model)
    with pytest.raises(QslmError, match="'blocks.0.ln1' is not a quantizable unit"):
        hierarchy.block_of("blocks.0.ln1")
    with pytest.raises(QslmError, match="no block 'blocks.9'"):
        hierarchy.block("blocks.9")


def test_spike_record_rate():
    assert SpikeRecord(3.0, 12).rate == 0.25
    assert SpikeRecord().rate == 0.0


def test_loaded_quantized_model_keeps_the_hierarchy(tiny_encoder, tmp_path):
    from qslm.quant import quantize

    float_hierarchy = build_hierarchy(load_model(tiny_encoder).model)
    quantize(tiny_encoder, bits=4, out=tmp_path / "q4")
    packed = build_hierarchy(load_model(tmp_path / "q4").model)
    assert block_layout(packed) == block_layout(float_hierarchy)
    assert packed.top_level == float_hierarchy.top_level
    assert packed.parameters == float_hierarchy.parameters
    for name, unit in packed.units.items():
        assert (unit.shape, unit.numel) == (float_hierarchy.units[name].shape, float_hierarchy.units[name].numel)
        assert unit.packed == QuantSpec(4, scale_dtype="float16")
    assert packed.units["blocks.0.mlp.fc1"].kind == "Linear"
    assert [b.other_parameters for b in packed.blocks] == [b.other_parameters for b in float_hierarchy.blocks]
