"""A spiking classifier written the way a researcher might, with none of qslm's conventions: a
ModuleDict of ModuleList stages, projections held as bare parameters applied with F.linear and @, an
embedding tied to the output head, and a neuron whose threshold is learnable. Used to test that qslm
handles models it has never seen."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1 + (3.0 * x) ** 2)


class ThresholdNeuron(nn.Module):
    """Integrate-and-fire over the time axis (dim 0) with a learnable threshold."""

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(threshold))

    def forward(self, x):
        v = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            v = 0.5 * v + x_t
            s = SpikeFn.apply(v - self.threshold)
            v = v * (1 - s)
            out.append(s)
        return torch.stack(out)


class Mixer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(2 * d, d) / d ** 0.5)  # applied with F.linear
        self.w_out = nn.Parameter(torch.randn(2 * d, d) / (2 * d) ** 0.5)  # applied as x @ w_out
        self.gain = nn.Parameter(torch.ones(1, 1, d))  # a broadcast vector: stays float
        self.neuron = ThresholdNeuron()

    def forward(self, x):
        spikes = self.neuron(F.linear(x, self.w_in))
        return x + self.gain * (spikes @ self.w_out)


class HandwrittenSpikingClassifier(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16, depth: int = 2, classes: int = 3, steps: int = 2):
        super().__init__()
        self.steps = steps
        self.embed = nn.Embedding(vocab, d)
        self.stages = nn.ModuleDict({"body": nn.ModuleList([Mixer(d) for _ in range(depth)])})
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight  # tied
        self.classify = nn.Linear(vocab, classes)

    def forward(self, ids):
        x = self.embed(ids).unsqueeze(0).expand(self.steps, -1, -1, -1)  # [T, B, N, d]
        for block in self.stages["body"]:
            x = block(x)
        pooled = self.norm(x.mean(0)).mean(1)  # [B, d]
        return self.classify(torch.tanh(self.lm_head(pooled)))


def make_data(seed: int = 0, n: int = 192, length: int = 8, vocab: int = 50, classes: int = 3):
    """Token sequences whose class is the third of the vocabulary most of their tokens fall in."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    counts = torch.stack([((ids * classes) // vocab == c).sum(1) for c in range(classes)], 1)
    return ids, counts.argmax(1)


def train(model: nn.Module, ids, labels, steps: int = 60, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(ids), labels).backward()
        optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, ids, labels) -> float:
    with torch.no_grad():
        return 100.0 * float((model(ids).argmax(-1) == labels).float().mean())
