"""What a task's ``evaluate`` or ``test`` returns, read into one shape: the metric, and the per-example
scores it is the mean of when the task gave them.

A task may return one number (the metric) or one score per example: a 1-D tensor, NumPy array or
sequence, e.g. per-sentence correctness in percent (100.0 or 0.0: the mean is accuracy in percent) or
per-token negative log-likelihoods. The metric of scores is their mean, or with
``Task(scores_are_nll=True)`` exp of their mean (the perplexity of NLLs in nats). Only per-example scores
let the search compare a plan with the float model example by example and bound its loss with
confidence (``qslm.search.confidence``); one number cannot be bounded.

Validation values must be finite: they decide which plans are feasible. A test value, only reported,
may not be (a diverged model's perplexity): it is read as it is, ``Measured.finite`` says so, and the
report writes it as null.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import QslmError


@dataclass(frozen=True)
class Measured:
    """The task's metric of one model, and the per-example scores it came from (None: one number)."""
    metric: float
    scores: np.ndarray | None = None  # float64, 1-D

    @property
    def examples(self) -> int | None:
        return None if self.scores is None else len(self.scores)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.metric) and (self.scores is None or bool(np.isfinite(self.scores).all()))


def metric_of_scores(scores: np.ndarray, scores_are_nll: bool) -> float:
    mean = float(np.mean(scores))
    return math.exp(mean) if scores_are_nll else mean


def read_measurement(value, what: str, scores_are_nll: bool = False, allow_non_finite: bool = False) -> Measured:
    """``value`` returned by the task's ``what`` call (e.g. ``"Task.evaluate"``) as a ``Measured``: one finite
    number, or a non-empty 1-D array of finite per-example scores (NaN and infinities too when
    ``allow_non_finite``: a figure that is only reported)."""
    array = _as_array(value, what)
    if array.ndim == 0:
        number = float(array)
        if not math.isfinite(number) and not allow_non_finite:
            raise QslmError(f"{what} must return a finite number or per-example scores, got {number!r}")
        if scores_are_nll:
            raise QslmError(f"{what} returned one number, but Task(scores_are_nll=True) says it returns "
                            "per-example negative log-likelihoods; return one NLL per example (or token)")
        return Measured(number)
    if array.ndim != 1:
        raise QslmError(f"{what} returned scores of shape {tuple(array.shape)}; expected one number or a 1-D "
                        "sequence with one score per example")
    if len(array) == 0:
        raise QslmError(f"{what} returned no scores (shape (0,)); expected one score per example")
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad) and not allow_non_finite:
        raise QslmError(f"{what} returned {len(bad)} non-finite scores of {len(array)} (shape {tuple(array.shape)}; "
                        f"the first at position {int(bad[0])}: {array[bad[0]]!r}); every score must be finite")
    return Measured(metric_of_scores(array, scores_are_nll), array)


def check_same_examples(measured: Measured, reference: Measured, what: str) -> None:
    """Per-example scores of the same examples as the float model's (``reference``), or one number
    when it gave one: paired comparison needs both."""
    if (measured.scores is None) != (reference.scores is None):
        given = "one number" if measured.scores is None else f"{measured.examples} scores"
        expected = "one number" if reference.scores is None else f"{reference.examples} scores"
        raise QslmError(f"{what} returned {given} for a quantized model but {expected} for the float model; "
                        "it must return the same kind every time")
    if measured.scores is not None and measured.examples != reference.examples:
        raise QslmError(f"{what} returned scores of shape ({measured.examples},) for a quantized model but "
                        f"({reference.examples},) for the float model; one score per example, the same "
                        "examples every call")


def _as_array(value, what: str) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)):
        raise QslmError(f"{what} must return a number or per-example scores, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise QslmError(f"{what} returned a {value.dtype} tensor; expected real numbers")
        return value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return np.asarray(float(value), dtype=np.float64)
    if isinstance(value, np.ndarray) or (isinstance(value, Sequence) and not isinstance(value, (str, bytes))):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise QslmError(f"{what} returned a {type(value).__name__} that is not a sequence of numbers ({error})"
                            ) from None
        if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise QslmError(f"{what} returned a {type(value).__name__} of {array.dtype}; expected numbers")
        return array.astype(np.float64)
    raise QslmError(f"{what} must return a number or per-example scores (a 1-D tensor, array or sequence), got "
                    f"{type(value).__name__}")
