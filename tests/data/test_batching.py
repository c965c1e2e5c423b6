"""Batching: padding and masks, batch order, and the perplexity windows."""
from __future__ import annotations

import random

import pytest

from qslm.data.batching import classification_batches, collate, encode_examples, scored_windows
from qslm.data.examples import Example


def test_collate_right_pads():
    ids, mask, labels = collate([([5, 6, 7], 1), ([8], 0)], pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert labels.tolist() == [1, 0]


def test_encode_examples_truncates_and_never_returns_empty(tiny_tokenizer):
    examples = [Example("a rather long sentence about a film that goes on and on", 1), Example("", 0)]
    items = encode_examples(tiny_tokenizer, examples, max_len=4)
    assert len(items[0][0]) == 4 and items[0][1] == 1
    assert items[1] == ([0], 0)  # an empty sentence becomes one pad token, not a zero-length row


def test_batches_keep_order_unless_shuffled():
    items = [([i + 1], i % 2) for i in range(10)]
    in_order = [ids[:, 0].tolist() for ids, _, _ in classification_batches(items, 4, pad=0)]
    assert in_order == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    shuffled = [ids[:, 0].tolist() for ids, _, _ in classification_batches(items, 4, 0, random.Random(0))]
    assert sorted(sum(shuffled, [])) == list(range(1, 11)) and shuffled != in_order


@pytest.mark.parametrize("n_tokens", [2, 3, 5, 17, 64, 65, 100])
@pytest.mark.parametrize("window, stride", [(1, 1), (4, 1), (4, 2), (4, 4), (16, 8), (7, 3)])
def test_scored_windows_score_every_token_once(n_tokens, window, stride):
    windows = scored_windows(n_tokens, window, stride)
    scored = []
    for start, end, first in windows:
        assert 0 <= start < first < end <= n_tokens
        assert end - start <= window + 1  # at most `window` inputs
        scored.extend(range(first, end))
    assert scored == list(range(1, n_tokens))
    # After the first window, each scored token sees at least window - stride + 1 tokens of context.
    for start, end, first in windows[1:]:
        assert first - start >= window - stride + 1


def test_scored_windows_of_a_single_token():
    assert scored_windows(1, 4, 2) == [] == scored_windows(0, 4, 2)


@pytest.mark.parametrize("stride", [0, 5, -1])
def test_scored_windows_reject_a_bad_stride(stride):
    with pytest.raises(ValueError, match=f"stride must be in \\[1, window=4\\], got {stride}"):
        scored_windows(10, 4, stride)
