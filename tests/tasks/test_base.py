"""A Task checks what the user hands it, naming the field, and keeps its inputs re-iterable."""
from __future__ import annotations

import pytest
import torch

from qslm.errors import QslmError
from qslm.tasks.base import Task

BATCH = torch.zeros(2, 3, dtype=torch.long)


def task(**fields) -> Task:
    return Task(**{"evaluate": lambda m: 0.0, "calibration": [BATCH], **fields})


@pytest.mark.parametrize("fields, message", [
    ({"evaluate": 3}, "Task.evaluate must be a callable"),
    ({"test": "dev"}, "Task.test must be a callable"),
    ({"higher_is_better": 1}, "Task.higher_is_better must be True or False, got 1"),
    ({"damage_measure": "l1"}, "Task.damage_measure must be one of"),
    ({"damage": "l1"}, "Task.damage_measure must be one of"),  # the former name
    ({"calibration": BATCH}, "Task.calibration must be an iterable of model inputs .* single Tensor; wrap it"),
    ({"calibration": []}, "Task.calibration is empty"),
    ({"calibration": [BATCH, 3]}, "Task.calibration\\[1\\] is a int"),
    ({"quantizer_calibration": []}, "Task.quantizer_calibration is empty"),
    ({"quantizer_calibration": 5}, "Task.quantizer_calibration must be an iterable of model inputs, got int"),
    ({"profile_inputs": BATCH}, "Task.profile_inputs must be an iterable"),
])
def test_bad_fields_are_named(fields, message):
    with pytest.raises(QslmError, match=message):
        task(**fields)


def test_inputs_survive_a_generator_and_quantizers_default_to_calibration():
    made = task(calibration=(b for b in [BATCH, BATCH + 1]))
    assert len(made.calibration) == 2 and made.quantizer_inputs is made.calibration
    fitted = task(quantizer_calibration=(b for b in [BATCH + 2]))
    assert len(fitted.quantizer_inputs) == 1 and torch.equal(fitted.quantizer_inputs[0], BATCH + 2)
