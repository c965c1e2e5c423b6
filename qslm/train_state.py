"""The resume state of a training run, kept in one safetensors file of the run's work folder.

Tensors (weights, Adam moments and step counts, moving-average weights, the torch random state) are
stored as tensors; everything else (step, history, seconds, options fingerprint, optimizer
hyper-parameters, the Python random state, the epoch's batch order) as JSON in the file's metadata.
Nothing is unpickled on resume, and one ``os.replace`` swaps the whole state at once, so a run killed
at any moment leaves either the previous state or the new one.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .errors import QslmError
from .jsonfile import parse_json

STATE_FILE = "state.safetensors"
# Work-folder files of earlier qslm versions: pickles, which can run code when loaded, so they are refused.
LEGACY_FILES = ("checkpoint.pt", "teacher_logits.pt")
METADATA_KEY = "qslm.training_state"  # the JSON part of the state, in the safetensors metadata
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    model: dict[str, torch.Tensor]
    optimizer: dict  # a torch optimizer ``state_dict()``
    ema: dict[str, torch.Tensor] | None  # the AveragedModel ``state_dict()``, when a moving average is kept
    step: int
    history: list[dict]
    seconds: float
    options: str  # fingerprint of the options that decide the result
    python_rng: tuple
    torch_rng: torch.Tensor  # uint8, as ``torch.get_rng_state()`` gives it
    epoch_batches: list[list[int]]


def temporary_sibling(path: Path) -> Path:
    """Where ``path`` is written before it is moved into place."""
    return path.with_name(path.name + ".tmp")


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically: a temporary sibling, flushed to disk, then renamed."""
    data = save({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, metadata)
    tmp = temporary_sibling(path)
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def read_tensors(path: Path, start_over: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors (on the CPU) and metadata; ``start_over`` is the folder to delete
    when the file is unreadable."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {name: file.get_tensor(name) for name in file.keys()}, file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise QslmError(f"{path} is not a readable safetensors file ({err}); "
                        f"delete {start_over} to start over") from None


def refuse_legacy_files(work: Path) -> None:
    for name in LEGACY_FILES:
        if (work / name).exists():
            raise QslmError(f"{work / name} is a checkpoint of an older qslm version, which is not loaded "
                            f"(pickle files can run code); delete the folder {work} to start over")


def write_state(path: Path, state: TrainingState) -> None:
    tensors = {f"model.{name}": t for name, t in state.model.items()}
    tensors.update({f"ema.{name}": t for name, t in (state.ema or {}).items()})
    tensors["torch_rng"] = state.torch_rng
    optimizer_values: dict[str, dict] = {}  # per parameter index, the entries that are not tensors
    for index, entries in state.optimizer["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                optimizer_values.setdefault(str(index), {})[key] = value
    document = {"format": FORMAT_VERSION, "step": state.step, "history": state.history, "seconds": state.seconds,
                "options": state.options, "python_rng": state.python_rng, "epoch_batches": state.epoch_batches,
                "has_ema": state.ema is not None,
                "optimizer": {"param_groups": state.optimizer["param_groups"], "values": optimizer_values}}
    write_tensors(path, tensors, {METADATA_KEY: json.dumps(document)})


def read_state(path: Path, work: Path) -> TrainingState:
    """The state written by ``write_state``; a file that is not one is refused, naming ``work`` to delete."""
    tensors, metadata = read_tensors(path, work)
    try:
        document = parse_json(metadata[METADATA_KEY], f"{path} metadata")
        if document["format"] != FORMAT_VERSION:
            raise ValueError(f"format {document['format']!r}, expected {FORMAT_VERSION}")
        state = TrainingState(
            model=_with_prefix(tensors, "model."), optimizer=_optimizer_state(tensors, document["optimizer"]),
            ema=_with_prefix(tensors, "ema.") if document["has_ema"] else None, step=int(document["step"]),
            history=list(document["history"]), seconds=float(document["seconds"]), options=document["options"],
            python_rng=_python_rng_state(document["python_rng"]), torch_rng=tensors["torch_rng"],
            epoch_batches=[[int(i) for i in batch] for batch in document["epoch_batches"]])
    except (KeyError, TypeError, ValueError, QslmError) as err:  # QslmError: not JSON, or a key twice
        raise QslmError(f"{path} is not a qslm training state ({type(err).__name__}: {err}); "
                        f"delete {work} to start over") from None
    if state.torch_rng.dtype != torch.uint8:
        raise QslmError(f"{path}: torch_rng is {state.torch_rng.dtype}, expected uint8; delete {work} to start over")
    return state


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}


def _optimizer_state(tensors: dict[str, torch.Tensor], document: dict) -> dict:
    state: dict[int, dict] = {}
    for name, tensor in _with_prefix(tensors, "optimizer.").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in document["values"].items():
        state.setdefault(int(index), {}).update(values)
    # JSON has no tuples; torch keeps e.g. Adam's betas as one. Only "params" is a list.
    groups = [{key: tuple(value) if isinstance(value, list) and key != "params" else value
               for key, value in group.items()} for group in document["param_groups"]]
    return {"state": state, "param_groups": groups}


def _python_rng_state(value) -> tuple:
    """``random.getstate()`` from its JSON form (lists for tuples), checked by setting it on a generator."""
    version, internal, gauss_next = value
    state = (version, tuple(internal), gauss_next)
    random.Random().setstate(state)  # raises TypeError/ValueError when malformed
    return state
