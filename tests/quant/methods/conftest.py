"""A small trained spiking classifier (``tests/handwritten.py``) and its data, shared by the method tests
that write, load and search it."""
from __future__ import annotations

import pytest
import torch

from tests.handwritten import HandwrittenSpikingClassifier, make_data, train


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    ids, labels = make_data()
    return train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=40), ids, labels
