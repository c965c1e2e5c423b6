"""Metrics of any data: accuracy of labelled examples and word-level perplexity of text, with firing rates.

Word-level perplexity = exp(total NLL of the text / (whitespace tokens + one end-of-line per line)),
whatever sub-word tokenizer the model uses, so figures compare with the literature.
Which files hold the data is the business of the tasks (``files``: users' files; ``presets``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from ..analysis.neurons import SpikeRecorder
from ..data.batching import classification_batches, encode_examples, length_order, scored_windows
from ..data.examples import Example
from ..data.masked_lm import masked_batch
from ..data.text import word_count
from ..data.tokenizer import pad_id

CLASSIFICATION, LANGUAGE_MODELING = "text-classification", "language-modeling"


@dataclass
class EvalResult:
    task: str
    split: str
    n: int
    seconds: float
    accuracy: float | None = None
    perplexity: float | None = None
    loss: float | None = None  # mean cross-entropy per example (classification) or per word (language model)
    firing_rates: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"task": self.task, "split": self.split, "n": self.n, "seconds": round(self.seconds, 3)}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.perplexity is not None:
            out["perplexity"] = self.perplexity
        out["loss"] = self.loss
        out["firing_rates"] = self.firing_rates
        return out


def max_input_len(model: nn.Module) -> int:
    config = model.config
    return getattr(config, "max_len", None) or getattr(config, "ctx_len")


def classification_inputs(tokenizer: Tokenizer, examples: list[Example], max_len: int, batch_size: int = 64
                          ) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """(length order, batches): the examples encoded and batched shortest first, to skip padding, as
    (ids, mask, labels); ``length order`` maps batch rows back to the examples."""
    items = encode_examples(tokenizer, examples, max_len)
    order = length_order(items)
    return order, list(classification_batches([items[i] for i in order], batch_size, pad_id(tokenizer)))


@torch.no_grad()
def classification_logits(model: nn.Module, tokenizer: Tokenizer, examples: list[Example],
                          batch_size: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels in the order of ``examples`` (computed in length order, to skip padding)."""
    device = next(model.parameters()).device
    order, batches = classification_inputs(tokenizer, examples, max_input_len(model), batch_size)
    outputs, labels = [], []
    for ids, mask, label in tqdm(batches, disable=not progress, desc="eval", leave=False):
        outputs.append(model(ids.to(device), mask.to(device)).float().cpu())
        labels.append(label)
    restore = torch.argsort(torch.tensor(order))
    return torch.cat(outputs)[restore], torch.cat(labels)[restore]


def lm_windows(tokenizer: Tokenizer, text: str, ctx_len: int, batch_size: int = 8
               ) -> tuple[int, list[tuple[torch.Tensor, list[tuple[int, int, int]]]]]:
    """(tokens, batches) for perplexity: ``text`` encoded after a newline (the first token's context) and
    cut into overlapping windows (see ``scored_windows``); each batch is (token ids [B, W + 1], its windows),
    zero-padded on the right; the model reads ``ids[:, :-1]`` and predicts ``ids[:, 1:]``."""
    ids = torch.tensor(tokenizer.encode("\n" + text).ids, dtype=torch.long)
    windows = scored_windows(len(ids), ctx_len, stride=max(1, ctx_len // 2))
    batches = []
    for first in range(0, len(windows), batch_size):
        group = windows[first:first + batch_size]
        width = max(end - start for start, end, _ in group)
        batch = torch.zeros((len(group), width), dtype=torch.long)
        for row, (start, end, _) in enumerate(group):
            batch[row, : end - start] = ids[start:end]
        batches.append((batch, group))
    return len(ids), batches


@torch.no_grad()
def lm_token_nll(model: nn.Module, tokenizer: Tokenizer, text: str, batch_size: int = 8,
                 progress: bool = False) -> torch.Tensor:
    """NLL of every token of ``text`` (a newline is prepended as context for the first one)."""
    device = next(model.parameters()).device
    tokens, batches = lm_windows(tokenizer, text, model.config.ctx_len, batch_size)
    nll = torch.empty(tokens - 1)
    for batch, group in tqdm(batches, disable=not progress, desc="eval", leave=False):
        logits = model(batch[:, :-1].to(device)).float()
        token_nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:].to(device), reduction="none").cpu()
        for row, (start, end, scored) in enumerate(group):
            # target position p (in ids) sits at column p - start - 1
            nll[scored - 1:end - 1] = token_nll[row, scored - start - 1:end - start - 1]
    return nll


def evaluate_classification(model, tokenizer, examples, split: str, batch_size: int = 64,
                            progress: bool = False, task: str = CLASSIFICATION) -> EvalResult:
    """Accuracy and mean cross-entropy of ``model`` on labelled ``examples``; ``task`` and ``split``
    only label the result."""
    started = time.perf_counter()
    with SpikeRecorder(model) as recorder:
        logits, labels = classification_logits(model, tokenizer, examples, batch_size, progress)
    accuracy = float((logits.argmax(-1) == labels).float().mean())
    loss = float(F.cross_entropy(logits, labels))
    return EvalResult(task, split, len(examples), time.perf_counter() - started, accuracy=accuracy,
                      loss=loss, firing_rates=recorder.rates)


def evaluate_lm(model, tokenizer, text: str, split: str, batch_size: int = 8, progress: bool = False,
                task: str = LANGUAGE_MODELING) -> EvalResult:
    """Word-level perplexity of ``model`` on ``text``; ``task`` and ``split`` only label the result."""
    started = time.perf_counter()
    with SpikeRecorder(model) as recorder:
        nll = lm_token_nll(model, tokenizer, text, batch_size, progress)
    words = word_count(text)
    loss_per_word = float(nll.double().sum()) / words
    return EvalResult(task, split, words, time.perf_counter() - started,
                      perplexity=math.exp(loss_per_word), loss=loss_per_word, firing_rates=recorder.rates)


@torch.no_grad()
def masked_lm_loss(model: nn.Module, tokenizer: Tokenizer, chunks: list[list[int]], batch_size: int = 64,
                   seed: int = 0) -> float:
    """Mean cross-entropy (nats) over masked tokens of ``chunks``, masked the same way on every call."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        inputs, mask, predict_at, targets = masked_batch(chunks[start:start + batch_size], tokenizer, generator)
        logits = model(inputs.to(device), mask.to(device), predict_at.to(device))
        total += float(F.cross_entropy(logits, targets.to(device), reduction="sum"))
        count += targets.numel()
    return total / max(count, 1)
