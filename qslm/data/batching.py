"""Turn examples and text into padded tensors the models take."""
from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch
from tokenizers import Tokenizer

from .examples import Example
from .tokenizer import pad_id


def encode_examples(tokenizer: Tokenizer, examples: Sequence[Example], max_len: int
                    ) -> list[tuple[list[int], int]]:
    encoded = tokenizer.encode_batch([ex.sentence for ex in examples])
    return [(enc.ids[:max_len] or [pad_id(tokenizer)], ex.label) for enc, ex in zip(encoded, examples)]


def collate(items: Sequence[tuple[list[int], int]], pad: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest item: (ids [B, N], attention_mask [B, N], labels [B])."""
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (token_ids, _) in enumerate(items):
        ids[row, : len(token_ids)] = torch.tensor(token_ids)
        mask[row, : len(token_ids)] = 1
    labels = torch.tensor([label for _, label in items])
    return ids, mask, labels


def classification_batches(items: Sequence[tuple[list[int], int]], batch_size: int, pad: int,
                           rng: random.Random | None = None
                           ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches in order, or shuffled by ``rng``. Order is kept for evaluation so results are reproducible."""
    order = list(range(len(items)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        yield collate([items[i] for i in order[start:start + batch_size]], pad)


def length_order(items: Sequence[tuple[list[int], int]]) -> list[int]:
    """Indices of ``items`` shortest first (stable): batching neighbours in this order wastes little
    compute on padding."""
    return sorted(range(len(items)), key=lambda i: len(items[i][0]))


def scored_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over a token stream for perplexity: (start, end, first_scored).

    Each target token t in [1, n_tokens) is scored exactly once, with up to ``window`` tokens of context.
    """
    if not 1 <= stride <= window:
        # stride 0 never advances; stride > window leaves targets between windows unscored
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    windows = []
    scored_until = 1
    start = 0
    while scored_until < n_tokens:
        end = min(start + window + 1, n_tokens)
        windows.append((start, end, scored_until))
        scored_until = end
        start = max(0, end - 1 - (window - stride))
    return windows
