"""The calibration sets of text tasks: batches shortest first or windows of the context, and digests that
follow their contents."""
from __future__ import annotations

import torch

from qslm.checkpoint import load_model
from qslm.tasks.calibration import classification_calibration, lm_calibration
from qslm.tasks.datasets import sst2, wikitext


def test_classification_calibration_digest_is_stable(tiny_classifier, small_data_dir):
    loaded = load_model(tiny_classifier)
    examples = sst2.calibration_examples(small_data_dir, size=20)
    first = classification_calibration(loaded.tokenizer, examples, 48, batch_size=8)
    second = classification_calibration(loaded.tokenizer, list(examples), 48, batch_size=8)
    assert first.digest == second.digest and first.size == 20 and len(first.batches) == 3
    assert classification_calibration(loaded.tokenizer, examples[:19], 48, batch_size=8).digest != first.digest
    assert not first.is_lm


def test_lm_calibration_windows_and_digest(tiny_lm, small_data_dir):
    loaded = load_model(tiny_lm)
    text = wikitext.calibration_text(small_data_dir)
    first = lm_calibration(loaded.tokenizer, text, ctx_len=32, max_tokens=100, batch_size=2)
    assert first.is_lm and first.size == 3  # 100 // 32 windows of 32 inputs and their 32 next tokens
    ids, mask, targets = first.batches[0]
    assert mask is None and ids.shape == targets.shape == (2, 32)
    assert torch.equal(ids[0, 1:], targets[0, :-1])  # targets are the inputs shifted by one
    assert first.digest == lm_calibration(loaded.tokenizer, text, 32, 100, batch_size=2).digest
    assert first.digest != lm_calibration(loaded.tokenizer, text, 32, 64, batch_size=2).digest
