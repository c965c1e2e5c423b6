"""Fixed-point neuron state: the step, saturation and exactness of the threshold, and a LIF run with it."""
from __future__ import annotations

import pytest
import torch

from qslm.errors import QslmError
from qslm.models.neurons import LIF
from qslm.quant.neuron_spec import FixedPoint, NeuronSpec


def test_fixed_point_neuron_state():
    spec = NeuronSpec(bits=6)
    quantizer = spec.quantizer(v_threshold=1.0)
    assert isinstance(quantizer, FixedPoint) and quantizer.step == 2.0 / 32
    assert float(quantizer(torch.tensor(1.0))) == 1.0  # threshold exactly representable
    v = torch.linspace(-5, 5, 101)
    q = quantizer(v)
    assert float(q.min()) == -2.0 and float(q.max()) == 2.0 - quantizer.step  # saturates at +-2 thresholds
    inside = v.abs() < 1.9
    assert float((q[inside] - v[inside]).abs().max()) <= quantizer.step / 2 + 1e-7
    assert NeuronSpec(8, 4.0).quantizer(0.5).step == 4.0 * 0.5 / 128
    for bad in ({"bits": 1}, {"bits": 40}, {"range_multiple": 0}):
        with pytest.raises(QslmError):
            NeuronSpec(**bad)


def test_lif_with_fine_fixed_point_state_matches_float():
    torch.manual_seed(0)
    x = torch.randn(20, 4, 16) * 1.5
    lif = LIF()
    reference = lif(x)
    lif.state_quantizer = NeuronSpec(16).quantizer(lif.v_threshold)
    assert (lif(x) != reference).float().mean() < 0.01
    lif.state_quantizer = NeuronSpec(2).quantizer(lif.v_threshold)
    assert not torch.equal(lif(x), reference)
