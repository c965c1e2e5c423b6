"""Masked-language-model examples for a bidirectional encoder: sentence-sized token chunks of a text and
BERT-style corruption of them.

Pre-training examples are the text's lines (Brown and the SST-2 sentence files hold one sentence per
line), long lines cut into ``max_len``-token pieces, so the encoder pre-trains on inputs shaped like the
sentences it is later fine-tuned on.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer

from .batching import collate
from .tokenizer import SPECIAL_TOKENS, mask_id, pad_id

MASK_RATE = 0.15
MIN_CHUNK_TOKENS = 4  # shorter chunks (stray headings, blank-ish lines) teach little


def line_chunks(tokenizer: Tokenizer, text: str, max_len: int) -> list[list[int]]:
    """Token ids of each non-empty line, cut into pieces of at most ``max_len`` tokens."""
    lines = [line.strip() for line in text.splitlines()]
    chunks = []
    for encoding in tokenizer.encode_batch([line for line in lines if line]):
        pieces = (encoding.ids[i:i + max_len] for i in range(0, len(encoding.ids), max_len))
        chunks += [piece for piece in pieces if len(piece) >= MIN_CHUNK_TOKENS]
    return chunks


def masked_batch(chunks: list[list[int]], tokenizer: Tokenizer, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``chunks`` right-padded and masked: (corrupted ids, attention_mask, predict_at, targets)."""
    ids, attention_mask, _ = collate([(chunk, 0) for chunk in chunks], pad_id(tokenizer))  # no labels
    corrupted, predict_at, targets = mask_tokens(ids, attention_mask, tokenizer, generator)
    return corrupted, attention_mask, predict_at, targets


def mask_tokens(ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer: Tokenizer,
                generator: torch.Generator | None = None, rate: float = MASK_RATE
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose ``rate`` of the real tokens of each row to predict (at least one) and corrupt them as BERT
    does: 80% become ``<mask>``, 10% a random ordinary token, 10% stay. Returns (corrupted ids,
    predict_at [B, N] bool, targets [number of predicted positions])."""
    real = attention_mask.bool()
    scores = torch.rand(ids.shape, generator=generator)
    predict_at = (scores < rate) & real
    # A row with nothing chosen would add no signal; predict its lowest-scoring real token instead.
    first = torch.where(real, scores, torch.inf).argmin(dim=1)
    empty = ~predict_at.any(dim=1)
    predict_at[empty, first[empty]] = True

    action = torch.rand(ids.shape, generator=generator)
    n_special = len(SPECIAL_TOKENS)  # the trained vocabulary puts the special tokens first
    random_ids = torch.randint(n_special, tokenizer.get_vocab_size(), ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[predict_at & (action < 0.8)] = mask_id(tokenizer)
    swap = predict_at & (action >= 0.8) & (action < 0.9)
    corrupted[swap] = random_ids[swap]
    return corrupted, predict_at, ids[predict_at]
