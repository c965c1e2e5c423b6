"""SpikeGPT: shapes and gradients, the WKV recurrence against a direct reference, SpikeGPT-216M
checkpoint key compatibility, causality and padding invariance."""
from __future__ import annotations

import pytest
import torch

from qslm.analysis.neurons import SpikeRecorder
from qslm.checkpoint import load_model
from qslm.models.neurons import lif_modules
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig, time_shift, wkv, wkv_chunked, wkv_recurrent
from tests.reference_forward import reference_forward, reference_wkv


def tiny(task: str = "lm", **fields) -> SpikeGPT:
    """A small model whose neurons fire: with the default init (std 0.02) no residual update
    reaches the threshold, and tests of spiking behaviour would pass vacuously."""
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=50, n_embd=16, n_layer=2, ctx_len=24, task=task, **fields))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.5)
    return model


def assert_neurons_fire(model, *inputs):
    with torch.no_grad(), SpikeRecorder(model) as recorder:
        model(*inputs)
    assert all(0.01 < rate < 0.9 for rate in recorder.rates.values()), recorder.rates


def test_lm_forward_backward_shapes():
    model = tiny("lm")
    idx = torch.randint(0, 50, (3, 11))
    logits = model(idx)
    assert logits.shape == (3, 11, 50)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.emb.weight.grad.abs().sum() > 0
    assert model.blocks[0].att.time_decay.grad.abs().sum() > 0


def test_classification_forward_backward_shapes():
    model = tiny("classification", num_classes=3)
    idx = torch.randint(0, 50, (4, 9))
    logits = model(idx, torch.ones_like(idx))
    assert logits.shape == (4, 3)
    assert model(idx).shape == (4, 3)
    logits.sum().backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert not hasattr(model, "head")


def test_unknown_task():
    with pytest.raises(ValueError, match="task must be 'lm' or 'classification'"):
        SpikeGPT(SpikeGPTConfig(n_embd=8, n_layer=1, task="seq2seq"))


def test_blocks_hold_two_lif_neurons_each():
    assert list(lif_modules(tiny())) == ["blocks.0.lif1", "blocks.0.lif2", "blocks.1.lif1", "blocks.1.lif2"]


def test_time_shift():
    x = torch.arange(12.0).view(1, 4, 3)
    shifted = time_shift(x)
    assert shifted[0, 0].tolist() == [0, 0, 0]
    assert torch.equal(shifted[0, 1:], x[0, :-1])


def naive_wkv(time_decay, time_first, k, v):
    """RWKV-4, straight from the formula, token by token in float64:
    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (sum_{i<t} e^{-(t-1-i) w + k_i} + e^{u + k_t})
    """
    w, u = torch.exp(time_decay.double()), time_first.double()
    k, v = k.double(), v.double()
    B, T, C = k.shape
    out = torch.empty(B, T, C, dtype=torch.float64)
    for t in range(T):
        num = torch.exp(u + k[:, t]) * v[:, t]
        den = torch.exp(u + k[:, t])
        for i in range(t):
            weight = torch.exp(-(t - 1 - i) * w + k[:, i])
            num = num + weight * v[:, i]
            den = den + weight
        out[:, t] = num / den
    return out


def wkv_inputs(T: int, k_scale: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    B, C = 2, 6
    time_decay = torch.linspace(-5, 2, C)  # w from 0.007 (long memory) to 7.4 (forgets at once)
    time_first = torch.randn(C, generator=gen)
    k = torch.randn(B, T, C, generator=gen) * k_scale
    v = torch.randn(B, T, C, generator=gen)
    return time_decay, time_first, k, v


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 64])
@pytest.mark.parametrize("k_scale", [1.0, 30.0])
def test_wkv_matches_the_sequential_formula(chunk, k_scale):
    # k_scale 30 gives |k| up to ~80: e^k overflows float32, so only a stable implementation passes.
    time_decay, time_first, k, v = wkv_inputs(T=37, k_scale=k_scale)
    k[0, 5, :] = 85.0  # one dominant token
    k[1, 20:, 0] = -40.0  # tokens that barely count
    expected = naive_wkv(time_decay, time_first, k, v)
    got = wkv_chunked(time_decay, time_first, k, v, chunk=chunk)
    assert got.dtype == torch.float32 and got.shape == k.shape
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k_scale", [1.0, 30.0])
def test_wkv_recurrence_matches_the_sequential_formula(k_scale):
    """The inference path (no autograd) is the token-by-token recurrence."""
    time_decay, time_first, k, v = wkv_inputs(T=37, k_scale=k_scale)
    k[0, 5, :] = 85.0
    k[1, 20:, 0] = -40.0
    expected = naive_wkv(time_decay, time_first, k, v)
    torch.testing.assert_close(wkv_recurrent(time_decay, time_first, k, v).double(), expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(wkv(time_decay, time_first, k, v), wkv_recurrent(time_decay, time_first, k, v))


def test_wkv_chunk_size_does_not_change_the_result():
    time_decay, time_first, k, v = wkv_inputs(T=50, k_scale=3.0, seed=1)
    reference = wkv_chunked(time_decay, time_first, k, v, chunk=50)
    for chunk in (1, 5, 16, 49, 128):
        torch.testing.assert_close(wkv_chunked(time_decay, time_first, k, v, chunk=chunk), reference,
                                   rtol=1e-5, atol=1e-6)


def test_wkv_gradients_are_finite_for_large_keys():
    time_decay, time_first, k, v = wkv_inputs(T=20, k_scale=30.0)
    params = [t.clone().requires_grad_() for t in (time_decay, time_first, k, v)]
    wkv(*params, chunk=8).square().sum().backward()
    for param in params:
        assert torch.isfinite(param.grad).all()


def spikegpt_216m_state_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the published SpikeGPT-216M checkpoint (18 layers, d = 768,
    vocabulary 50277, FFN 4d), written out from the SpikeGPT/RWKV-4 naming."""
    n_layer, d, vocab = 18, 768, 50277
    shapes = {"emb.weight": (vocab, d), "head.weight": (vocab, d),
              "ln_out.weight": (d,), "ln_out.bias": (d,),
              "blocks.0.ln0.weight": (d,), "blocks.0.ln0.bias": (d,)}
    for i in range(n_layer):
        p = f"blocks.{i}."
        for norm in ("ln1", "ln2"):
            shapes[p + norm + ".weight"] = (d,)
            shapes[p + norm + ".bias"] = (d,)
        shapes[p + "att.time_decay"] = (d,)
        shapes[p + "att.time_first"] = (d,)
        for mix in ("k", "v", "r"):
            shapes[p + f"att.time_mix_{mix}"] = (1, 1, d)
        for linear in ("key", "value", "receptance", "output"):
            shapes[p + f"att.{linear}.weight"] = (d, d)
        shapes[p + "ffn.time_mix_k"] = (1, 1, d)
        shapes[p + "ffn.time_mix_r"] = (1, 1, d)
        shapes[p + "ffn.key.weight"] = (4 * d, d)
        shapes[p + "ffn.receptance.weight"] = (d, d)
        shapes[p + "ffn.value.weight"] = (d, 4 * d)
    return shapes


def test_spikegpt_216m_checkpoint_loads_strictly():
    shapes = spikegpt_216m_state_shapes()
    config = SpikeGPTConfig(vocab_size=50277, n_embd=768, n_layer=18, ctx_len=1024, ffn_mult=4)
    with torch.device("meta"):
        model = SpikeGPT(config)
        checkpoint = {name: torch.empty(shape) for name, shape in shapes.items()}
    result = model.load_state_dict(checkpoint, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == shapes
    n_params = sum(p.numel() for p in model.parameters())
    assert 214e6 < n_params < 218e6  # "216M"


def test_strict_load_rejects_a_wrong_shape():
    shapes = spikegpt_216m_state_shapes()
    shapes["blocks.3.ffn.key.weight"] = (3 * 768, 768)
    with torch.device("meta"):
        model = SpikeGPT(SpikeGPTConfig(vocab_size=50277, n_embd=768, n_layer=18))
        checkpoint = {name: torch.empty(shape) for name, shape in shapes.items()}
    with pytest.raises(RuntimeError, match="blocks.3.ffn.key.weight"):
        model.load_state_dict(checkpoint, strict=True, assign=True)


def test_lm_is_causal():
    model = tiny("lm").eval()
    idx = torch.randint(0, 50, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 50
    assert_neurons_fire(model, idx)
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[:, :12], model(changed)[:, :12])


def test_classification_ignores_right_padding():
    model = tiny("classification").eval()
    torch.manual_seed(1)
    lengths = [5, 13, 9]
    width = 16
    sequences = [torch.randint(1, 50, (n,)) for n in lengths]
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    assert_neurons_fire(model, ids, mask)
    with torch.no_grad():
        batched = model(ids, mask)
        alone = torch.cat([model(seq[None], torch.ones(1, len(seq), dtype=torch.long)) for seq in sequences])
        unmasked = torch.cat([model(seq[None]) for seq in sequences])
        # Padding with another token id changes nothing either.
        other_pad = model(torch.where(mask.bool(), ids, torch.full_like(ids, 7)), mask)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unmasked, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other_pad, batched, rtol=1e-5, atol=1e-6)


def test_dropout_acts_in_training_only():
    model = tiny("classification", dropout=0.5)
    idx = torch.randint(0, 50, (4, 9))
    model.train()
    torch.manual_seed(1)
    first = model(idx)
    assert not torch.equal(first, model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))
    assert torch.equal(tiny("classification").eval()(idx), model(idx))  # same weights, dropout off in eval


@pytest.mark.parametrize("shape", [(2, 37, 6), (3, 20, 37), (1, 1, 5), (1, 16, 8)])
@pytest.mark.parametrize("k_scale", [1.0, 30.0])
def test_wkv_recurrence_equals_the_reference_loop(shape, k_scale):
    """The inference WKV loops only over what is sequential; every value must still be the plain
    token-by-token loop's, bit for bit, and the inputs are left as they were."""
    B, T, C = shape
    gen = torch.Generator().manual_seed(3)
    time_decay, time_first = torch.linspace(-5, 2, C), torch.randn(C, generator=gen)
    k, v = torch.randn(B, T, C, generator=gen) * k_scale, torch.randn(B, T, C, generator=gen)
    k[0, T // 2, :] = 85.0  # one dominant token
    inputs = [t.clone() for t in (time_decay, time_first, k, v)]
    got = wkv_recurrent(time_decay, time_first, k, v)
    assert got.shape == (B, T, C) and got.is_contiguous()
    assert torch.equal(got, reference_wkv(time_decay, time_first, k, v))
    assert all(torch.equal(a, b) for a, b in zip(inputs, (time_decay, time_first, k, v)))


@pytest.mark.parametrize("task", ["lm", "classification"])
def test_inference_forward_equals_the_reference_loops(task):
    model = tiny(task).eval()
    idx = torch.randint(0, 50, (3, 19))
    assert_neurons_fire(model, idx)
    with torch.no_grad():
        got = model(idx)
        with reference_forward():
            expected = model(idx)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["spikegpt-wt2", "spikegpt-sst2"])
def test_bundled_model_forward_equals_the_reference_loops(name):
    model = load_model(name).model
    idx = torch.randint(1, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), SpikeRecorder(model) as fast:
        got = model(idx)
    with torch.no_grad(), reference_forward(), SpikeRecorder(model) as reference:
        expected = model(idx)
    assert torch.equal(got, expected)
    assert fast.rates == reference.rates and max(fast.rates.values()) > 0
