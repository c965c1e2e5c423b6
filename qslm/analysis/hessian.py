"""Hessian-trace sensitivity (HAWQ-V2/V3): Hutchinson's estimator tr(H) ~ E_v[v^T H v] with Rademacher
vectors v, per unit, on the calibration loss. Hessian-vector products come from double backward,
which also runs through the LIF surrogate gradients."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sensitivity import CalibrationSet


def hutchinson_traces(model: nn.Module, units: dict[str, nn.Module], calibration: CalibrationSet,
                      samples: int = 4, max_batches: int = 2, seed: int = 0) -> dict[str, float]:
    """Estimated Hessian trace of the task loss w.r.t. each unit's weight."""
    names = list(units)
    params = [units[name].weight for name in names]
    requires = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    device = params[0].device
    traces = {name: 0.0 for name in names}
    try:
        for ids, mask, targets in calibration.batches[:max_batches]:
            logits = model(ids.to(device)) if mask is None else model(ids.to(device), mask.to(device))
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).to(device))
            # A unit the loss does not reach (e.g. an unused head) has no gradient: its trace stays 0.
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            for _ in range(samples if used else 0):
                vectors = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
                hv = torch.autograd.grad([grads[i] for i in used], [params[i] for i in used],
                                         grad_outputs=[vectors[i] for i in used], retain_graph=True, allow_unused=True)
                for i, h in zip(used, hv):
                    if h is not None:
                        traces[names[i]] += float((h * vectors[i]).sum())
        n = samples * min(max_batches, len(calibration.batches))
        return {name: value / n for name, value in traces.items()}
    finally:
        for p, flag in zip(params, requires):
            p.requires_grad_(flag)
            p.grad = None
