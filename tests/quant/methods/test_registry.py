"""The registry of quantizer methods: a method registered here, in the test, quantizes a model folder, is
chosen by a search, is packed into the file and loads back, with nothing else in qslm told about it."""
from __future__ import annotations

import json

import pytest
import torch

import qslm
from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.quant.api import quantize
from qslm.quant.apply import check_context, quantize_unit
from qslm.quant.context import QuantContext
from qslm.quant.methods import Needs, method_named, method_names, register, registered_methods, unregister
from qslm.quant.methods.builtin import BUILTIN
from qslm.quant.methods.grid import GridMethod
from qslm.quant.methods.rtn import RoundToNearest
from qslm.quant.memory import safetensors_tensor_bytes
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import (
    BITS,
    DEFAULT_METHOD,
    QuantizedTensor,
    QuantSpec,
    check_group_size,
    code_range,
    fit_groups,
    grouped,
    with_stored_scales,
)
from qslm.quant.units import quantizable_units
from qslm.report import method_colours
from qslm.search.config import SearchConfig
from qslm.search.methods import record_context
from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data, train


class TowardZero(GridMethod):
    """rtn's grid and scales, codes rounded toward zero instead of to nearest."""
    name = "toy"
    bits = BITS

    def quantize(self, weight, spec, context, unit):
        check_group_size(weight.shape, spec, f"unit {unit!r}")
        x = grouped(weight.detach().to(torch.float32), spec)
        scale, zero_point = fit_groups(x, spec)
        centre = zero_point if zero_point is not None else 2 ** (spec.bits - 1)
        codes = torch.clamp(torch.trunc(x / scale) + centre, *code_range(spec))
        zero_point = None if zero_point is None else zero_point.squeeze(1).to(torch.int32)
        return with_stored_scales(QuantizedTensor(codes.to(torch.int32), scale.squeeze(1), zero_point, spec,
                                                  weight.shape))


@pytest.fixture
def toy():
    method = register(TowardZero())
    yield method
    unregister(method.name)


def test_the_built_in_methods_in_their_order():
    assert method_names() == ["rtn", "gptq", "codebook", "ternary", "binary", "learned"]
    assert registered_methods() == list(BUILTIN)
    assert isinstance(method_named(DEFAULT_METHOD), RoundToNearest)
    assert [(m.needs, m.uses) for m in BUILTIN] == [(Needs.WEIGHT, Needs.WEIGHT), (Needs.HESSIANS, Needs.HESSIANS),
                                                    (Needs.WEIGHT, Needs.HESSIANS), (Needs.WEIGHT, Needs.WEIGHT),
                                                    (Needs.WEIGHT, Needs.WEIGHT), (Needs.HESSIANS, Needs.HESSIANS)]
    # ternary, one bit and learned rounding are opt-in
    assert [m.default for m in BUILTIN] == [True, True, True, False, False, False]
    assert method_colours() == {"rtn": "tab:blue", "gptq": "tab:orange", "codebook": "tab:green",
                                "ternary": "tab:purple", "binary": "tab:brown",
                                "learned": "tab:red"}


def test_a_name_registered_twice_is_an_error(toy):
    with pytest.raises(QslmError, match="quantizer method 'toy' is registered already"):
        register(TowardZero())
    with pytest.raises(QslmError, match="quantizer method 'rtn' is registered already"):
        register(RoundToNearest())


def test_a_method_must_use_what_it_needs():
    class Careless(TowardZero):
        name = "careless"
        needs = Needs.HESSIANS

    with pytest.raises(QslmError, match="'careless' uses the weight alone but needs unit-input Hessians"):
        register(Careless())
    assert "careless" not in method_names()


@pytest.mark.parametrize("attribute, value, message", [
    ("bits", (3, 7), r"bits must be a non-empty tuple of widths among"),
    ("bits", (), r"bits must be a non-empty tuple"),
    ("needs", "hessians", r"needs and uses must be Needs members"),
    ("stored_names", (), r"stored_names must name every tensor"),
    ("name", "", r"a quantizer method needs a non-empty string name"),
])
def test_a_method_declaring_nonsense_is_refused_by_name(attribute, value, message):
    broken = type("Broken", (TowardZero,), {"name": "broken", attribute: value})
    with pytest.raises(QslmError, match=message):
        register(broken())
    assert "broken" not in method_names()


def test_an_unknown_method_in_a_plan_file_is_named_with_the_registered_ones(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"version": 1, "units": {"head": {"bits": 3, "method": "toy"}}}))
    with pytest.raises(QslmError, match=r"unit 'head': unknown method 'toy'; expected one of "
                                        r"\['rtn', 'gptq', 'codebook', 'ternary', 'binary', 'learned'\]"):
        QuantPlan.load(path)
    with pytest.raises(QslmError, match="no quantizer method 'toy' is registered"):
        unregister("toy")


def test_a_registered_method_names_a_spec_until_unregistered(tmp_path):
    register(TowardZero())
    try:
        spec = QuantSpec(3, method="toy")
        assert spec.describe() == "int3 per-channel sym mse toy"
        assert QuantSpec.from_dict(spec.to_dict()) == spec
        assert method_colours()["toy"] == "tab:pink"  # the first spare colour no built-in method declares
        with pytest.raises(QslmError, match="methods must be distinct names among"):
            SearchConfig(methods=("rtn", "toy", "toy"))
        assert SearchConfig().methods == ("rtn", "gptq", "codebook")  # not a default: only when named
    finally:
        unregister("toy")
    with pytest.raises(QslmError, match="unknown method 'toy'"):
        QuantSpec(3, method="toy")


def test_quantize_writes_and_loads_a_model_of_the_registered_method(toy, tiny_lm, tmp_path):
    float_model = load_model(tiny_lm).model
    names = list(quantizable_units(float_model))
    plan = {"version": 1, "units": {name: {"bits": 3, "method": "toy"} for name in names}}
    result = quantize(tiny_lm, plan=plan, out=tmp_path / "q")
    written = json.loads((tmp_path / "q" / "quant_plan.json").read_text())["units"]
    assert written == {name: {"bits": 3, "granularity": "per-channel", "group_size": None, "symmetric": True,
                              "observer": "mse", "percentile": None, "method": "toy"} for name in names}
    assert safetensors_tensor_bytes(tmp_path / "q" / "model.safetensors") == result.bytes
    packed = load_model(tmp_path / "q").model
    spec = QuantSpec(3, method="toy")
    changed = 0
    for name, unit in quantizable_units(packed).items():
        original = getattr(float_model.get_submodule(unit.module), unit.attribute)
        expected = toy.quantize(original, spec, None, name).dequantize()
        assert torch.equal(getattr(packed.get_submodule(unit.module), unit.attribute), expected), name
        changed += not torch.equal(expected, method_named("rtn").quantize(original, QuantSpec(3), None, name)
                                   .dequantize())
    assert changed  # truncation is not rounding: the file holds the toy method's codes


@pytest.fixture(scope="module")
def handwritten():
    torch.manual_seed(0)
    ids, labels = make_data()
    return train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=80), ids, labels


@pytest.mark.slow
@pytest.mark.parametrize("methods", [("rtn", "toy"), ("toy",)])
def test_a_search_chooses_the_registered_method_and_its_file_loads(toy, handwritten, tmp_path, methods):
    model, ids, labels = handwritten
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    config = SearchConfig(methods=methods, strategy="uniform", bit_choices=(2, 4))
    result = qslm.search(model, task, out=tmp_path / "out", config=config, progress=False,
                         cache_dir=tmp_path / "cache")
    chosen = {m for by_bits in result.report["methods"].values() for m in by_bits.values()}
    assert chosen <= set(methods) and (chosen == {"toy"}) == (methods == ("toy",))
    plan = json.loads((tmp_path / "out" / "quant_plan.json").read_text())["units"]
    for unit, bits in result.report["chosen"]["assignment"].items():
        assert plan[unit]["bits"] == bits
        assert plan[unit].get("method", "rtn") == result.report["methods"][unit][str(bits)]
    assert result.report["final"]["memory_bytes"] == result.report["final"]["memory_bytes_predicted"]
    fresh = qslm.load_quantized(HandwrittenSpikingClassifier(), tmp_path / "out")
    assert accuracy(fresh, ids[96:], labels[96:]) == result.report["final"]["metric"]


class NeedsGradients(TowardZero):
    """A method of the third kind: none is built in, and a QuantContext carries no gradients yet."""
    name = "gradients"
    needs = uses = Needs.GRADIENTS


def test_a_method_needing_gradients_is_refused_by_name_not_run():
    register(NeedsGradients())
    try:
        plan = QuantPlan({"head": QuantSpec(4, method="gradients")})
        with pytest.raises(QslmError, match="unit 'head' .* needs calibration inputs and gradients for gradients, "
                                            "which a QuantContext does not carry yet; use rtn or codebook"):
            check_context(plan, QuantContext())
        with pytest.raises(QslmError, match="needs calibration inputs and gradients"):
            quantize_unit("head", torch.ones(4, 8), plan.units["head"])
        with pytest.raises(QslmError, match=r"methods \['gradients'\] use calibration inputs and gradients, which "
                                            "the search does not record yet"):
            record_context(HandwrittenSpikingClassifier(), [], ("rtn", "gradients"))
    finally:
        unregister("gradients")
