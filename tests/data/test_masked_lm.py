"""Masked-LM examples: sentence-sized chunks of a text and BERT-style corruption."""
from __future__ import annotations

import pytest
import torch

from qslm.data.batching import collate
from qslm.data.masked_lm import MIN_CHUNK_TOKENS, line_chunks, mask_tokens
from qslm.data.tokenizer import SPECIAL_TOKENS, mask_id, pad_id, train_tokenizer

TEXTS = ["the film is a delight .", "a dull , lifeless movie .", "the cast is fine but the plot is thin ."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_line_chunks_follow_lines_and_cut_long_ones(tokenizer):
    long_line = " ".join(["the film is a delight ."] * 6)
    sentence = "the film is a delight ."  # 7 tokens
    chunks = line_chunks(tokenizer, f"{sentence}\n\n  \nok\n{long_line}\n", max_len=8)
    assert chunks[0] == tokenizer.encode(sentence).ids  # one line, one chunk
    # "ok" and blank lines are dropped; the long line comes back in order, in 8-token pieces
    long_ids = tokenizer.encode(long_line).ids
    pieces = [long_ids[i:i + 8] for i in range(0, len(long_ids), 8)]
    assert chunks[1:] == [piece for piece in pieces if len(piece) >= MIN_CHUNK_TOKENS]
    assert len(chunks) >= 3 and all(MIN_CHUNK_TOKENS <= len(chunk) <= 8 for chunk in chunks)


def test_masking_predicts_real_tokens_only_and_corrupts_as_bert(tokenizer):
    torch.manual_seed(0)
    rows = [torch.randint(len(SPECIAL_TOKENS), 300, (n,)).tolist() for n in [60, 3, 45, 1] * 200]
    ids, mask, _ = collate([(row, 0) for row in rows], pad_id(tokenizer))
    corrupted, predict_at, targets = mask_tokens(ids, mask, tokenizer, torch.Generator().manual_seed(1))

    assert not (predict_at & ~mask.bool()).any()  # padding is never predicted
    assert predict_at.any(dim=1).all()  # every row, even a one-token one, predicts something
    assert torch.equal(targets, ids[predict_at])
    assert torch.equal(corrupted[~predict_at], ids[~predict_at])
    long_rows = mask.sum(dim=1) >= 45  # short rows predict one token whatever the rate
    rate = predict_at[long_rows].sum() / mask[long_rows].sum()
    assert 0.14 < rate < 0.16
    chosen = corrupted[predict_at]
    masked = (chosen == mask_id(tokenizer)).float().mean()
    kept = (chosen == targets).float().mean()
    assert 0.77 < masked < 0.83 and 0.08 < kept < 0.13  # kept includes random draws of the same token
    assert (chosen >= len(SPECIAL_TOKENS)).logical_or(chosen == mask_id(tokenizer)).all()


def test_masking_is_reproducible_with_a_seeded_generator(tokenizer):
    ids, mask, _ = collate([([5, 6, 7, 8, 9, 10] * 5, 0), ([11, 12, 13], 0)], pad_id(tokenizer))
    first = mask_tokens(ids, mask, tokenizer, torch.Generator().manual_seed(3))
    second = mask_tokens(ids, mask, tokenizer, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
