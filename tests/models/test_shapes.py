"""State-dict shapes without allocating the weights: large tensors on meta, the rest as a real build."""
from __future__ import annotations

import torch

from qslm.models.shapes import META_ABOVE, state_shapes
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig


def summary(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {name: (tuple(t.shape), t.dtype) for name, t in state.items()}


def test_same_names_shapes_and_dtypes_as_a_real_build():
    for build in (lambda: SpikeGPT(SpikeGPTConfig(vocab_size=300, n_embd=256, n_layer=2, task="classification")),
                  lambda: SpikingEncoder(SpikingEncoderConfig(vocab_size=700, n_embd=128, n_layer=1, n_head=2))):
        shapes = state_shapes(build).state_dict()
        assert summary(shapes) == summary(build().state_dict())
        large = [name for name, t in shapes.items() if t.numel() > META_ABOVE]
        assert large and all(shapes[name].is_meta for name in large)
        assert all(not t.is_meta for t in shapes.values() if t.numel() <= META_ABOVE)


def test_a_huge_config_costs_no_memory():
    """SpikeGPT-216M's 860 MB of float weights are never allocated: what is real stays small."""
    shapes = state_shapes(lambda: SpikeGPT(SpikeGPTConfig(vocab_size=50277, n_embd=768, n_layer=18, ctx_len=1024))
                          ).state_dict()
    assert tuple(shapes["emb.weight"].shape) == (50277, 768) and shapes["emb.weight"].is_meta
    real_bytes = sum(t.numel() * t.element_size() for t in shapes.values() if not t.is_meta)
    assert real_bytes < 2 ** 20
    assert sum(t.numel() for t in shapes.values()) > 214e6


def test_real_builds_afterwards_are_untouched():
    state_shapes(lambda: SpikeGPT(SpikeGPTConfig(vocab_size=300, n_embd=256, n_layer=1)))
    model = SpikeGPT(SpikeGPTConfig(vocab_size=300, n_embd=256, n_layer=1))
    assert not any(p.is_meta for p in model.parameters())
    assert float(model.head.weight.detach().std()) > 0.01  # initialised, not skipped
