"""Model inputs, and running a model on them: the general code every layer that runs a user's model shares.

A model input is a tensor (the model's one argument), a tuple or list (its positional arguments) or a
dict (its keyword arguments). ``call_model`` runs one; ``run_checked`` runs inputs for the first time,
naming an input the model cannot run (``Task.calibration[3]``, from ``TaskInputs``) in the error.
Nothing here knows of tasks, quantization or the search: it builds on torch and ``qslm.errors`` only,
so that every layer above may import it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import chain

import torch
from torch import nn

from .errors import QslmError

ModelInput = torch.Tensor | tuple | list | Mapping


class TaskInputs(list):
    """A Task's model inputs, as a list that knows the field it came from (``name``, e.g.
    ``Task.calibration``), so that an input the model fails on is named in the error."""

    def __init__(self, items: Iterable[ModelInput] = (), name: str = "inputs"):
        super().__init__(items)
        self.name = name


def inputs_name(inputs: Iterable[ModelInput], default: str) -> str:
    """The field a Task's inputs came from, or ``default`` for inputs from elsewhere."""
    return getattr(inputs, "name", default)


def _to(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def call_model(model: nn.Module, inputs: ModelInput):
    """``model`` on one calibration item: a tensor is one argument, a tuple/list positional arguments,
    a dict keyword arguments; tensors are moved to the model's device."""
    inputs = _to(inputs, model_device(model))
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def check_in_memory(model: nn.Module, what: str) -> None:
    """Refuse, before ``what`` (an input, e.g. ``Task.calibration[0]``) is run, a model with a tensor on the
    meta device: it has a shape and no values, so moving or running it fails deep inside torch."""
    for name, tensor in chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_meta:
            raise QslmError(f"{what}: cannot run the model, its tensor {name!r} is on the "
                            "meta device (a shape without values); expected a model with its weights in memory "
                            "(not on the meta device): load or initialise its weights first")


def _look_up_ids(what: str, embedding: str) -> Callable:
    """A forward pre-hook for the nn.Embedding named ``embedding``: ids it cannot look up are refused before
    the look-up, whose own error names no input (and, on a GPU, is a device-side assert that ends the
    process)."""
    def check(module: nn.Embedding, args: tuple) -> None:
        ids = args[0] if args else None
        if not isinstance(ids, torch.Tensor):
            return
        size = module.num_embeddings
        expected = f"expected integer token ids below the embedding size {size}"
        if ids.dtype not in (torch.int64, torch.int32):
            raise QslmError(f"{what}: embedding {embedding} was given {str(ids.dtype).replace('torch.', '')} "
                            f"values; {expected} (int64 or int32)")
        if ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= size:
                raise QslmError(f"{what}: embedding {embedding} was given token id {low if low < 0 else high}; "
                                f"{expected}")
    return check


@contextmanager
def _ids_checked(model: nn.Module, what: str) -> Iterator[None]:
    # plain nn.Embedding only: a subclass with its own forward may take other inputs
    handles = [module.register_forward_pre_hook(_look_up_ids(what, repr(name) if name else type(model).__name__))
               for name, module in model.named_modules()
               if isinstance(module, nn.Embedding) and type(module).forward is nn.Embedding.forward]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def call_checked(model: nn.Module, inputs: ModelInput, what: str):
    """``call_model`` on an input run for the first time, named ``what`` (e.g. ``Task.calibration[3]``):
    ids an embedding cannot look up are refused before the look-up, and whatever else the model raises
    becomes one QslmError naming the input, the exception and its first line."""
    with _ids_checked(model, what):
        try:
            return call_model(model, inputs)
        except (QslmError, MemoryError, torch.cuda.OutOfMemoryError):  # out of memory is no fault of the input
            raise
        except Exception as error:  # the user's model may raise anything on an input it does not accept
            lines = str(error).strip().splitlines()
            said = f" ({lines[0][:300]})" if lines else ""
            raise QslmError(f"{what}: the model raised {type(error).__name__}{said}; expected an input the model "
                            "accepts (a tensor is its one argument, a tuple its positional arguments, a dict "
                            "its keyword arguments)") from error


def first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def inferences_in(inputs: ModelInput) -> int:
    """Rows of the first tensor of an input: the number of inferences (sequences) it holds."""
    tensor = first_tensor(inputs)
    if tensor is None or tensor.dim() == 0:
        raise QslmError("a model input holds no batched tensor, so its number of inferences is unknown")
    return int(tensor.shape[0])


def inputs_digest(items: Iterable[ModelInput]) -> str:
    """SHA-256 over every tensor of the inputs (values, shapes, dtypes) and their structure."""
    h = hashlib.sha256()

    def visit(value) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, Mapping):
            h.update(b"{")
            for key in sorted(value, key=str):
                h.update(str(key).encode())
                visit(value[key])
            h.update(b"}")
        elif isinstance(value, (tuple, list)):
            h.update(b"(")
            for item in value:
                visit(item)
            h.update(b")")
        else:
            h.update(repr(value).encode())

    for item in items:
        visit(item)
    return h.hexdigest()


def run_checked(model: nn.Module, inputs: Iterable[ModelInput], reset: Callable[[nn.Module], object] | None = None,
                default_name: str = "inputs") -> Iterator[tuple[ModelInput, object]]:
    """Each input and the model's output on it, for inputs run for the first time: ``reset(model)`` before
    each (to clear neuron state), and an input the model cannot run is named in the error
    (``Task.calibration[3]`` for a Task's, else ``{default_name}[3]``; ``call_checked``)."""
    name = inputs_name(inputs, default_name)
    check_in_memory(model, f"{name}[0]")
    for index, item in enumerate(inputs):
        if reset is not None:
            reset(model)
        yield item, call_checked(model, item, f"{name}[{index}]")


@torch.no_grad()
def run_inputs(model: nn.Module, inputs: Iterable[ModelInput], reset: Callable[[nn.Module], object] | None = None
               ) -> int:
    """Run ``model`` on every input (no gradients; ``reset(model)`` before each, to clear neuron state)
    and return how many inferences they held. A Task's inputs (``TaskInputs``) are run checked
    (``run_checked``), so an input the model fails on is named; others, e.g. a slice timed, are not."""
    if isinstance(inputs, TaskInputs):
        return sum(inferences_in(item) for item, _ in run_checked(model, inputs, reset))
    count = 0
    for item in inputs:
        if reset is not None:
            reset(model)
        call_model(model, item)
        count += inferences_in(item)
    return count
