"""The op counts of the tiny model (``tiny_model.py``), for the tests of op counts and of energy."""
from __future__ import annotations

import pytest

from qslm.analysis.ops import OpCounts, measure_op_counts
from tests.analysis.tiny_model import Tiny, one_inference


@pytest.fixture
def tiny_ops() -> OpCounts:
    model = Tiny()
    return measure_op_counts(model, one_inference(model))
