"""Test helpers for the data-driven quantization methods: model inputs, Hessians of a tiny model on a
few batches, a plan using every method, and a weight with correlated inputs."""
from __future__ import annotations

import torch

from qslm.quant.context import GptqOptions, QuantContext
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.unit_inputs import record_hessians
from qslm.quant.units import quantizable_units


def model_inputs(loaded, n: int = 12, seed: int = 0) -> tuple:
    ids = torch.randint(1, loaded.config.vocab_size, (3, n), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    return (ids,) if loaded.config.task == "lm" else (ids, mask)


def calibration_batches(loaded) -> list:
    """Two batches of model inputs, other than the test inputs."""
    return [model_inputs(loaded, seed=seed) for seed in (10, 11)]


def calibration_context(loaded) -> QuantContext:
    """The loaded model's unit Hessians on two batches (other than the test inputs), act-order on."""
    return QuantContext(record_hessians(loaded.model, calibration_batches(loaded)),
                        GptqOptions(act_order=True, block_size=16))


def methods_plan(model) -> QuantPlan:
    """gptq on every matrix unit and codebooks on embeddings, in several widths and layouts."""
    matrix_specs = [QuantSpec(3, "group", 16, False, method="gptq"), QuantSpec(4, method="gptq"),
                    QuantSpec(2, "per-tensor", None, True, "minmax", method="gptq"), QuantSpec(5, method="codebook"),
                    QuantSpec(3, "group", 8, method="codebook")]
    table_specs = [QuantSpec(2, "group", 16, method="codebook"), QuantSpec(8, method="codebook")]
    units = {}
    for i, (name, unit) in enumerate(quantizable_units(model).items()):
        specs = table_specs if unit.kind == "Embedding" else matrix_specs
        units[name] = specs[i % len(specs)]
    return QuantPlan(units)


def weight_and_correlated_inputs(rows: int, cols: int, samples: int, dead_column: int
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [rows, cols] and ``samples`` strongly correlated inputs [samples, cols] (where error
    compensation or learned rounding has something to gain), one input always zero: a dead Hessian column."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(rows, cols, generator=generator)
    mixing = torch.eye(cols) + 2 * torch.randn(cols, cols, generator=generator) / cols ** 0.5
    x = torch.randn(samples, cols, generator=generator) @ mixing
    x[:, dead_column] = 0.0
    return w, x
