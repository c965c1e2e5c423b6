"""The fixed inputs a text task measures the model on: labelled examples batched shortest first, or
text cut into windows of the model's context, each set with a digest that identifies it (the
fingerprint a search's journal records, the key of cached measurements).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QslmError
from ..model_inputs import call_model
from .evaluation import classification_inputs


@dataclass
class CalibrationSet:
    """Fixed model inputs with their targets; ``digest`` identifies them for caching."""
    is_lm: bool
    batches: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]  # (ids, mask, targets)
    digest: str

    @property
    def size(self) -> int:
        return sum(len(ids) for ids, _, _ in self.batches)


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def classification_calibration(tokenizer, examples, max_len: int, batch_size: int = 64) -> CalibrationSet:
    """Examples batched shortest first, so little compute goes to padding."""
    _, batches = classification_inputs(tokenizer, examples, max_len, batch_size)
    return CalibrationSet(False, batches, _digest([t for b in batches for t in b]))


def lm_calibration(tokenizer, text: str, ctx_len: int, max_tokens: int, batch_size: int = 8,
                   what: str = "calibration") -> CalibrationSet:
    """Non-overlapping windows of ``ctx_len`` tokens from the start of ``text``, up to ``max_tokens`` targets;
    a text too short for one window is an error naming it as the ``what`` text."""
    ids = torch.tensor(tokenizer.encode("\n" + text).ids, dtype=torch.long)
    if len(ids) <= ctx_len:
        raise QslmError(f"the {what} text has {len(ids)} tokens; one {what} window needs {ctx_len + 1} (the "
                        "model's context plus one)")
    n_windows = max(1, min((len(ids) - 1) // ctx_len, max_tokens // ctx_len))
    windows = torch.stack([ids[i * ctx_len: i * ctx_len + ctx_len + 1] for i in range(n_windows)
                           if i * ctx_len + ctx_len + 1 <= len(ids)])
    batches = [(w[:, :-1], None, w[:, 1:]) for w in windows.split(batch_size)]
    return CalibrationSet(True, batches, _digest([windows]))


@torch.no_grad()
def output_log_probs(model: nn.Module, calibration: CalibrationSet) -> list[torch.Tensor]:
    """Log-softmax of the model's logits on each batch of a token calibration set."""
    outputs = []
    for ids, mask, _ in calibration.batches:
        logits = call_model(model, (ids,) if mask is None else (ids, mask))
        outputs.append(F.log_softmax(logits.float(), dim=-1).cpu())
    return outputs
