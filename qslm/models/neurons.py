"""Leaky integrate-and-fire neuron, as SpikingJelly's ``MultiStepLIFNode(tau=2, v_threshold=1)``.

Dynamics per time step (time is the first axis of the input):
    v <- v + (x - v) / tau;  s = H(v - v_th);  v <- v * (1 - s)   (hard reset to 0)
Backward uses the ATan surrogate  g'(x) = alpha / (2 (1 + (pi/2 * alpha * x)^2)).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ATanSpike(torch.autograd.Function):
    """Heaviside forward, ATan surrogate gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        surrogate = alpha / (2 * (1 + (math.pi / 2 * alpha * x) ** 2))
        return grad_output * surrogate, None


def atan_surrogate_grad(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """The surrogate derivative, exposed for tests and analysis."""
    return alpha / (2 * (1 + (math.pi / 2 * alpha * x) ** 2))


class LIF(nn.Module):
    """Multi-step LIF over the leading (time) axis of ``x``: input [T, ...] -> spikes [T, ...].

    ``state_quantizer`` (optional) is applied to the membrane potential after every
    update, so fixed-point neuron state can be simulated through the quantization plan.
    When ``record`` is on, the module accumulates spike and element counts so the
    mean firing rate over everything it has seen is available as ``firing_rate``.
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 2.0):
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"LIF tau must be > 1, got {tau}")
        self.tau = tau
        self.v_threshold = v_threshold
        self.alpha = alpha
        self.state_quantizer = None
        self.record = False
        self.spike_count = 0.0
        self.element_count = 0

    def reset_record(self) -> None:
        self.spike_count = 0.0
        self.element_count = 0

    @property
    def firing_rate(self) -> float:
        return self.spike_count / self.element_count if self.element_count else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        threshold = self.v_threshold
        quantize_state = self.state_quantizer
        if quantize_state is not None:
            threshold = float(quantize_state(torch.tensor(threshold)))
        spikes = []
        for x_t in x:
            v = v + (x_t - v) / self.tau
            if quantize_state is not None:
                v = quantize_state(v)
            s = ATanSpike.apply(v - threshold, self.alpha)
            v = v * (1.0 - s)
            spikes.append(s)
        out = torch.stack(spikes)
        if self.record:
            self.spike_count += float(out.detach().sum())
            self.element_count += out.numel()
        return out

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, alpha={self.alpha}"


def lif_modules(model: nn.Module) -> dict[str, LIF]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LIF)}


class record_firing_rates:
    """Context manager: record firing rates of every LIF in ``model``; read them with ``.rates``."""

    def __init__(self, model: nn.Module):
        self.neurons = lif_modules(model)
        self.rates: dict[str, float] = {}

    def __enter__(self) -> "record_firing_rates":
        for neuron in self.neurons.values():
            neuron.reset_record()
            neuron.record = True
        return self

    def __exit__(self, *exc) -> None:
        for name, neuron in self.neurons.items():
            neuron.record = False
            self.rates[name] = neuron.firing_rate
