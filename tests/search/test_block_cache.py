"""Block outputs reused between measurements: served outputs equal computed ones bit for bit, whatever
plan is applied, and blocks that cannot be reused exactly are left out with the reason."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qslm.analysis.hierarchy import build_hierarchy
from qslm.errors import QslmError
from qslm.models.neuron_state import reset_neuron_states
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.quant.apply import WeightCache, fake_quantized
from qslm.quant.neuron_spec import NeuronSpec
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.search.block_cache import BlockOutputCache
from qslm.search.block_values import copied, identical
from tests.handwritten import HandwrittenSpikingClassifier

MIB = 2 ** 20


def tiny_spikegpt() -> SpikeGPT:
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=64, n_embd=16, n_layer=3, ctx_len=12))
    for p in model.parameters():  # weights large enough that quantization moves spikes
        p.data.normal_(0, 0.5)
    return model.eval()


def build(model, sample, max_bytes=64 * MIB) -> BlockOutputCache:
    return BlockOutputCache.build(model, build_hierarchy(model), sample, reset_neuron_states, max_bytes)


def run(model, inputs, plan: QuantPlan, cache: BlockOutputCache | None, weights: WeightCache):
    """The model's outputs on each input under ``plan``, with or without the cache."""
    outputs = []
    with torch.no_grad(), fake_quantized(model, plan, weights):
        for item in inputs:
            reset_neuron_states(model)
            if cache is None:
                outputs.append(copied(model(item)))
            else:
                with cache.serving():
                    outputs.append(copied(model(item)))
    return outputs


def single_unit_plans(model, bits=(2, 3)) -> list[QuantPlan]:
    return [QuantPlan({u: QuantSpec(bits=b)}) for u in build_hierarchy(model).units for b in bits]


def test_spikegpt_blocks_and_their_mixers_are_cached():
    model = tiny_spikegpt()
    cache = build(model, torch.randint(0, 64, (2, 12)))
    assert cache.left_out == {}
    assert cache.stages[0].name == "blocks.0" and {"blocks.0.att", "blocks.0.ffn"} <= {s.name for s in cache.stages}
    att = next(s for s in cache.stages if s.name == "blocks.1.att")
    assert set(att.units) == {"blocks.1.att.key", "blocks.1.att.value", "blocks.1.att.receptance",
                              "blocks.1.att.output"}
    assert set(next(s for s in cache.stages if s.name == "blocks.1").neurons) == {"blocks.1.lif1", "blocks.1.lif2"}


@pytest.mark.slow
def test_served_outputs_equal_computed_ones_for_every_unit_and_plan():
    model = tiny_spikegpt()
    inputs = [torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    cache, weights = build(model, inputs[0]), WeightCache()
    plans = single_unit_plans(model) + [QuantPlan.uniform(model, QuantSpec(bits=3)),
                                        QuantPlan({}, {"blocks.1.lif2": NeuronSpec(2)}),  # a neuron's state only
                                        QuantPlan.uniform(model, QuantSpec(bits=4), neuron_bits=3)]
    for _ in range(3):  # seen, stored, served
        for plan in plans:
            assert all(identical(a, b) for a, b in zip(run(model, inputs, plan, cache, weights),
                                                       run(model, inputs, plan, None, weights)))
    assert cache.hits > 0 and len(cache) > 0


def test_a_unit_of_the_last_block_reuses_every_block_before_it():
    model = tiny_spikegpt()
    sample = torch.randint(0, 64, (2, 12))
    cache, weights = build(model, sample), WeightCache()
    for plan in single_unit_plans(model, bits=(2, 3, 4))[-12:-6]:  # units of the last block (then the head)
        run(model, [sample], plan, cache, weights)
    before = cache.hits
    run(model, [sample], QuantPlan({"blocks.2.ffn.value": QuantSpec(bits=5)}), cache, weights)
    # blocks.0 and blocks.1 served; in blocks.2 the time mix is served, the channel mix computed
    assert cache.hits - before == 3


def test_the_float_prefix_is_stored_on_its_second_computation_only():
    model = tiny_spikegpt()
    sample = torch.randint(0, 64, (2, 12))
    cache, weights = build(model, sample), WeightCache()
    run(model, [sample], QuantPlan({"blocks.2.att.key": QuantSpec(bits=2)}), cache, weights)
    assert len(cache) == 0 and cache.nbytes == 0
    run(model, [sample], QuantPlan({"blocks.2.att.key": QuantSpec(bits=3)}), cache, weights)
    assert len(cache) == 6  # blocks.0 and blocks.1 with their mixers: keys repeated; blocks.2.ffn reads a changed x
    run(model, [sample], QuantPlan({"blocks.2.att.key": QuantSpec(bits=4)}), cache, weights)
    assert cache.hits == 2  # blocks.0 and blocks.1


@pytest.mark.slow
def test_the_memory_bound_holds_and_evictions_change_nothing():
    model = tiny_spikegpt()
    sample = torch.randint(0, 64, (2, 12))
    one_output = 2 * 12 * 16 * 4
    for max_bytes in (1, 2 * one_output):
        cache, weights = build(model, sample, max_bytes=max_bytes), WeightCache()
        for _ in range(3):
            for plan in single_unit_plans(model):
                assert identical(run(model, [sample], plan, cache, weights), run(model, [sample], plan, None, weights))
                assert cache.nbytes <= max_bytes
        assert len(cache) <= max_bytes // one_output


def test_handwritten_model_with_tied_embedding_is_served_exactly():
    model = HandwrittenSpikingClassifier().eval()
    sample = torch.randint(0, 50, (4, 8))
    cache, weights = build(model, sample), WeightCache()
    assert [s.name for s in cache.stages] == ["stages.body.0", "stages.body.1"] and cache.left_out == {}
    assert set(cache.stages[0].units) == {"stages.body.0.w_in", "stages.body.0.w_out"}
    for _ in range(3):
        for plan in single_unit_plans(model):  # the tied embedding feeds the blocks and the head
            assert identical(run(model, [sample], plan, cache, weights), run(model, [sample], plan, None, weights))
    assert cache.hits > 0


class Residual(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        return x + torch.tanh(self.proj(x))


class Stack(nn.Module):
    def __init__(self, block=Residual, d=8, depth=2):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([block(d) for _ in range(depth)])
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Counting(Residual):
    def __init__(self, d=8):
        super().__init__(d)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x) + self.calls


class Noisy(Residual):
    def forward(self, x):
        return super().forward(x) + 0 * torch.rand_like(x)


class InPlace(Residual):
    def forward(self, x):
        x.mul_(0.5)
        return super().forward(x)


class ReturnsObject(Residual):
    def forward(self, x):
        return type("Out", (), {"value": super().forward(x)})()


class Unpacking(nn.Module):
    """The blocks' outputs wrapped in objects the model unpacks itself."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([ReturnsObject(), ReturnsObject()])

    def forward(self, x):
        for block in self.blocks:
            x = block(x).value
        return x


@pytest.mark.parametrize("block, reason", [
    (Counting, "keeps state between calls"),
    (Noisy, "draws random numbers"),
    (InPlace, "changes its arguments in place"),
])
def test_blocks_that_cannot_be_reused_exactly_are_left_out(block, reason):
    model = Stack(block).eval()
    cache = build(model, torch.randn(4, 8))
    assert cache.stages == [] and set(cache.left_out) == {"blocks.0", "blocks.1"}
    assert all(reason in why for why in cache.left_out.values())


def test_a_block_returning_an_object_is_left_out():
    model = Unpacking().eval()
    cache = build(model, torch.randn(4, 8))
    assert cache.stages == [] and "returns a Out" in cache.left_out["blocks.0"]


class HiddenShared(nn.Module):
    """Each block also applies the model's shared projection, out of sight of torch-function tracing."""

    def __init__(self, shared: list):
        super().__init__()
        self.own = nn.Linear(8, 8)
        self.shared = shared  # a plain list: the shared Linear is not this block's child

    def forward(self, x):
        with torch._C.DisableTorchFunction():
            hidden = F.linear(x, self.shared[0].weight)
        return x + torch.tanh(self.own(x)) + hidden


class SharedStack(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(8, 8, bias=False)
        self.blocks = nn.ModuleList([HiddenShared([self.shared]), HiddenShared([self.shared])])

    def forward(self, x):
        x = self.shared(x)  # seen here, outside the blocks
        for block in self.blocks:
            x = block(x)
        return x


def test_a_block_depending_on_weights_the_trace_missed_is_left_out():
    model = SharedStack().eval()
    sample = torch.randn(4, 8)
    cache = build(model, sample)
    assert cache.stages == []
    assert all("weights the trace did not see it use" in why for why in cache.left_out.values())
    plan = QuantPlan({"shared": QuantSpec(bits=2)})
    weights = WeightCache()
    for _ in range(3):
        assert identical(run(model, [sample], plan, cache, weights), run(model, [sample], plan, None, weights))


class Remembering(Residual):
    def forward(self, x):
        out = super().forward(x)
        self.last = out.detach().sum()
        return out


class ReadsBack(nn.Module):
    """The model reads a value each block leaves on itself."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([Remembering(), Remembering()])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x + self.blocks[0].last


def test_a_model_reading_what_a_block_leaves_behind_is_not_cached():
    model = ReadsBack().eval()
    cache = build(model, torch.randn(4, 8))
    assert cache.stages == [] and all("leaves behind" in why for why in cache.left_out.values())


class MutatingCaller(Stack):
    def forward(self, x):
        for block in self.blocks:
            x = block(x)
            x.mul_(1.5)  # changes the block's output in place
        return self.head(x)


def test_a_caller_changing_a_served_output_in_place_changes_nothing_held():
    model = MutatingCaller().eval()
    sample = torch.randn(4, 8)
    cache, weights = build(model, sample), WeightCache()
    assert len(cache.stages) == 2
    plan = QuantPlan({"head": QuantSpec(bits=2)})
    expected = run(model, [sample], plan, None, weights)
    for _ in range(4):
        assert identical(run(model, [sample], plan, cache, weights), expected)
    assert cache.hits >= 2


def test_gradients_bypass_the_cache():
    model = Stack().eval()
    sample = torch.randn(4, 8)
    cache = build(model, sample)
    with cache.serving():
        for _ in range(3):
            model(sample).sum().backward()
    assert cache.hits == cache.misses == 0
    assert model.blocks[0].proj.weight.grad is not None


def test_serving_puts_the_forwards_back():
    model = Stack().eval()
    cache = build(model, torch.randn(4, 8))
    with cache.serving():
        assert "forward" in model.blocks[0].__dict__
    assert all("forward" not in block.__dict__ for block in model.blocks)


def test_building_on_a_quantized_model_is_refused():
    model = Stack().eval()
    with fake_quantized(model, QuantPlan({"head": QuantSpec(bits=4)})), \
            pytest.raises(QslmError, match="built on the float model"):
        build(model, torch.randn(4, 8))
