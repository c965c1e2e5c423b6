"""Sensitivity analysis: how much quantizing one unit (a module, or a whole block) to b bits,
everything else in float, damages the model on a small calibration set.

Two measures against the float model's outputs on the same inputs:
  * ``kl``: mean KL(p_float || p_quantized) of the output distribution (per example for classifiers,
    per token for language models) -- smooth, used to order search moves;
  * ``loss_increase``: increase of the task loss (cross-entropy with the true labels / next tokens).
Results are cached on disk keyed by model hash + calibration set digest + units + spec, so re-runs and
resumed searches do not recompute them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import classification_batches, encode_examples, length_order
from ..data.tokenizer import pad_id


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
    items = encode_examples(tokenizer, examples, max_len)
    items = [items[i] for i in length_order(items)]
    batches = [(ids, mask, labels) for ids, mask, labels in classification_batches(items, batch_size, pad_id(tokenizer))]
    return CalibrationSet(False, batches, _digest([t for b in batches for t in b]))


def lm_calibration(tokenizer, text: str, ctx_len: int, max_tokens: int, batch_size: int = 8) -> CalibrationSet:
    """Non-overlapping windows of ``ctx_len`` tokens from the start of ``text``, up to ``max_tokens`` targets."""
    ids = torch.tensor(tokenizer.encode("\n" + text).ids, dtype=torch.long)
    n_windows = max(1, min((len(ids) - 1) // ctx_len, max_tokens // ctx_len))
    windows = torch.stack([ids[i * ctx_len: i * ctx_len + ctx_len + 1] for i in range(n_windows)
                           if i * ctx_len + ctx_len + 1 <= len(ids)])
    batches = [(w[:, :-1], None, w[:, 1:]) for w in windows.split(batch_size)]
    return CalibrationSet(True, batches, _digest([windows]))


def model_hash(model: nn.Module) -> str:
    """SHA-256 over the float state dict (names, shapes, values): the model's identity for caches."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def output_log_probs(model: nn.Module, calibration: CalibrationSet) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    outputs = []
    for ids, mask, _ in calibration.batches:
        logits = model(ids.to(device)) if mask is None else model(ids.to(device), mask.to(device))
        outputs.append(F.log_softmax(logits.float(), dim=-1).cpu())
    return outputs


def damage(reference: list[torch.Tensor], quantized: list[torch.Tensor], calibration: CalibrationSet
           ) -> dict[str, float]:
    """Mean KL(reference || quantized) and task-loss increase over the calibration set."""
    kl_sum, loss_ref, loss_q, count = 0.0, 0.0, 0.0, 0
    for ref, q, (_, _, targets) in zip(reference, quantized, calibration.batches):
        kl_sum += float((ref.exp() * (ref - q)).sum(-1).sum())
        flat_targets = targets.reshape(-1)
        loss_ref += float(F.nll_loss(ref.reshape(-1, ref.shape[-1]), flat_targets, reduction="sum"))
        loss_q += float(F.nll_loss(q.reshape(-1, q.shape[-1]), flat_targets, reduction="sum"))
        count += flat_targets.numel()
    return {"kl": kl_sum / count, "loss_increase": (loss_q - loss_ref) / count}


class SensitivityCache:
    """JSON-lines file of measured damages; one line per (model, calibration, units, spec)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        # A last line cut short by a crash: the next entry must start on a line of its own, or it is lost.
        self._torn_tail = False
        if self.path and self.path.is_file():
            text = self.path.read_text()
            self._torn_tail = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                self.entries[entry["key"]] = entry["value"]

    @staticmethod
    def key(model_digest: str, calibration_digest: str, units: tuple[str, ...], spec: str) -> str:
        raw = json.dumps([model_digest, calibration_digest, sorted(units), spec])
        return hashlib.sha256(raw.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict) -> None:
        self.entries[key] = value
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write(("\n" if self._torn_tail else "") + json.dumps({"key": key, "value": value}) + "\n")
                self._torn_tail = False
                handle.flush()
                os.fsync(handle.fileno())


def default_cache_dir() -> Path:
    return Path(os.environ.get("QSLM_CACHE_DIR", Path.home() / ".cache" / "qslm"))
