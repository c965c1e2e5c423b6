"""``qslm quantize`` end to end: the folder it writes loads in ``qslm eval`` and ``qslm info``."""
from __future__ import annotations

import json

import pytest

from qslm.cli import main
from qslm.quant.api import quantize
from qslm.quant.pack import PLAN_FILE
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import NeuronSpec, QuantSpec


def run_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_quantize_then_eval_and_info_lm(tiny_lm, small_data_dir, tmp_path, capsys):
    out = tmp_path / "lm-int4"
    result = run_json(capsys, ["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)])
    assert result["path"] == str(out) and result["bytes"] < result["bytes_fp32"] / 4
    info = run_json(capsys, ["info", str(out)])
    assert info["bytes"] == result["bytes"] and info["bytes_fp32"] == result["bytes_fp32"]
    assert {u["spec"] for u in info["units"] if not u["name"].startswith("other")} == {"int4 per-channel sym mse"}
    evaluation = run_json(capsys, ["eval", str(out), "--task", "wikitext2", "--limit", "5",
                                   "--data-dir", str(small_data_dir), "--device", "cpu"])
    assert evaluation["perplexity"] > 1


def test_quantize_classifiers_with_all_options(tiny_classifier, tiny_encoder, small_data_dir, tmp_path, capsys):
    for model, options in [(tiny_classifier, ["--granularity", "group:16", "--asymmetric", "--observer", "minmax"]),
                           (tiny_encoder, ["--granularity", "per-tensor", "--observer", "percentile",
                                           "--percentile", "99.5", "--neuron-bits", "8"])]:
        out = tmp_path / model.name
        capsys.readouterr()
        assert main(["quantize", str(model), "--bits", "3", *options, "--out", str(out)]) == 0
        assert f"wrote {out}" in capsys.readouterr().out
        plan = QuantPlan.load(out / PLAN_FILE)
        assert all(spec.bits == 3 for spec in plan.units.values())
        evaluation = run_json(capsys, ["eval", str(out), "--task", "sst2", "--limit", "16",
                                       "--data-dir", str(small_data_dir), "--device", "cpu"])
        assert 0.0 <= evaluation["accuracy"] <= 1.0
    assert QuantPlan.load(tmp_path / tiny_classifier.name / PLAN_FILE).units["emb"] == QuantSpec(
        3, "group", 16, False, "minmax")
    encoder_plan = QuantPlan.load(tmp_path / tiny_encoder.name / PLAN_FILE)
    assert encoder_plan.units["classifier"] == QuantSpec(3, "per-tensor", None, True, "percentile", 99.5)
    assert set(encoder_plan.neurons.values()) == {NeuronSpec(8)}


def test_plan_file_with_default_bits_for_the_rest(tiny_lm, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    QuantPlan({"head": QuantSpec(8), "emb": None}, {"blocks.0.lif1": NeuronSpec(12)}).save(plan_path)
    out = tmp_path / "mixed"
    assert main(["quantize", str(tiny_lm), "--plan", str(plan_path), "--bits", "2", "--neuron-bits", "6",
                 "--out", str(out)]) == 0
    plan = QuantPlan.load(out / PLAN_FILE)
    assert plan.units["head"] == QuantSpec(8) and plan.units["emb"] is None
    assert plan.units["blocks.1.ffn.value"] == QuantSpec(2)
    assert plan.neurons["blocks.0.lif1"] == NeuronSpec(12) and plan.neurons["blocks.1.lif2"] == NeuronSpec(6)
    only_plan = tmp_path / "only-plan"
    assert main(["quantize", str(tiny_lm), "--plan", str(plan_path), "--out", str(only_plan)]) == 0
    assert set(QuantPlan.load(only_plan / PLAN_FILE).units) == {"head", "emb"}


@pytest.mark.parametrize("argv,message", [
    (["--bits", "7"], "unsupported bit-width 7"),
    (["--bits", "4", "--granularity", "group:5"], "group_size 5 does not divide"),
    (["--bits", "4", "--granularity", "rows"], "bad granularity 'rows'"),
    (["--observer", "minmax"], "observer given without bits"),
    ([], "nothing to quantize"),
    (["--bits", "4", "--percentile", "99"], "only used with observer 'percentile'"),
    (["--plan", "missing.json"], "not found"),
])
def test_bad_options_are_clear_errors(tiny_lm, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["quantize", str(tiny_lm), *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_strict_plan_and_unknown_names(tiny_lm, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    QuantPlan({"blocks.0.att.keyy": QuantSpec(4)}).save(plan_path)
    assert main(["quantize", str(tiny_lm), "--plan", str(plan_path), "--out", str(tmp_path / "x")]) == 2
    assert "closest units: blocks.0.att.key" in capsys.readouterr().err
    QuantPlan({"head": QuantSpec(4)}).save(plan_path)
    assert main(["quantize", str(tiny_lm), "--plan", str(plan_path), "--strict", "--out", str(tmp_path / "x")]) == 2
    assert "unmentioned" in capsys.readouterr().err


def test_quantized_input_and_in_place_output_are_refused(tiny_lm, tmp_path):
    out = quantize(tiny_lm, bits=8, out=tmp_path / "q").path
    from qslm.errors import QslmError

    with pytest.raises(QslmError, match="already quantized"):
        quantize(out, bits=4, out=tmp_path / "qq")
    with pytest.raises(QslmError, match="is the input model"):
        quantize(tiny_lm, bits=4, out=tiny_lm)
