"""Spiking encoder classifier: shapes, gradients, padding invariance, spike-only Linear inputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qslm.analysis.neurons import SpikeRecorder
from qslm.checkpoint import load_model
from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig
from tests.reference_forward import reference_forward


def tiny(**fields) -> SpikingEncoder:
    """A small encoder whose attention path is active (checked by ``test_all_neurons_fire``), so the
    key-mask tests cannot pass vacuously. Normalisation biases raise the query/key/value currents."""
    torch.manual_seed(0)
    config = dict(vocab_size=50, n_embd=16, n_layer=2, n_head=2, max_len=20, time_steps=3)
    model = SpikingEncoder(SpikingEncoderConfig(**{**config, **fields})).eval()
    with torch.no_grad():
        for block in model.blocks:
            for norm in (block.attn.bn_q, block.attn.bn_k, block.attn.bn_v, block.mlp.bn1):
                norm.bias.fill_(1.2)
    return model


def padded(sequences: list[torch.Tensor], width: int, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def test_forward_backward_shapes():
    model = tiny(num_classes=3).train()
    ids = torch.randint(1, 50, (4, 10))
    logits = model(ids, torch.ones_like(ids))
    assert logits.shape == (4, 3)
    assert model(ids).shape == (4, 3)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.emb.weight.grad.abs().sum() > 0
    assert model.blocks[0].attn.query.weight.grad.abs().sum() > 0  # through the surrogate gradients


def test_all_neurons_fire():
    model = tiny()
    with torch.no_grad(), SpikeRecorder(model) as recorder:
        model(torch.randint(1, 50, (3, 12)))
    assert len(recorder.rates) == 2 * 7
    assert all(0.01 < rate < 0.9 for rate in recorder.rates.values()), recorder.rates


def test_right_padding_does_not_change_logits():
    model = tiny()
    torch.manual_seed(1)
    sequences = [torch.randint(1, 50, (n,)) for n in (4, 11, 7)]
    with torch.no_grad():
        alone = torch.cat([model(seq[None]) for seq in sequences])
        batched = model(*padded(sequences, 16))
        other_pad = model(*padded(sequences, 18, pad=9))
        no_mask = model(padded(sequences, 16)[0])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other_pad, alone, rtol=1e-5, atol=1e-6)
    # Without the mask, the padding is read as tokens: the mask is what makes this work.
    assert not torch.allclose(no_mask[0], alone[0], atol=1e-4)


def test_key_mask_hides_padding_from_attention():
    model = tiny()
    seq = torch.randint(1, 50, (6,))
    outputs = []

    def keep_attention_output(module, inputs, output):
        outputs.append(output[:, :, :6].clone())

    handle = model.blocks[0].attn.register_forward_hook(keep_attention_output)
    with torch.no_grad():
        for pad in (0, 5, 17):
            model(*padded([seq], 10, pad=pad))
    handle.remove()
    assert outputs[0].abs().sum() > 0
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0])


@pytest.mark.parametrize("attention_keys", [None, 4])
def test_averaged_attention_does_not_grow_with_the_number_of_keys(attention_keys):
    """The same token repeated N times: averaged attention gives every query the same current for any N;
    Spikformer's sum grows with N."""
    model = tiny(attention_keys=attention_keys)
    attention = model.blocks[0].attn
    torch.manual_seed(2)
    token = 2.0 * torch.rand(1, 1, 1, 16)  # [T, B, N, D], one token
    currents = []
    hook = attention.attn_lif.register_forward_hook(lambda module, inputs, output: currents.append(inputs[0]))
    with torch.no_grad():
        for n in (3, 9):
            attention(token.expand(3, 1, n, 16), torch.ones(1, n))
    hook.remove()
    short, long = currents[0][:, :, 0], currents[1][:, :, 0]
    assert short.abs().sum() > 0
    if attention_keys is None:
        torch.testing.assert_close(long, 3 * short)
    else:
        torch.testing.assert_close(long, short)


def test_averaged_attention_ignores_padding():
    model = tiny(attention_keys=4)
    torch.manual_seed(1)
    sequences = [torch.randint(1, 50, (n,)) for n in (4, 11, 7)]
    with torch.no_grad():
        alone = torch.cat([model(seq[None]) for seq in sequences])
        batched = model(*padded(sequences, 16, pad=9))
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)


def test_attention_keys_must_be_positive():
    with pytest.raises(ValueError, match="attention_keys must be a positive integer"):
        tiny(attention_keys=0)


def test_long_inputs_are_truncated_to_max_len():
    model = tiny(max_len=8)
    ids = torch.randint(1, 50, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(ids[:, :8]))
        torch.testing.assert_close(model(ids, torch.ones_like(ids)), model(ids[:, :8]))


def test_linear_inputs_inside_blocks_are_binary_spikes():
    model = tiny()
    seen: dict[str, torch.Tensor] = {}

    def record_input(name):
        def hook(module, inputs):
            seen[name] = inputs[0].detach()
        return hook

    linears = {name: m for name, m in model.blocks.named_modules() if isinstance(m, nn.Linear)}
    assert sorted(linears) == sorted(f"{i}.{leaf}" for i in range(2) for leaf in
                                     ("attn.query", "attn.key", "attn.value", "attn.proj", "mlp.fc1", "mlp.fc2"))
    handles = [m.register_forward_pre_hook(record_input(name)) for name, m in linears.items()]
    ids, mask = padded([torch.randint(1, 50, (n,)) for n in (12, 5)], 12)
    with torch.no_grad():
        model(ids, mask)
    for handle in handles:
        handle.remove()
    assert set(seen) == set(linears)
    for name, x in seen.items():
        values = set(torch.unique(x).tolist())
        assert values == {0.0, 1.0}, f"{name} input holds {sorted(values)[:5]}"


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match=r"n_embd \(18\) must be divisible by n_head \(4\)"):
        SpikingEncoder(SpikingEncoderConfig(vocab_size=10, n_embd=18, n_head=4, n_layer=1))


def test_dropout_acts_in_training_only():
    ids = torch.randint(1, 50, (4, 10))
    model = tiny(dropout=0.5)
    assert torch.equal(model(ids), tiny().eval()(ids))  # eval: no dropout, same weights
    model.train()
    assert not torch.equal(model(ids), model(ids))


def test_masked_lm_head_scores_every_or_the_chosen_positions():
    model = tiny(task="mlm").train()
    assert not hasattr(model, "classifier")
    ids = torch.randint(1, 50, (3, 12))
    assert model(ids).shape == (3, 12, 50)
    predict_at = torch.zeros_like(ids, dtype=torch.bool)
    predict_at[0, 2] = predict_at[2, 5] = predict_at[2, 11] = True
    logits = model(ids, torch.ones_like(ids), predict_at)
    assert logits.shape == (3, 50)
    nn.functional.cross_entropy(logits, ids[predict_at]).backward()
    assert model.blocks[0].attn.query.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(ids, None, predict_at), model(ids)[predict_at], atol=1e-5)


def test_masked_lm_right_padding_does_not_change_real_positions():
    model = tiny(task="mlm")
    torch.manual_seed(1)
    sequences = [torch.randint(1, 50, (n,)) for n in (4, 11)]
    ids, mask = padded(sequences, 15)
    with torch.no_grad():
        batch = model(ids, mask)
        for row, seq in enumerate(sequences):
            assert torch.allclose(batch[row, : len(seq)], model(seq[None])[0], atol=1e-5)


def test_bad_task_and_predict_at_on_overlong_inputs():
    with pytest.raises(ValueError, match="task must be 'classification' or 'mlm', got 'lm'"):
        tiny(task="lm")
    ids = torch.randint(1, 50, (1, 25))
    with pytest.raises(ValueError, match="predict_at needs inputs of at most max_len=20 tokens, got 25"):
        tiny(task="mlm")(ids, None, torch.ones_like(ids, dtype=torch.bool))


@pytest.mark.parametrize("task", ["classification", "mlm"])
def test_inference_forward_equals_the_reference_loops(task):
    model = tiny(task=task)
    ids, mask = padded([torch.randint(1, 50, (n,)) for n in (12, 5, 9)], 12)
    with torch.no_grad():
        got = model(ids, mask)
        with reference_forward():
            expected = model(ids, mask)
    assert torch.equal(got, expected)


def test_bundled_model_forward_equals_the_reference_loops():
    model = load_model("spiking-encoder-sst2").model
    gen = torch.Generator().manual_seed(0)
    ids, mask = padded([torch.randint(1, model.config.vocab_size, (n,), generator=gen) for n in (30, 11, 19)], 30)
    with torch.no_grad(), SpikeRecorder(model) as fast:
        got = model(ids, mask)
    with torch.no_grad(), reference_forward(), SpikeRecorder(model) as reference:
        expected = model(ids, mask)
    assert torch.equal(got, expected)
    assert fast.rates == reference.rates and max(fast.rates.values()) > 0
