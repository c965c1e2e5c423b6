"""LIF neuron: dynamics against hand-computed values, hard reset, ATan surrogate, firing rates."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qslm.analysis.neurons import SpikeRecorder
from qslm.models.neurons import LIF, ATanSpike, atan_surrogate_grad, lif_modules
from qslm.quant.neuron_spec import FixedPoint
from tests.reference_forward import reference_forward, reference_lif


def run_recording_membrane(neuron: LIF, x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Spikes and the membrane after each charge step (before reset), read through the state hook."""
    seen = []

    def identity_recorder(v):
        seen.append(float(v))
        return v

    neuron.state_quantizer = identity_recorder
    spikes = neuron(x)
    neuron.state_quantizer = None
    return spikes, seen[1:]  # the first call quantizes the threshold itself


def test_hand_computed_sequence():
    # tau = 2: v <- v + (x - v) / 2, spike when v >= 1, then v <- 0.
    x = torch.tensor([1.5, 1.5, 0.5, 3.0, 0.0, 2.0, -1.0, 1.0])
    # t1: 0 + (1.5 - 0)/2      = 0.75    no spike
    # t2: 0.75 + (1.5 - 0.75)/2 = 1.125  spike, reset to 0
    # t3: 0 + (0.5 - 0)/2      = 0.25    no spike
    # t4: 0.25 + (3 - 0.25)/2  = 1.625   spike, reset to 0
    # t5: 0 + (0 - 0)/2        = 0       no spike
    # t6: 0 + (2 - 0)/2        = 1.0     spike (v >= v_th fires), reset to 0
    # t7: 0 + (-1 - 0)/2       = -0.5    no spike (negative potential is kept)
    # t8: -0.5 + (1 + 0.5)/2   = 0.25    no spike
    spikes, membrane = run_recording_membrane(LIF(tau=2.0, v_threshold=1.0), x)
    assert membrane == [0.75, 1.125, 0.25, 1.625, 0.0, 1.0, -0.5, 0.25]
    assert spikes.tolist() == [0, 1, 0, 1, 0, 1, 0, 0]


def test_hard_reset_to_zero():
    # Constant input 1.2: 0.6, 0.9, 1.05 -> spike -> 0, then the same cycle again.
    # A soft reset (v - v_th) would leave 0.05 and fire on another schedule.
    spikes, membrane = run_recording_membrane(LIF(), torch.full((6,), 1.2, dtype=torch.float64))
    assert spikes.tolist() == [0, 0, 1, 0, 0, 1]
    assert membrane == pytest.approx([0.6, 0.9, 1.05, 0.6, 0.9, 1.05])


def test_time_is_the_first_axis_and_channels_are_independent():
    x = torch.tensor([[[1.5, 0.0], [4.0, 0.5]],
                      [[1.5, 0.0], [0.0, 0.5]]])  # [T=2, B=2, C=2]
    spikes = LIF()(x)
    assert spikes.shape == x.shape
    assert spikes[:, 0, 0].tolist() == [0, 1]   # 0.75, 1.125
    assert spikes[:, 1, 0].tolist() == [1, 0]   # 2.0 -> reset, then 0
    assert spikes[..., 1].sum() == 0


def test_matches_snntorch_leaky_with_zero_reset():
    # snntorch: mem = beta * mem_after_reset + input. With beta = 1 - 1/tau and input x / tau
    # this is the same neuron; ties at exactly v_th have probability zero for random inputs.
    snntorch = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    x = torch.randn(40, 3, 5, dtype=torch.float64) * 1.5 + 0.8
    ours = LIF(tau=2.0, v_threshold=1.0)(x)
    leaky = snntorch.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")
    mem = leaky.init_leaky()
    theirs = []
    for x_t in x:
        spk, mem = leaky(x_t / 2, mem)
        theirs.append(spk)
    assert torch.equal(ours, torch.stack(theirs).to(ours.dtype))
    assert 0 < ours.mean() < 1


def expected_surrogate(x: float, alpha: float) -> float:
    return alpha / (2 * (1 + (math.pi / 2 * alpha * x) ** 2))


@pytest.mark.parametrize("alpha", [2.0, 4.0])
def test_atan_surrogate_gradient(alpha):
    points = [-1.0, -0.25, 0.0, 0.1, 0.5, 2.0]
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    spikes = ATanSpike.apply(x, alpha)
    assert spikes.tolist() == [0, 0, 1, 1, 1, 1]
    spikes.sum().backward()
    expected = [expected_surrogate(p, alpha) for p in points]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-12)
    assert atan_surrogate_grad(x.detach(), alpha).tolist() == pytest.approx(expected, rel=1e-12)
    assert expected_surrogate(0.0, alpha) == alpha / 2


def test_gradient_flows_through_the_lif_step():
    # One step: v = x / 2, s = H(v - 1), so ds/dx = g'(x/2 - 1) / 2 (alpha = 2).
    x = torch.tensor([[0.4, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    LIF()(x).sum().backward()
    expected = [expected_surrogate(v / 2 - 1, 2.0) / 2 for v in (0.4, 2.0, 3.0)]
    assert x.grad[0].tolist() == pytest.approx(expected, rel=1e-12)


def test_tau_must_exceed_one():
    with pytest.raises(ValueError, match="tau must be > 1"):
        LIF(tau=1.0)


class TwoNeurons(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = LIF()
        self.inner = nn.Sequential(LIF())

    def forward(self, x):
        return self.inner(self.first(x) * 3.0)


def test_firing_rate_recording():
    model = TwoNeurons()
    assert list(lif_modules(model)) == ["first", "inner.0"]
    x = torch.tensor([[1.5, 0.0], [1.5, 0.0], [1.5, 0.0], [1.5, 0.0]])  # [T=4, C=2]
    # first: channel 0 spikes at t2 and t4 (0.75, 1.125 | 0.75, 1.125) -> 2 of 8 elements.
    # inner: input 3.0 at t2, t4 -> v = 1.5 (spike) each time -> 2 of 8.
    with SpikeRecorder(model) as recorder:
        model(x)
        model(torch.zeros(4, 2))  # counts accumulate across calls: 2 of 16
    assert recorder.rates == {"first": 2 / 16, "inner.0": 2 / 16}
    # Outside the block nothing is counted, and a new recording starts from zero.
    model(x)
    with SpikeRecorder(model) as recorder:
        model(x)
    assert recorder.rates == {"first": 0.25, "inner.0": 0.25}


def test_a_neuron_that_never_ran_has_no_firing_rate():
    with SpikeRecorder(TwoNeurons()) as recorder:
        pass
    assert recorder.rates == {}


def lif_inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 1.5 + 0.7).to(dtype)


@pytest.mark.parametrize("tau, v_threshold", [(2.0, 1.0), (1.7, 0.3), (4.0, 0.7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("quantized", [False, True])
def test_inference_path_matches_the_reference_loop(tau, v_threshold, dtype, quantized):
    """Without autograd the LIF runs a cheaper scan; its spikes equal the training loop's exactly, also
    for fixed-point state and for a time axis that is not the outer one in memory (as SpikeGPT passes it)."""
    neuron = LIF(tau=tau, v_threshold=v_threshold)
    if quantized:
        neuron.state_quantizer = FixedPoint(bits=6, step=3 * v_threshold / 32)
    for x in (lif_inputs((40, 3, 37), dtype), lif_inputs((3, 40, 2, 5), dtype).transpose(0, 1)):
        expected = reference_lif(neuron, x)
        with torch.no_grad():
            got = neuron(x)
        assert got.dtype == dtype and got.stride() == torch.empty_like(x).stride()
        assert 0.05 < float(got.mean()) < 0.6  # both spiking and silent steps are compared
        assert torch.equal(got, expected)
        assert torch.equal(neuron(x), expected)  # grad mode on, but the input needs no gradient


def test_inference_path_fires_at_exactly_the_threshold():
    # tau = 2: x = 2 charges v from 0 to exactly 1.0 = v_th, which fires; 1.9999 gives 0.99995, which does not
    # (then 0.49998 and 0.74999).
    x = torch.tensor([[2.0, 1.9999], [0.0, 0.0], [2.0, 1.0]])
    with torch.no_grad():
        assert LIF()(x).tolist() == [[1, 0], [0, 0], [1, 0]]


def test_inference_path_counts_firing_rates_as_the_reference():
    model = nn.Sequential(LIF())
    x = lif_inputs((20, 4, 6), torch.float32)
    with torch.no_grad(), SpikeRecorder(model) as fast:
        model(x)
        model(x[:7])
    with reference_forward(), SpikeRecorder(model) as reference:
        model(x)
        model(x[:7])
    assert fast.rates == reference.rates and 0 < fast.rates["0"] < 1
    assert fast.records["0"].elements == 27 * 24


def test_training_path_gradients_are_the_reference_loops():
    neuron = LIF(tau=2.0, v_threshold=0.8)
    x = lif_inputs((15, 3, 4), torch.float64).requires_grad_()
    weights = torch.rand(15, 3, 4, dtype=torch.float64)
    (neuron(x) * weights).sum().backward()
    got, x.grad = x.grad, None
    (reference_lif(neuron, x) * weights).sum().backward()
    assert torch.equal(got, x.grad) and got.abs().sum() > 0
