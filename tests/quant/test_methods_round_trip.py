"""Every method at every width and layout, through the files: the packed model a fresh instance loads
computes with exactly the weights fake quantization used, and the file stores exactly the predicted bytes."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

from qslm.checkpoint import load_quantized, write_quantized_files
from qslm.errors import QslmError
from qslm.quant.apply import WeightCache, fake_quantized
from qslm.quant.context import LearnedOptions, QuantContext
from qslm.quant.memory import fixed_bytes, unit_bytes
from qslm.quant.plan import QuantPlan
from qslm.quant.methods import Needs, method_named, method_names
from qslm.quant.quantizer import SCALE_DTYPES, QuantSpec
from qslm.quant.unit_inputs import record_hessians
from qslm.quant.units import find_units

LAYOUTS = [("per-tensor", None), ("per-channel", None), ("group", 8)]


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 24)
        self.proj = nn.Linear(24, 16)

    def forward(self, ids):
        return self.proj(torch.tanh(self.embed(ids)))


def cases():
    for method in method_names():
        grid = method_named(method).grid
        for bits in method_named(method).bits:
            for granularity, size in LAYOUTS:
                # (symmetric, all_levels, trits): symmetric, signed (every code), asymmetric, ternary (2 bits)
                grids = (((True, False, False), (True, True, False), (False, False, False), (True, False, True))
                         if grid else ((True, False, False),))
                for symmetric, all_levels, trits in grids:
                    for scale_dtype in SCALE_DTYPES if grid else ("float32",):
                        try:  # a grid a method refuses (ternary keeps three levels) is not one of its cases
                            QuantSpec(bits, granularity, size, symmetric, method=method, scale_dtype=scale_dtype,
                                      all_levels=all_levels, trits=trits)
                        except QslmError:
                            continue
                        yield method, bits, granularity, size, symmetric, all_levels, trits, scale_dtype


@pytest.fixture(scope="module")
def model_and_context():
    model = TwoLayers().eval()
    inputs = [torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    # few learned-rounding steps: what is checked here is storage, not how well it rounds
    return model, QuantContext(record_hessians(model, inputs), learned=LearnedOptions(iterations=40))


@pytest.mark.slow
@pytest.mark.parametrize("method, bits, granularity, size, symmetric, all_levels, trits, scale_dtype", list(cases()))
def test_packed_weights_equal_fake_quantized_ones(model_and_context, tmp_path, method, bits, granularity, size,
                                                  symmetric, all_levels, trits, scale_dtype):
    model, context = model_and_context
    spec = QuantSpec(bits, granularity, size, symmetric, method=method, scale_dtype=scale_dtype, all_levels=all_levels,
                     trits=trits)
    # gptq and learned rounding need an input Hessian: the embedding has none, so it takes rtn at the same width
    # and layout
    embed_spec = (spec if method_named(method).needs is Needs.WEIGHT
                  else QuantSpec(bits, granularity, size, symmetric, scale_dtype=scale_dtype, all_levels=all_levels,
                                 trits=trits))
    plan = QuantPlan({"embed": embed_spec, "proj": spec})
    with torch.no_grad(), fake_quantized(model, plan, WeightCache(), context):
        expected = {name: model.get_submodule(name).weight.detach().clone() for name in plan.units}
    files = write_quantized_files(model, plan, tmp_path, context=context)
    fresh = load_quantized(TwoLayers(), tmp_path)
    for name, weight in expected.items():
        assert torch.equal(fresh.get_submodule(name).weight, weight), name
    units = find_units(model)
    with safe_open(str(files["model.safetensors"]), "pt") as handle:
        stored = sum(handle.get_tensor(key).nbytes for key in handle.keys())
    assert stored == fixed_bytes(model) + sum(unit_bytes(units[u], s) for u, s in plan.units.items())
