"""Converting original SpikeGPT checkpoints: the converted model computes what upstream computes, and
every checkpoint it cannot represent is refused by name."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from qslm.checkpoint import load_model
from qslm.convert import convert_spikegpt
from qslm.errors import QslmError

VOCAB, WIDTH, LAYERS = 40, 16, 2
TOKENS = [3, 17, 0, 39, 8, 8, 25, 11]


def upstream_logits(state: dict[str, torch.Tensor], tokens: list[int], binary_embedding: bool,
                    tau: float = 2.0, v_threshold: float = 1.0, rescale_every: int = 6) -> tuple[torch.Tensor, float]:
    """Logits of upstream's token-by-token runner (src/model_run.py, fp32 mode) with the LIF neurons of
    src/model.py, written out from its formulas; also the fraction of neurons that fired."""
    w = {key: (t.float().squeeze() if ".time_" in key else t.float()) for key, t in state.items()}
    n_layer = 1 + max(int(key.split(".")[1]) for key in w if key.startswith("blocks."))
    width = w["emb.weight"].shape[1]
    zeros = lambda: torch.zeros(width)  # noqa: E731
    att_prev = [zeros() for _ in range(n_layer)]
    ffn_prev = [zeros() for _ in range(n_layer)]
    num, den = [zeros() for _ in range(n_layer)], [zeros() for _ in range(n_layer)]
    exponent = [torch.full((width,), -1e30) for _ in range(n_layer)]
    membrane = {(i, j): zeros() for i in range(n_layer) for j in (1, 2)}
    spikes, neurons = 0.0, 0

    def layer_norm(x, name):
        return F.layer_norm(x, (width,), w[f"{name}.weight"], w[f"{name}.bias"])

    def lif(index, x):
        nonlocal spikes, neurons
        v = membrane[index] + (x - membrane[index]) / tau
        fired = (v >= v_threshold).float()
        membrane[index] = v * (1 - fired)
        spikes, neurons = spikes + float(fired.sum()), neurons + fired.numel()
        return fired

    logits = []
    for token in tokens:
        x = w["emb.weight"][token]
        if binary_embedding:
            x = (x >= 0).float()
        for i in range(n_layer):
            scale = 2 ** (i // rescale_every)
            p = f"blocks.{i}."
            if i == 0:
                x = layer_norm(x, p + "ln0")
            h = layer_norm(x, p + "ln1")
            mk, mv, mr = (w[p + f"att.time_mix_{m}"] for m in "kvr")
            xk, xv, xr = (h * m + att_prev[i] * (1 - m) for m in (mk, mv, mr))
            att_prev[i] = h
            r = torch.sigmoid(w[p + "att.receptance.weight"] @ xr)
            k = w[p + "att.key.weight"] @ xk
            v = w[p + "att.value.weight"] @ xv
            decay, first = -torch.exp(w[p + "att.time_decay"]), w[p + "att.time_first"]
            ww = first + k
            q = torch.maximum(exponent[i], ww)
            e1, e2 = torch.exp(exponent[i] - q), torch.exp(ww - q)
            wkv = (e1 * num[i] + e2 * v) / (e1 * den[i] + e2)
            ww = exponent[i] + decay
            q = torch.maximum(ww, k)
            e1, e2 = torch.exp(ww - q), torch.exp(k - q)
            num[i], den[i], exponent[i] = e1 * num[i] + e2 * v, e1 * den[i] + e2, q
            x = x + lif((i, 1), (w[p + "att.output.weight"] / scale) @ (r * wkv))
            h = layer_norm(x, p + "ln2")
            mk, mr = w[p + "ffn.time_mix_k"], w[p + "ffn.time_mix_r"]
            xk, xr = h * mk + ffn_prev[i] * (1 - mk), h * mr + ffn_prev[i] * (1 - mr)
            ffn_prev[i] = h
            r = torch.sigmoid(w[p + "ffn.receptance.weight"] @ xr)
            kv = (w[p + "ffn.value.weight"] / scale) @ torch.square(torch.relu(w[p + "ffn.key.weight"] @ xk))
            x = x + lif((i, 2), r * kv)
            if (i + 1) % rescale_every == 0:
                x = x / 2
        logits.append(w["head.weight"] @ layer_norm(x, "ln_out"))
    return torch.stack(logits), spikes / neurons


def save_checkpoint(state: dict, path) -> str:
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("binary", [False, True])
def test_converted_logits_match_upstream(upstream_spikegpt, word_tokenizer_file, tmp_path, dtype, binary):
    state = upstream_spikegpt(VOCAB, WIDTH, LAYERS, dtype)
    checkpoint = save_checkpoint(state, tmp_path / "upstream.pth")
    result = convert_spikegpt(checkpoint, word_tokenizer_file(VOCAB - 3), tmp_path / "out", ctx_len=64,
                              binary_embedding="on" if binary else "off")
    assert result.binary_embedding is binary
    loaded = load_model(tmp_path / "out")
    config = loaded.config
    assert (config.vocab_size, config.n_embd, config.n_layer, config.ffn_mult, config.ctx_len, config.task) == (
        VOCAB, WIDTH, LAYERS, 4, 64, "lm")
    assert (config.tau, config.v_threshold) == (2.0, 1.0)
    with torch.no_grad():
        ours = loaded.model(torch.tensor([TOKENS]))[0]
    reference, firing_rate = upstream_logits(state, TOKENS, binary)
    assert 0.05 < firing_rate < 0.95  # the neurons matter: some fire, some do not
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    other, _ = upstream_logits(state, TOKENS, not binary)
    assert (ours - other).abs().max() > 1e-2  # the embedding choice is visible in the logits


def test_lif_options_reach_the_model(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, WIDTH, LAYERS, torch.float32)
    checkpoint = save_checkpoint(state, tmp_path / "upstream.pth")
    convert_spikegpt(checkpoint, word_tokenizer_file(VOCAB), tmp_path / "out", tau=3.0, v_threshold=0.5,
                     binary_embedding="off")
    loaded = load_model(tmp_path / "out")
    with torch.no_grad():
        ours = loaded.model(torch.tensor([TOKENS]))[0]
    reference, _ = upstream_logits(state, TOKENS, False, tau=3.0, v_threshold=0.5)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("vocab, binary", [(77, True), (VOCAB, False)])
def test_auto_binarizes_only_the_character_model(upstream_spikegpt, word_tokenizer_file, tmp_path, vocab, binary):
    checkpoint = save_checkpoint(upstream_spikegpt(vocab, 8, 1), tmp_path / "upstream.pth")
    result = convert_spikegpt(checkpoint, word_tokenizer_file(vocab), tmp_path / "out")
    assert result.binary_embedding is binary
    emb = load_model(tmp_path / "out").model.emb.weight
    assert bool(((emb == 0) | (emb == 1)).all()) is binary


def test_notes_for_casts_dropped_buffers_and_deep_models(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 7, torch.bfloat16)
    state["blocks.3.att.time_shift.pad"] = torch.zeros(0)
    state["copy_mask"] = torch.tril(torch.ones(4, 4))
    result = convert_spikegpt(save_checkpoint(state, tmp_path / "upstream.pth"), word_tokenizer_file(VOCAB),
                              tmp_path / "out")
    notes = "\n".join(result.notes)
    assert "cast bfloat16 tensors to float32" in notes
    assert "dropped blocks.3.att.time_shift.pad" in notes and "dropped copy_mask" in notes
    assert "halves the residual after every 6th block" in notes
    assert json.loads((tmp_path / "out" / "config.json").read_text())["n_layer"] == 7


def test_wrapped_checkpoint_converts(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 1)
    wrapped = {"state_dict": {f"module.{key}": value for key, value in state.items()}, "epoch": 3}
    result = convert_spikegpt(save_checkpoint(wrapped, tmp_path / "wrapped.pth"), word_tokenizer_file(VOCAB),
                              tmp_path / "out")
    assert any("'state_dict'" in note for note in result.notes)
    assert any("'module.' prefix" in note for note in result.notes)
    assert load_model(tmp_path / "out").config.n_layer == 1


def refusal(state, tokenizer_path, tmp_path, **options) -> str:
    out = tmp_path / "out"
    with pytest.raises(QslmError) as err:
        convert_spikegpt(save_checkpoint(state, tmp_path / "bad.pth"), tokenizer_path, out, **options)
    assert not out.exists()  # nothing half-written
    return str(err.value)


def test_missing_key_is_named(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 2)
    del state["blocks.1.att.key.weight"]
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert "missing keys: blocks.1.att.key.weight" in message and "bad.pth" in message


def test_wrong_shape_is_named_with_both_shapes(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 2)
    state["blocks.1.ffn.value.weight"] = state["blocks.1.ffn.value.weight"].T.contiguous()
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert "blocks.1.ffn.value.weight [32, 8] (expected [8, 32])" in message


def test_tokenizer_larger_than_the_vocabulary(upstream_spikegpt, word_tokenizer_file, tmp_path):
    message = refusal(upstream_spikegpt(VOCAB, 8, 1), word_tokenizer_file(VOCAB + 5), tmp_path)
    assert f"has {VOCAB + 5} tokens" in message and f"only {VOCAB} rows" in message


def test_unrepresentable_features_are_listed(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 1)
    state["head_q.weight"] = torch.zeros(4, 8)
    state["head_k.weight"] = torch.zeros(4, 8)
    state["copy_mask"] = torch.ones(4, 4)
    state["blocks.0.ffnPre.key.weight"] = torch.zeros(32, 8)
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert "copy head" in message and "head_k.weight, head_q.weight" in message
    assert "RWKV-ffnPre" in message and "blocks.0.ffnPre.key.weight" in message


def test_unknown_key_is_refused_not_ignored(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 1)
    state["blocks.0.att.gate.weight"] = torch.zeros(8, 8)
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert "no place for: blocks.0.att.gate.weight" in message


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.pop("emb.weight"), "missing emb.weight"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("blocks.1.")], "blocks 1 are missing"),
    (lambda s: s.update({"blocks.0.ffn.key.weight": torch.zeros(20, 8)}), "[20, 8]; qslm's SpikeGPT needs [k * 8, 8]"),
    (lambda s: s.update({"head.weight": torch.full((VOCAB, 8), float("nan"))}), "NaN or infinite values: head.weight"),
    (lambda s: s.update({"ln_out.bias": torch.zeros(8, dtype=torch.int64)}), "not floating point: ln_out.bias (int64)"),
])
def test_malformed_checkpoints(upstream_spikegpt, word_tokenizer_file, tmp_path, edit, expected):
    state = upstream_spikegpt(VOCAB, 8, 3)
    edit(state)
    assert expected in refusal(state, word_tokenizer_file(VOCAB), tmp_path)


@pytest.mark.parametrize("shape", [(VOCAB, 10 ** 6), (10 ** 7, 8), (10 ** 7, 10 ** 6)])
def test_a_huge_embedding_is_named_not_blamed_on_the_ffn(upstream_spikegpt, word_tokenizer_file, tmp_path, shape):
    state = upstream_spikegpt(VOCAB, 8, 1)
    state["emb.weight"] = torch.zeros(1, 1).expand(*shape)  # stride 0: a few bytes on disk, any shape loaded
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert message.startswith(f"{tmp_path / 'bad.pth'}: emb.weight has shape {list(shape)}; qslm's SpikeGPT takes "
                              "[vocab, width] with a vocabulary of 1 to 2097152 tokens and a width of 1 to 16384")
    assert "ffn" not in message and "config field" not in message


def test_an_ffn_too_wide_or_too_many_blocks_are_named_by_their_keys(upstream_spikegpt, word_tokenizer_file, tmp_path):
    state = upstream_spikegpt(VOCAB, 8, 1)
    state["blocks.0.ffn.key.weight"] = torch.zeros(1, 1).expand(65 * 8, 8)
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert "blocks.0.ffn.key.weight has shape [520, 8]; qslm's SpikeGPT needs [k * 8, 8] with k from 1 to 64" in message
    state = upstream_spikegpt(VOCAB, 8, 1)
    state["blocks.256.ln1.weight"] = torch.ones(8)
    message = refusal(state, word_tokenizer_file(VOCAB), tmp_path)
    assert "has keys of blocks.256; qslm's SpikeGPT takes at most 256 blocks (blocks.0 to blocks.255)" in message


@pytest.mark.parametrize("options, expected", [
    ({"ctx_len": 0}, "ctx_len must be a positive"),
    ({"tau": 1.0}, "tau must be greater than 1"),
    ({"v_threshold": 0.0}, "v_threshold must be positive"),
    ({"binary_embedding": "yes"}, "binary_embedding must be one of auto, on, off"),
])
def test_bad_options(upstream_spikegpt, word_tokenizer_file, tmp_path, options, expected):
    assert expected in refusal(upstream_spikegpt(VOCAB, 8, 1), word_tokenizer_file(VOCAB), tmp_path, **options)


def test_output_folder_must_be_new_or_empty(upstream_spikegpt, word_tokenizer_file, tmp_path):
    checkpoint = save_checkpoint(upstream_spikegpt(VOCAB, 8, 1), tmp_path / "upstream.pth")
    tokenizer = word_tokenizer_file(VOCAB)
    (tmp_path / "empty").mkdir()
    convert_spikegpt(checkpoint, tokenizer, tmp_path / "empty")
    assert load_model(tmp_path / "empty").config.n_embd == 8
    with pytest.raises(QslmError, match="already exists and is not empty"):
        convert_spikegpt(checkpoint, tokenizer, tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(QslmError, match="is not a folder"):
        convert_spikegpt(checkpoint, tokenizer, tmp_path / "file")


def test_bad_tokenizer_file(upstream_spikegpt, tmp_path):
    (tmp_path / "tok.json").write_text("{not json")
    with pytest.raises(QslmError, match="tok.json is not a valid tokenizer.json"):
        convert_spikegpt(save_checkpoint(upstream_spikegpt(VOCAB, 8, 1), tmp_path / "upstream.pth"),
                         tmp_path / "tok.json", tmp_path / "out")
