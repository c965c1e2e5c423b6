"""The reported measurement: the task's test (its validation data without one), read as the float model's
was, a non-finite test figure reported rather than refused."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qslm.errors import QslmError
from qslm.search.verify import reported
from qslm.tasks.base import Task

BATCH = torch.zeros(2, 3)


def task(**fields) -> Task:
    return Task(**{"evaluate": lambda m: [1.0, 0.0], "calibration": [BATCH], **fields})


def test_the_test_is_reported_and_without_one_the_validation_data():
    model = nn.Identity()
    assert reported(task(test=lambda m: [3.0, 5.0]), model).metric == 4.0
    assert reported(task(), model).metric == 0.5
    assert math.isnan(reported(task(test=lambda m: [math.nan, 1.0]), model).metric)  # null in the report
    with pytest.raises(QslmError):
        reported(task(evaluate=lambda m: [math.nan, 1.0]), model)  # a validation figure must be finite


def test_the_reported_figure_pairs_with_the_float_models():
    model = nn.Identity()
    float_reported = reported(task(test=lambda m: [1.0, 2.0]), model)
    with pytest.raises(QslmError, match=r"Task.test returned scores of shape \(3,\) for a quantized model but "
                                        r"\(2,\) for the float model"):
        reported(task(test=lambda m: [1.0, 2.0, 3.0]), model, float_reported)
