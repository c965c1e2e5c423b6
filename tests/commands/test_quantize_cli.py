"""``qslm quantize`` end to end: the folder it writes loads in ``qslm eval`` and ``qslm info``."""
from __future__ import annotations

import errno
import json
import shutil

import pytest

from qslm.cli import main
from qslm.quant.api import quantize
from qslm.quant.pack import PLAN_FILE
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.neuron_spec import NeuronSpec


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
    assert {u["spec"] for u in info["units"] if not u["name"].startswith("other")} == {
        "int4 per-channel sym mse fp16-scales"}
    evaluation = run_json(capsys, ["eval", str(out), "--task", "wikitext2", "--limit", "5",
                                   "--data-dir", str(small_data_dir), "--device", "cpu"])
    assert evaluation["perplexity"] > 1


def test_quantize_classifiers_with_all_options(tiny_classifier, tiny_encoder, small_data_dir, tmp_path, capsys):
    for model, options in [(tiny_classifier, ["--granularity", "group:16", "--asymmetric", "--observer", "minmax",
                                              "--scale-dtype", "float32"]),
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
    assert encoder_plan.units["classifier"] == QuantSpec(3, "per-tensor", None, True, "percentile", 99.5,
                                                         scale_dtype="float16")
    assert set(encoder_plan.neurons.values()) == {NeuronSpec(8)}


def test_quantize_signed_uses_every_code(tiny_lm, small_data_dir, tmp_path, capsys):
    out = tmp_path / "signed"
    assert main(["quantize", str(tiny_lm), "--bits", "2", "--signed", "--out", str(out)]) == 0
    assert "int2 per-channel signed mse fp16-scales" in capsys.readouterr().out
    plan = QuantPlan.load(out / PLAN_FILE)
    assert set(plan.units.values()) == {QuantSpec(2, scale_dtype="float16", all_levels=True)}
    evaluation = run_json(capsys, ["eval", str(out), "--task", "wikitext2", "--limit", "5",
                                   "--data-dir", str(small_data_dir), "--device", "cpu"])
    assert evaluation["perplexity"] > 1
    with pytest.raises(SystemExit):  # one grid at a time
        main(["quantize", str(tiny_lm), "--bits", "2", "--signed", "--asymmetric", "--out", str(tmp_path / "x")])


def test_plan_file_with_default_bits_for_the_rest(tiny_lm, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    QuantPlan({"head": QuantSpec(8), "emb": None}, {"blocks.0.lif1": NeuronSpec(12)}).save(plan_path)
    out = tmp_path / "mixed"
    assert main(["quantize", str(tiny_lm), "--plan", str(plan_path), "--bits", "2", "--neuron-bits", "6",
                 "--out", str(out)]) == 0
    plan = QuantPlan.load(out / PLAN_FILE)
    assert plan.units["head"] == QuantSpec(8) and plan.units["emb"] is None
    assert plan.units["blocks.1.ffn.value"] == QuantSpec(2, scale_dtype="float16")  # --bits' default scales
    assert plan.neurons["blocks.0.lif1"] == NeuronSpec(12) and plan.neurons["blocks.1.lif2"] == NeuronSpec(6)
    only_plan = tmp_path / "only-plan"
    assert main(["quantize", str(tiny_lm), "--plan", str(plan_path), "--out", str(only_plan)]) == 0
    assert set(QuantPlan.load(only_plan / PLAN_FILE).units) == {"head", "emb"}


@pytest.mark.parametrize("argv,message", [
    (["--bits", "7"], "unsupported bit-width 7"),
    (["--bits", "4", "--granularity", "group:5"], "group_size 5 does not divide"),
    (["--bits", "4", "--granularity", "rows"], "bad granularity 'rows'"),
    (["--observer", "minmax"], "observer given without bits"),
    (["--scale-dtype", "float32"], "scale_dtype given without bits"),
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


# ---- --out never destroys the user's files

def folder_state(path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_out_folder_of_user_files_is_refused_before_work_and_kept(tiny_lm, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} already holds files qslm did not write (thesis.tex)" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert folder_state(out) == {"thesis.tex": b"years of work"}


def test_overwrite_writes_the_model_beside_the_user_files(tiny_lm, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out), "--overwrite"]) == 0
    assert (out / "thesis.tex").read_text() == "years of work"
    assert QuantPlan.load(out / PLAN_FILE).units["head"].bits == 4
    assert main(["quantize", str(tiny_lm), "--bits", "8", "--out", str(out)]) == 0  # now a quantize output
    assert (out / "thesis.tex").read_text() == "years of work"
    assert QuantPlan.load(out / PLAN_FILE).units["head"].bits == 8


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_parent_of_the_input_model_is_refused_even_with_overwrite(tiny_lm, tmp_path, capsys, overwrite):
    projects = tmp_path / "projects"
    shutil.copytree(tiny_lm, projects / "mymodel")
    (projects / "thesis.tex").write_text("years of work")
    before = folder_state(projects)
    capsys.readouterr()
    assert main(["quantize", str(projects / "mymodel"), "--bits", "4", "--out", str(projects), *overwrite]) == 2
    assert "contains the input model" in capsys.readouterr().err
    assert folder_state(projects) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_naming_a_file_is_refused_and_the_file_kept(tiny_lm, tmp_path, capsys, overwrite):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(target), *overwrite]) == 2
    assert f"output folder {target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "mine"


def test_another_float_models_folder_is_refused(tiny_lm, tiny_classifier, tmp_path, capsys):
    other = shutil.copytree(tiny_classifier, tmp_path / "other")  # a train output (save_model)
    before = folder_state(other)
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(other)]) == 2
    assert "holds the output of 'qslm train'" in capsys.readouterr().err
    assert folder_state(other) == before


def test_a_rerun_replaces_only_its_own_files(tiny_lm, tmp_path):
    out = tmp_path / "q"
    quantize(tiny_lm, bits=8, out=out)
    (out / "README.txt").write_text("what this model is")  # the user's note, added later
    quantize(tiny_lm, bits=2, out=out)
    assert (out / "README.txt").read_text() == "what this model is"
    assert QuantPlan.load(out / PLAN_FILE).units["head"].bits == 2


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_unwritable_out_is_one_line_before_any_work(tiny_lm, tmp_path, capsys, monkeypatch, where):
    import qslm.checkpoint

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(qslm.checkpoint, "load_model", no_loading)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "q" if where == "under a file" else "/sys/qslm-q"  # /sys: read-only even to root
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qslm quantize: error: cannot create output folder {out}") and len(err.splitlines()) == 1


def test_a_late_os_error_is_one_line_naming_the_path(tiny_lm, tmp_path, capsys, monkeypatch):
    import qslm.quant.pack

    def disk_full(state, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(qslm.quant.pack, "save_file", disk_full)
    out = tmp_path / "q"
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qslm quantize: error: cannot write {out}/") and "model.safetensors: No space left" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()  # the folder this run created goes with it


def folder_bytes(folder) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_full_disk_in_safetensors_is_one_line_and_keeps_the_previous_run(tiny_lm, tmp_path, capsys,
                                                                            monkeypatch):
    import qslm.quant.pack
    from safetensors import SafetensorError

    out = tmp_path / "q"
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)]) == 0
    previous = folder_bytes(out)

    def disk_full(state, filename, metadata=None):  # what safetensors raises on a full tmpfs
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(qslm.quant.pack, "save_file", disk_full)
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qslm quantize: error: cannot write {out}/.qslm-staging-")
    assert err.endswith("/model.safetensors: No space left on device\n") and len(err.splitlines()) == 1
    assert folder_bytes(out) == previous  # the previous run's files, byte for byte, and no staging folder


def test_too_little_free_space_is_refused_before_writing(tiny_lm, tmp_path, capsys, monkeypatch):
    import qslm.quant.pack
    from tests.test_diskspace import fake_free_space

    out = tmp_path / "q"
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)]) == 0
    previous = folder_bytes(out)
    fake_free_space(monkeypatch, 50_000)  # the tiny model's files take about 100 kB

    def no_writing(*args, **kwargs):
        raise AssertionError("the model was written without room for it")

    monkeypatch.setattr(qslm.quant.pack, "save_file", no_writing)
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qslm quantize: error: not enough free space in {out} for the quantized model: ")
    assert err.endswith(" kB) needed, 50,000 bytes (50.0 kB) free; free some space or choose another output folder\n")
    assert len(err.splitlines()) == 1
    assert folder_bytes(out) == previous
    assert main(["quantize", str(tiny_lm), "--bits", "8", "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()  # a folder this run created goes with it


@pytest.mark.parametrize("raised,code,message", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/x"), 2, "error: /data/x: Permission denied"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "a/b"), 2, "error: a/b: Not a directory"),
    (OSError("socket closed"), 2, "error: socket closed"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_cli_turns_os_errors_into_one_line(tiny_lm, tmp_path, capsys, monkeypatch, raised, code, message):
    import qslm.commands.quantize

    def fail(args):
        raise raised

    monkeypatch.setattr(qslm.commands.quantize, "run", fail)
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(tmp_path / "q")]) == code
    err = capsys.readouterr().err
    assert err == f"qslm quantize: {message}\n"
