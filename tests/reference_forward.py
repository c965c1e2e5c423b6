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
    return torch.stack(spikes)


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


def reference_time_mix(mix: spikegpt.RWKVTimeMix, x: torch.Tensor) -> torch.Tensor:
    xx = spikegpt.time_shift(x)
    xk = x * mix.time_mix_k + xx * (1 - mix.time_mix_k)
    xv = x * mix.time_mix_v + xx * (1 - mix.time_mix_v)
    xr = x * mix.time_mix_r + xx * (1 - mix.time_mix_r)
    k = mix.key(xk)
    v = mix.value(xv)
    r = torch.sigmoid(mix.receptance(xr))
    return mix.output(r * spikegpt.wkv(mix.time_decay, mix.time_first, k, v))


def reference_channel_mix(mix: spikegpt.RWKVChannelMix, x: torch.Tensor) -> torch.Tensor:
    xx = spikegpt.time_shift(x)
    xk = x * mix.time_mix_k + xx * (1 - mix.time_mix_k)
    xr = x * mix.time_mix_r + xx * (1 - mix.time_mix_r)
    k = torch.square(torch.relu(mix.key(xk)))
    return torch.sigmoid(mix.receptance(xr)) * mix.value(k)


REFERENCES = [(neurons.LIF, "forward", reference_lif), (spikegpt, "wkv_recurrent", reference_wkv),
              (spikegpt.RWKVTimeMix, "forward", reference_time_mix),
              (spikegpt.RWKVChannelMix, "forward", reference_channel_mix)]


@contextlib.contextmanager
def reference_forward() -> Iterator[None]:
    """Inside the block, the LIF, the inference WKV and SpikeGPT's time and channel mixing run the code
    as first written."""
    current = [getattr(owner, name) for owner, name, _ in REFERENCES]
    for owner, name, reference in REFERENCES:
        setattr(owner, name, reference)
    try:
        yield
    finally:
        for (owner, name, _), function in zip(REFERENCES, current):
            setattr(owner, name, function)
