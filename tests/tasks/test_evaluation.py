"""Metrics: accuracy of examples and word-level perplexity of text against direct computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.tasks.datasets.sst2 import load_sst2
from qslm.tasks.datasets.wikitext import load_wikitext, word_count
from qslm.tasks.evaluation import (
    EvalResult,
    classification_inputs,
    classification_logits,
    evaluate_classification,
    evaluate_lm,
    lm_token_nll,
    lm_windows,
)


def spiking_lm(vocab_size: int, ctx_len: int) -> SpikeGPT:
    """A random LM whose neurons fire (larger weights than the default init)."""
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=vocab_size, n_embd=16, n_layer=1, ctx_len=ctx_len))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def test_text(small_data_dir) -> str:
    return "".join(load_wikitext("test", small_data_dir).splitlines(keepends=True)[:12])


def test_perplexity_is_exp_of_nll_per_word(tiny_tokenizer, test_text):
    ids = torch.tensor(tiny_tokenizer.encode("\n" + test_text).ids)
    model = spiking_lm(tiny_tokenizer.get_vocab_size(), ctx_len=len(ids))  # one window holds it all
    with torch.no_grad():
        logits = model(ids[None, :-1])[0]
    total_nll = float(F.cross_entropy(logits, ids[1:], reduction="sum"))
    words = sum(len(line.split()) for line in test_text.splitlines()) + len(test_text.splitlines())

    result = evaluate_lm(model, tiny_tokenizer, test_text, "test")
    assert result.task == "language-modeling" and result.split == "test"
    assert result.n == words == word_count(test_text)
    assert result.loss == pytest.approx(total_nll / words, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total_nll / words), rel=1e-5)
    assert result.accuracy is None
    assert set(result.firing_rates) == {"blocks.0.lif1", "blocks.0.lif2"}
    assert any(rate > 0 for rate in result.firing_rates.values())


def test_windowed_nll_scores_every_token(tiny_tokenizer, test_text):
    model = spiking_lm(tiny_tokenizer.get_vocab_size(), ctx_len=16)
    ids = torch.tensor(tiny_tokenizer.encode("\n" + test_text).ids)
    assert len(ids) > 100  # many overlapping windows
    batched = lm_token_nll(model, tiny_tokenizer, test_text, batch_size=8)
    one_by_one = lm_token_nll(model, tiny_tokenizer, test_text, batch_size=1)
    assert batched.shape == (len(ids) - 1,)
    assert torch.isfinite(batched).all() and (batched > 0).all()
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)
    # The first window has no earlier context: its tokens match a plain forward pass over it.
    with torch.no_grad():
        first = F.cross_entropy(model(ids[None, :16])[0], ids[1:17], reduction="none")
    torch.testing.assert_close(batched[:16], first, rtol=1e-5, atol=1e-5)
    result = evaluate_lm(model, tiny_tokenizer, test_text, "test", batch_size=3)
    assert result.perplexity == pytest.approx(math.exp(float(batched.double().sum()) / word_count(test_text)),
                                              rel=1e-5)


def test_accuracy_against_direct_predictions(tiny_tokenizer, small_data_dir):
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=tiny_tokenizer.get_vocab_size(), n_embd=16, n_layer=1,
                                    ctx_len=32, task="classification")).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 5.0)  # make both classes occur
    examples = load_sst2("dev", small_data_dir)[:30]
    with torch.no_grad():
        direct = torch.cat([model(torch.tensor([tiny_tokenizer.encode(ex.sentence).ids[:32]]))
                            for ex in examples])
    labels = torch.tensor([ex.label for ex in examples])

    result = evaluate_classification(model, tiny_tokenizer, examples, "dev", batch_size=7)
    assert (result.task, result.split, result.n) == ("text-classification", "dev", 30)
    assert result.accuracy == pytest.approx(float((direct.argmax(-1) == labels).float().mean()))
    assert result.loss == pytest.approx(float(F.cross_entropy(direct, labels)), rel=1e-5)
    assert result.perplexity is None
    logits, got_labels = classification_logits(model, tiny_tokenizer, examples, batch_size=64)
    torch.testing.assert_close(logits, direct, rtol=1e-5, atol=1e-5)
    assert torch.equal(got_labels, labels)


def test_result_as_dict():
    result = EvalResult("sst2", "dev", 3, 1.23456, accuracy=2 / 3, loss=0.5, firing_rates={"a": 0.1})
    assert result.to_dict() == {"task": "sst2", "split": "dev", "n": 3, "seconds": 1.235, "accuracy": 2 / 3,
                                "loss": 0.5, "firing_rates": {"a": 0.1}}
    lm = EvalResult("wikitext2", "test", 10, 0.0, perplexity=12.5, loss=2.5).to_dict()
    assert lm["perplexity"] == 12.5 and "accuracy" not in lm


def test_results_carry_the_task_name_they_are_given(tiny_tokenizer, test_text):
    model = spiking_lm(tiny_tokenizer.get_vocab_size(), ctx_len=16)
    assert evaluate_lm(model, tiny_tokenizer, test_text, "valid", task="wikitext2").task == "wikitext2"


def test_lm_windows_hold_every_token_once_scored(tiny_tokenizer, test_text):
    ids = torch.tensor(tiny_tokenizer.encode("\n" + test_text).ids)
    tokens, batches = lm_windows(tiny_tokenizer, test_text, ctx_len=16, batch_size=3)
    assert tokens == len(ids)
    windows = [w for _, group in batches for w in group]
    assert sum(end - scored for _, end, scored in windows) == len(ids) - 1
    for batch, group in batches:
        assert batch.shape[0] == len(group) <= 3
        for row, (start, end, _) in enumerate(group):
            assert torch.equal(batch[row, :end - start], ids[start:end])


def test_classification_inputs_are_shortest_first(tiny_tokenizer, small_data_dir):
    examples = load_sst2("dev", small_data_dir)[:9]
    order, batches = classification_inputs(tiny_tokenizer, examples, max_len=32, batch_size=4)
    lengths = [int(mask.sum()) for _, masks, _ in batches for mask in masks]
    assert lengths == sorted(lengths) and len(lengths) == 9
    labels = torch.cat([label for _, _, label in batches])
    assert labels.tolist() == [examples[i].label for i in order]

