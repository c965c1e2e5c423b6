"""Sensitivity analysis: how much quantizing one unit (a module, or a whole block) to b bits,
everything else in float, damages the model's outputs on a small set of calibration inputs.

No task-specific code: ``OutputReference`` keeps the float model's outputs on the calibration inputs
and measures the current (fake-quantized) model against them:
  * ``kl``: for logits, the mean KL(p_float || p_quantized) of the softmax over the last dimension, per
    output position (per example for a classifier, per token for a language model);
  * ``mse``: for any other output, the squared error over the float output's energy (normalised MSE).
The compared tensor is picked from whatever the model returns (a tensor, or the floating tensors of a
tuple / list / dict), or by the task's ``output`` function.
Results are cached on disk keyed by model hash + calibration digest + units + spec, so re-runs and
resumed searches do not recompute them; each cache line carries a digest of its key and value
(``qslm.digest_lines``), so an edited or damaged line is measured again rather than trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..digest_lines import Damaged, NotJson, digested_line, dropped_note, lines_measured_again, read_digested
from ..errors import QslmError
from ..model_inputs import run_checked


def model_hash(model: nn.Module) -> str:
    """SHA-256 over the float state dict (names, shapes, values): the model's identity for caches."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def floating_tensors(outputs) -> list[torch.Tensor]:
    """Every floating tensor of a model's outputs, in order (nested tuples, lists and dicts included)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs] if outputs.is_floating_point() else []
    if isinstance(outputs, dict):
        return [t for key in outputs for t in floating_tensors(outputs[key])]
    if isinstance(outputs, (tuple, list)):
        return [t for item in outputs for t in floating_tensors(item)]
    return []


class OutputReference:
    """The float model's outputs on ``inputs`` (model inputs: tensors, tuples or dicts), and the damage
    of the model as it computes now against them. ``measure`` is ``kl``, ``mse`` or ``auto`` (kl for a
    model that returns one floating tensor, mse otherwise); ``output`` picks the tensor to compare."""

    def __init__(self, model: nn.Module, inputs: list, measure: str = "auto", output=None, reset=None):
        self.model, self.inputs, self.output, self.reset = model, inputs, output, reset
        raw = self._raw_outputs()
        if measure == "auto":
            measure = "kl" if output is not None or isinstance(raw[0], torch.Tensor) else "mse"
        if measure not in ("kl", "mse"):
            raise QslmError(f"unknown damage measure {measure!r}; expected kl, mse or auto")
        self.measure = measure
        self.reference = [self._select(r) for r in raw]
        if measure == "kl":
            self.reference = [[F.log_softmax(t, dim=-1) for t in ts] for ts in self.reference]
            # p_float, used by every damage measurement: computed once
            self._probabilities = [[t.exp() for t in ts] for ts in self.reference]
        self.energy = sum(float(t.double().pow(2).sum()) for ts in self.reference for t in ts)
        self.positions = sum(self.positions_of(index) for index in range(len(self.reference)))

    @torch.no_grad()
    def _raw_outputs(self) -> list:
        # the first run of these inputs: an input the model fails on is named (e.g. Task.calibration[3])
        return [output for _, output in run_checked(self.model, self.inputs, self.reset)]

    def _select(self, outputs) -> list[torch.Tensor]:
        chosen = self.output(outputs) if self.output is not None else outputs
        tensors = floating_tensors(chosen)
        if not tensors:
            raise QslmError(f"the model's outputs hold no floating tensor to compare (got {type(chosen).__name__}); "
                            "pass output= to pick one")
        if self.output is not None and len(tensors) != 1:
            raise QslmError(f"output= must return one tensor, got {len(tensors)}")
        return [t.detach().float().cpu() for t in tensors]

    def outputs(self) -> list[list[torch.Tensor]]:
        """The model's current outputs on the inputs, as the damage compares them."""
        current = [self._select(r) for r in self._raw_outputs()]
        if self.measure == "kl":
            current = [[F.log_softmax(t, dim=-1) for t in ts] for ts in current]
        return current

    def damage(self) -> dict[str, float]:
        """``{"damage": d, "measure": "kl"|"mse"}`` of the model as it computes now."""
        total = 0.0
        for index, cur in enumerate(self.outputs()):
            for position, (r, q) in enumerate(zip(self.reference[index], cur)):
                if r.shape != q.shape:
                    raise QslmError(f"the model's output changed shape from {list(r.shape)} to {list(q.shape)}")
                if self.measure == "kl":
                    total += float((self._probabilities[index][position] * (r - q)).sum(-1).double().sum())
                else:
                    total += float((q - r).double().pow(2).sum())
        value = total / self.positions if self.measure == "kl" else total / (self.energy or 1.0)
        return {"damage": value, "measure": self.measure}

    def positions_of(self, index: int) -> int:
        """Output positions (examples, or tokens) of calibration input ``index``."""
        return sum(t[..., 0].numel() for t in self.reference[index])

    def surrogate_loss(self, outputs, index: int) -> torch.Tensor:
        """A differentiable loss of the model's outputs on input ``index`` whose curvature measures the
        damage: cross-entropy with the float model's own predictions (kl), or half the squared error to
        the float outputs over their energy (mse). Used for Fisher and Hessian estimates."""
        current = [t.float() for t in floating_tensors(self.output(outputs) if self.output else outputs)]
        total = 0.0
        for r, q in zip(self.reference[index], current):
            r = r.to(q.device)
            if self.measure == "kl":
                total = total + F.cross_entropy(q.reshape(-1, q.shape[-1]), r.argmax(-1).reshape(-1), reduction="sum")
            else:
                total = total + 0.5 * (q - r).pow(2).sum() / (self.energy or 1.0)
        return total


CACHE_CONTEXT = "qslm sensitivity cache"  # digested with each line: the key already names the model and data


class SensitivityCache:
    """JSON-lines file of measured damages; one line per (model, calibration, units, spec), each
    ``{"key": ..., "value": {...}, "digest": ...}``. A line that is JSON but whose digest is missing or
    does not match (an edit, a value moved to another key, a line from before digests), or that repeats
    a field, is dropped and measured again; ``dropped_lines`` lists those no valid line replaces."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        self.dropped_lines: list[int] = []
        # A last line cut short by a crash: the next entry must start on a line of its own, or it is lost.
        # The torn part stays in the file (several searches may share a cache, so it is never truncated).
        self._torn_tail = False
        if self.path and self.path.is_file():
            data = self.path.read_bytes()
            self._torn_tail = bool(data) and not data.endswith(b"\n")
            damaged: list[tuple[int, str | None]] = []
            for line_no, line in enumerate(data.splitlines(), start=1):
                try:
                    entry = read_digested(line.decode("utf-8"), CACHE_CONTEXT)
                except UnicodeDecodeError:  # qslm writes only ASCII
                    entry = Damaged(None)
                if isinstance(entry, NotJson):
                    continue  # not JSON: a line cut short by a crash, left behind a later entry's newline
                if isinstance(entry, Damaged) or set(entry) != {"key", "value"} or not isinstance(
                        entry["key"], str) or not isinstance(entry["value"], dict):
                    damaged.append((line_no, entry.key if isinstance(entry, Damaged) else None))
                    continue
                self.entries[entry["key"]] = entry["value"]
            self.dropped_lines = lines_measured_again(damaged, self.entries)

    @staticmethod
    def key(model_digest: str, calibration_digest: str, units: tuple[str, ...], spec: str) -> str:
        raw = json.dumps([model_digest, calibration_digest, sorted(units), spec])
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def dropped(self) -> int:
        """Damaged lines dropped whose sensitivities are measured again."""
        return len(self.dropped_lines)

    def note(self) -> str | None:
        """One line for the user when damaged lines were dropped, else None."""
        return dropped_note(self.path, "sensitivity cache", self.dropped_lines,
                            "those sensitivities are measured again")

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict) -> None:
        self.entries[key] = value
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write(("\n" if self._torn_tail else "") + digested_line({"key": key, "value": value},
                                                                                CACHE_CONTEXT))
                self._torn_tail = False
                handle.flush()
                os.fsync(handle.fileno())


def default_cache_dir() -> Path:
    return Path(os.environ.get("QSLM_CACHE_DIR", Path.home() / ".cache" / "qslm"))
