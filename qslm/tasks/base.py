"""A task: the user's data and metric, which is all the search engine knows of them.

    task = qslm.Task(
        evaluate=my_eval,          # callable(model) -> per-example scores (or one float) on the validation data
        calibration=my_batches,    # re-iterable of model inputs: a tensor, a tuple (positional) or a dict (keyword)
        higher_is_better=True,
        test=my_test_eval,         # optional: run once on the chosen plan, the reported figure
        quantizer_calibration=more_batches,  # optional: what GPTQ and the codebook fit to (default: calibration)
    )

``evaluate`` and ``test`` return one score per example (a 1-D tensor, array or sequence: e.g. 100.0/0.0
correctness per sentence, or per-token NLL with ``scores_are_nll=True``) or one number; the metric is the
scores' mean (``qslm.tasks.scores``). Only per-example scores let a limit be judged with confidence,
paired with the float model example by example; for one number no bound can be applied.

``max_drop`` limits a higher-is-better metric absolutely, in the metric's own units; a lower-is-better
metric (perplexity, loss) is limited relatively (``max_relative_increase``).

Sensitivity needs no task-specific code: it is the damage to the model's outputs against float on the
calibration inputs (KL divergence for logits, a normalised MSE otherwise; see ``damage``). ``output``
picks the tensor to compare from whatever the model returns (default: the tensor itself, or every
floating tensor of a tuple, list or dict).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from ..errors import QslmError
from .scores import read_measurement

DAMAGE_MEASURES = ("auto", "kl", "mse")
ModelInput = torch.Tensor | tuple | list | Mapping


@dataclass
class Task:
    evaluate: Callable[[nn.Module], object]  # -> per-example scores, or one float
    calibration: Iterable[ModelInput]
    higher_is_better: bool = True
    test: Callable[[nn.Module], object] | None = None
    # outputs -> the tensor whose damage is measured (default: see the module docstring)
    output: Callable[[object], torch.Tensor] | None = None
    # "kl": the compared tensor holds logits over its last dimension; "mse": any values, error normalised
    # by the float output's energy; "auto": kl for a single floating tensor output, mse otherwise
    damage: str = "auto"
    # inputs run to count operations and firing rates, one inference per row of the first tensor
    # (default: the calibration inputs; batch size 1 counts no padding)
    profile_inputs: Iterable[ModelInput] | None = None
    name: str = "custom"
    metric_name: str = "metric"
    test_split: str = "test"
    # inputs whose unit inputs GPTQ's error compensation and the codebook's weighting are fitted to
    # (default: the calibration inputs). Best more of them than sensitivity needs, and none of the
    # validation data: weights fitted to what the search checks them on look better there than elsewhere.
    quantizer_calibration: Iterable[ModelInput] | None = None
    # identifies the validation data and metric in a search's journal, so a resumed search never mixes in
    # measurements of other data (default: the evaluate function's qualified name and the calibration inputs)
    fingerprint: str | None = None
    # True: the per-example scores are negative log-likelihoods (nats) and the metric is their perplexity,
    # exp(mean); a lower-is-better metric. Scale each NLL by tokens/words for word-level perplexity.
    scores_are_nll: bool = False

    def __post_init__(self):
        if not callable(self.evaluate):
            raise QslmError(f"Task.evaluate must be a callable(model) -> per-example scores or a float, got "
                            f"{type(self.evaluate).__name__}")
        if self.test is not None and not callable(self.test):
            raise QslmError(f"Task.test must be a callable(model) -> per-example scores or a float, or None, got "
                            f"{type(self.test).__name__}")
        if self.output is not None and not callable(self.output):
            raise QslmError(f"Task.output must be a callable(outputs) -> tensor or None, got "
                            f"{type(self.output).__name__}")
        if not isinstance(self.higher_is_better, bool):
            raise QslmError(f"Task.higher_is_better must be True or False, got {self.higher_is_better!r}")
        if not isinstance(self.scores_are_nll, bool):
            raise QslmError(f"Task.scores_are_nll must be True or False, got {self.scores_are_nll!r}")
        if self.scores_are_nll and self.higher_is_better:
            raise QslmError("Task.scores_are_nll=True makes the metric a perplexity (lower is better); "
                            "set higher_is_better=False")
        if self.damage not in DAMAGE_MEASURES:
            raise QslmError(f"Task.damage must be one of {list(DAMAGE_MEASURES)}, got {self.damage!r}")
        self.calibration = _reiterable(self.calibration, "calibration")
        if self.profile_inputs is not None:
            self.profile_inputs = _reiterable(self.profile_inputs, "profile_inputs")
        if self.quantizer_calibration is not None:
            self.quantizer_calibration = _reiterable(self.quantizer_calibration, "quantizer_calibration")

    def metric_of(self, value, what: str = "Task.evaluate") -> float:
        """The metric of what ``evaluate`` or ``test`` returned (the mean of per-example scores, exp of it
        for NLLs, or the one number given)."""
        return read_measurement(value, what, self.scores_are_nll).metric

    @property
    def profiling(self) -> list[ModelInput]:
        return self.profile_inputs if self.profile_inputs is not None else self.calibration

    @property
    def quantizer_inputs(self) -> list[ModelInput]:
        """The inputs GPTQ and the codebook are fitted to."""
        return self.quantizer_calibration if self.quantizer_calibration is not None else self.calibration

    def identity(self) -> str:
        """The fingerprint a journal header records (see ``fingerprint``)."""
        if self.fingerprint is not None:
            return self.fingerprint
        function = getattr(self.evaluate, "__qualname__", type(self.evaluate).__qualname__)
        return f"{self.name}:{function}:{inputs_digest(self.calibration)}"


def check_positive(**sizes: int | None) -> None:
    """Each size given (not None) is at least 1; the error names the size by its keyword."""
    for name, value in sizes.items():
        if value is not None and value <= 0:
            raise QslmError(f"{name.replace('_', ' ')} must be positive, got {value}")


class TaskInputs(list):
    """A Task's model inputs, as a list that knows the field it came from (``name``, e.g.
    ``Task.calibration``), so that an input the model fails on is named in the error."""

    def __init__(self, items: Iterable[ModelInput] = (), name: str = "inputs"):
        super().__init__(items)
        self.name = name


def inputs_name(inputs: Iterable[ModelInput], default: str) -> str:
    """The field a Task's inputs came from, or ``default`` for inputs from elsewhere."""
    return getattr(inputs, "name", default)


def _reiterable(inputs, field: str) -> list[ModelInput]:
    """The inputs as a list: a generator would be used up by the first pass over it."""
    if isinstance(inputs, (torch.Tensor, Mapping)):
        raise QslmError(f"Task.{field} must be an iterable of model inputs (e.g. a list of batches), "
                        f"got a single {type(inputs).__name__}; wrap it in a list")
    try:
        items = list(inputs)
    except TypeError:
        raise QslmError(f"Task.{field} must be an iterable of model inputs, got {type(inputs).__name__}") from None
    if not items:
        raise QslmError(f"Task.{field} is empty: give at least one batch of model inputs")
    for index, item in enumerate(items):
        if not isinstance(item, (torch.Tensor, tuple, list, Mapping)):
            raise QslmError(f"Task.{field}[{index}] is a {type(item).__name__}; a model input is a tensor, "
                            "a tuple of positional arguments or a dict of keyword arguments")
    return TaskInputs(items, f"Task.{field}")


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
