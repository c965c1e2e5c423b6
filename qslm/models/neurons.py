"""Leaky integrate-and-fire neuron, as SpikingJelly's ``MultiStepLIFNode(tau=2, v_threshold=1)``.

Dynamics per time step (time is the first axis of the input):
    v <- v + (x - v) / tau;  s = H(v - v_th);  v <- v * (1 - s)   (hard reset to 0)
Backward uses the ATan surrogate  g'(x) = alpha / (2 (1 + (pi/2 * alpha * x)^2)).
"""
from __future__ import annotations

import math
from typing import Callable

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
    Firing rates are recorded from outside, by ``qslm.analysis.neurons.SpikeRecorder``.
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 2.0):
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"LIF tau must be > 1, got {tau}")
        self.tau = tau
        self.v_threshold = v_threshold
        self.alpha = alpha
        self.state_quantizer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threshold = self.v_threshold
        quantize_state = self.state_quantizer
        if quantize_state is not None:
            threshold = float(quantize_state(torch.tensor(threshold)))
        if torch.is_grad_enabled() and x.requires_grad:
            return self._forward_with_surrogate(x, threshold)
        if quantize_state is not None:
            return lif_scan_quantized(x, self.tau, threshold, quantize_state)
        return lif_scan(x, self.tau, threshold)

    def _forward_with_surrogate(self, x: torch.Tensor, threshold: float) -> torch.Tensor:
        """The training path: every step through ``ATanSpike`` so gradients flow to ``x``."""
        v = torch.zeros_like(x[0])
        quantize_state = self.state_quantizer
        spikes = []
        for x_t in x:
            v = v + (x_t - v) / self.tau
            if quantize_state is not None:
                v = quantize_state(v)
            s = ATanSpike.apply(v - threshold, self.alpha)
            v = v * (1.0 - s)
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, alpha={self.alpha}"


def lif_scan(x: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
    """Spikes of the LIF over the leading axis of ``x``, without autograd, bit for bit as the training path.

    The per-step cost is a Python dispatch per op, not arithmetic, so a step is three ops into preallocated
    buffers. The membrane is kept negated (``w = -v``, exact in floating point) because then the hard reset
    "v <- 0 where v >= threshold" is one ``torch.threshold`` (keep ``w`` where ``w > -threshold``, else 0),
    and ``x - v`` is ``x + w``. The potentials before reset are compared with the threshold once, after the
    loop, in place: a fresh tensor of the input's size would more than double the cost of that pass.
    """
    # -v after charging, before reset, laid out in memory as x: SpikeGPT passes [B, T, C] storage as a [T, B, C]
    # view and gets the spikes back as [B, T, C], so the layout spares a transposing pass.
    charged = torch.empty_like(x)
    w = torch.zeros_like(charged[0])
    difference = torch.empty_like(w)
    # d / tau equals d * (1 / tau) exactly only when tau is a power of two (the usual tau = 2).
    reciprocal = 1.0 / tau if math.frexp(tau)[0] == 0.5 else None
    for x_t, charged_t in zip(x.unbind(0), charged.unbind(0)):
        torch.add(x_t, w, out=difference)  # x_t - v
        if reciprocal is None:
            difference.div_(tau)
            torch.sub(w, difference, out=charged_t)
        else:
            torch.sub(w, difference, alpha=reciprocal, out=charged_t)  # -(v + (x_t - v) / tau)
        torch.threshold(charged_t, -threshold, 0.0, out=w)
    return charged.le_(-threshold)


def lif_scan_quantized(x: torch.Tensor, tau: float, threshold: float,
                       quantize_state: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``lif_scan`` with ``quantize_state`` applied to the membrane after every charge, as the training path
    does (the quantizer is not symmetric in sign, so this path keeps ``v`` itself)."""
    charged = torch.empty_like(x)  # laid out as x, as in lif_scan
    v = torch.zeros_like(x[0])
    for x_t, charged_t in zip(x.unbind(0), charged.unbind(0)):
        v = quantize_state(v + (x_t - v) / tau)
        charged_t.copy_(v)
        v = v.masked_fill(v >= threshold, 0.0)
    return charged.ge_(threshold)


def lif_modules(model: nn.Module) -> dict[str, LIF]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LIF)}

