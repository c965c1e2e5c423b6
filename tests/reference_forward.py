"""The spiking forward pass as it was first written, a Python loop over time with every op per step, kept
as the reference the inference paths must reproduce bit for bit (``reference_forward`` swaps it in)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from qslm.models import neurons, spikegpt


def reference_lif(neuron: neurons.LIF, x: torch.Tensor) -> torch.Tensor:
    v = torch.zeros_like(x[0])
    threshold = neuron.v_threshold
    if neuron.state_quantizer is not None:
        threshold = float(neuron.state_quantizer(torch.tensor(threshold)))
    spikes = []
    for x_t in x:
        v = v + (x_t - v) / neuron.tau
        if neuron.state_quantizer is not None:
            v = neuron.state_quantizer(v)
        s = neurons.ATanSpike.apply(v - threshold, neuron.alpha)
        v = v * (1.0 - s)
        spikes.append(s)
    out = torch.stack(spikes)
    if neuron.record:
        neuron.spike_count += float(out.detach().sum())
        neuron.element_count += out.numel()
    return out


def reference_wkv(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                  ) -> torch.Tensor:
    B, T, C = k.shape
    decay = -torch.exp(time_decay.float())
    first = time_first.float()
    k, v = k.float(), v.float()
    num = k.new_zeros((B, C))
    den = k.new_zeros((B, C))
    exponent = k.new_full((B, C), -1e38)
    out = torch.empty_like(k)
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        ww = first + kt
        p = torch.maximum(exponent, ww)
        e1, e2 = torch.exp(exponent - p), torch.exp(ww - p)
        out[:, t] = (e1 * num + e2 * vt) / (e1 * den + e2)
        ww = exponent + decay
        p = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - p), torch.exp(kt - p)
        num, den, exponent = e1 * num + e2 * vt, e1 * den + e2, p
    return out.to(time_first.dtype)


@contextlib.contextmanager
def reference_forward() -> Iterator[None]:
    """Every LIF and the inference WKV run the reference loops inside the block."""
    lif_forward, wkv_recurrent = neurons.LIF.forward, spikegpt.wkv_recurrent
    neurons.LIF.forward, spikegpt.wkv_recurrent = reference_lif, reference_wkv
    try:
        yield
    finally:
        neurons.LIF.forward, spikegpt.wkv_recurrent = lif_forward, wkv_recurrent
