"""What a task's evaluate/test returns: one number or per-example scores, read into one shape, with
clear errors for what cannot be scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qslm.errors import QslmError
from qslm.tasks.scores import Measured, check_same_examples, read_measurement


@pytest.mark.parametrize("value", [81.5, 81, np.float32(81.5), np.float64(81.5), np.array(81.5), torch.tensor(81.5)])
def test_one_number_is_the_metric_without_scores(value):
    measured = read_measurement(value, "Task.evaluate")
    assert measured.metric == pytest.approx(81.5, abs=0.5) and measured.scores is None and measured.examples is None


@pytest.mark.parametrize("make", [torch.tensor, np.array, list, tuple])
def test_scores_are_averaged(make):
    measured = read_measurement(make([100.0, 0.0, 100.0, 100.0]), "Task.evaluate")
    assert measured.metric == 75.0 and measured.scores.dtype == np.float64 and measured.examples == 4


def test_nll_scores_give_their_perplexity():
    nll = torch.tensor([1.0, 2.0, 3.0])
    assert read_measurement(nll, "Task.test", scores_are_nll=True).metric == pytest.approx(math.exp(2.0))


def test_one_number_where_nll_scores_are_promised_is_an_error():
    with pytest.raises(QslmError, match="Task.evaluate returned one number, but Task\\(scores_are_nll=True\\)"):
        read_measurement(20.0, "Task.evaluate", scores_are_nll=True)


@pytest.mark.parametrize("value, message", [
    (torch.zeros(3, 2), r"Task.evaluate returned scores of shape \(3, 2\); expected one number or a 1-D"),
    (torch.tensor([]), r"Task.evaluate returned no scores \(shape \(0,\)\)"),
    (torch.tensor([1.0, float("nan"), 2.0]), r"Task.evaluate returned 1 non-finite scores of 3 \(shape \(3,\); "
                                             r"the first at position 1"),
    (float("inf"), "must return a finite number or per-example scores"),
    (True, "must return a number or per-example scores, got True"),
    ("81.5", "got str"),
    (torch.tensor([True, False]), "torch.bool tensor"),
    (["a", "b"], "expected numbers"),
    ([1.0, [2.0, 3.0]], "not a sequence of numbers"),
])
def test_what_cannot_be_scores_is_refused_by_name(value, message):
    with pytest.raises(QslmError, match=message):
        read_measurement(value, "Task.evaluate")


def test_scores_must_pair_with_the_float_models():
    reference = Measured(75.0, np.array([100.0, 0.0, 100.0, 100.0]))
    check_same_examples(Measured(50.0, np.array([100.0, 0.0, 0.0, 100.0])), reference, "Task.evaluate")
    with pytest.raises(QslmError, match=r"Task.evaluate returned scores of shape \(3,\) for a quantized model but "
                                        r"\(4,\) for the float model"):
        check_same_examples(Measured(50.0, np.array([100.0, 0.0, 0.0])), reference, "Task.evaluate")
    with pytest.raises(QslmError, match="returned one number for a quantized model but 4 scores"):
        check_same_examples(Measured(50.0), reference, "Task.evaluate")


@pytest.mark.parametrize("value, metric", [(float("nan"), math.nan), (float("inf"), math.inf),
                                           (torch.tensor([1.0, float("nan"), 2.0]), math.nan),
                                           (np.array([1.0, np.inf]), math.inf)])
def test_a_reported_figure_may_be_non_finite(value, metric):
    """A test figure decides nothing: read as it is, and said to be not finite; validation keeps refusing it."""
    measured = read_measurement(value, "Task.test", allow_non_finite=True)
    assert not measured.finite and (math.isnan(measured.metric) if math.isnan(metric) else measured.metric == metric)
    assert read_measurement([1.0, 2.0], "Task.test", allow_non_finite=True).finite
    with pytest.raises(QslmError, match="non-finite|finite number"):
        read_measurement(value, "Task.evaluate")
