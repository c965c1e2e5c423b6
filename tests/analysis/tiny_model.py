"""A model small enough to count its operations by hand, shared by the tests of op counts and energy."""
from __future__ import annotations

import torch
from torch import nn

SPIKES = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # 2 time steps, 3 spikes
TOKENS = torch.tensor([1, 4, 7])


class Tiny(nn.Module):
    """emb reads 3 rows of 4; spike_fc sees spikes; dense_fc sees spike_fc's (non-binary) output."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.spike_fc = nn.Linear(4, 3, bias=False)
        self.dense_fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.spike_fc.weight.fill_(0.25)

    def forward(self, ids, spikes):
        self.emb(ids)
        return self.dense_fc(self.spike_fc(spikes))


def one_inference(model):
    def run():
        model(TOKENS, SPIKES)
        return 1
    return run
