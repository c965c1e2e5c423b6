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
calibration inputs (KL divergence for logits, a normalised MSE otherwise; see ``damage_measure``). ``output``
picks the tensor to compare from whatever the model returns (default: the tensor itself, or every
floating tensor of a tuple, list or dict).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import InitVar, dataclass

import torch
from torch import nn

from ..errors import QslmError
from ..model_inputs import ModelInput, TaskInputs, inputs_digest
from .scores import read_measurement

DAMAGE_MEASURES = ("auto", "kl", "mse")


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
    damage_measure: str = "auto"
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
    damage: InitVar[str | None] = None  # the former name of damage_measure

    def __post_init__(self, damage: str | None):
        if damage is not None:
            if self.damage_measure != "auto":
                raise QslmError("Task(damage=...) and Task(damage_measure=...) both name the damage measure: give "
                                "damage_measure (damage is its former name)")
            self.damage_measure = damage
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
        if self.damage_measure not in DAMAGE_MEASURES:
            raise QslmError(f"Task.damage_measure must be one of {list(DAMAGE_MEASURES)}, got {self.damage_measure!r}")
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

