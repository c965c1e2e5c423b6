"""``qslm train``: help, option parsing, and a tiny run through the command line."""
from __future__ import annotations

import json
import shutil

import pytest

from qslm.cli import main
from qslm.commands.train import parse_overrides
from qslm.errors import QslmError


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: qslm train")
    for option in ("--arch", "--task", "--out", "--steps", "--set KEY=VALUE", "--data-dir", "resumes"):
        assert option in out


def test_top_level_help_lists_train_and_eval(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_parse_overrides():
    """Values stay text here: the training options read each as its config field's type."""
    assert parse_overrides(["n_layer=6", "tau=1.5", "task=lm", "v_threshold=1e-1"]) == {
        "n_layer": "6", "tau": "1.5", "task": "lm", "v_threshold": "1e-1"}
    with pytest.raises(QslmError, match="--set 'n_layer': expected KEY=VALUE"):
        parse_overrides(["n_layer"])
    with pytest.raises(QslmError, match="--set '=4': expected KEY=VALUE"):
        parse_overrides(["=4"])


def test_tiny_run(capsys, small_data_dir, tmp_path):
    out = tmp_path / "model"
    argv = ["train", "--arch", "spikegpt", "--task", "sst2", "--out", str(out), "--steps", "2",
            "--batch-size", "4", "--warmup", "1", "--vocab-size", "300", "--set", "n_embd=16",
            "--set", "n_layer=1", "--set", "ctx_len=24", "--data-dir", str(small_data_dir), "--device", "cpu"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["task"], config["n_embd"]) == ("spikegpt", "classification", 16)


def test_unknown_config_field(capsys, small_data_dir, tmp_path):
    argv = ["train", "--arch", "spiking-encoder", "--task", "sst2", "--out", str(tmp_path / "m"),
            "--vocab-size", "300", "--set", "n_experts=4", "--data-dir", str(small_data_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown config fields ['n_experts'] for arch 'spiking-encoder'" in err
    assert "n_head" in err  # the fields that do exist
    assert not any(tmp_path.iterdir())  # no work folder left behind


def test_out_is_checked_before_training(capsys, small_data_dir, tmp_path, monkeypatch):
    import qslm.train

    def no_training(options):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(qslm.train, "train", no_training)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    for out, overwrite, message in [(tmp_path / "notes.txt", ["--overwrite"], "is a file, not a folder"),
                                    (tmp_path / "mine", [], "already holds files qslm did not write")]:
        argv = ["train", "--arch", "spikegpt", "--task", "sst2", "--out", str(out), *overwrite,
                "--data-dir", str(small_data_dir), "--device", "cpu"]
        capsys.readouterr()
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.tex"]


def test_overwrite_trains_beside_the_user_files(capsys, small_data_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    argv = ["train", "--arch", "spikegpt", "--task", "sst2", "--out", str(out), "--overwrite", "--steps", "1",
            "--batch-size", "4", "--warmup", "1", "--vocab-size", "300", "--set", "n_embd=16",
            "--set", "n_layer=1", "--set", "ctx_len=24", "--data-dir", str(small_data_dir), "--device", "cpu"]
    assert main(argv) == 0
    assert (out / "thesis.tex").read_text() == "years of work"
    assert (out / "model.safetensors").is_file() and (out / "training.json").is_file()


def base_argv(out) -> list[str]:
    return ["train", "--arch", "spikegpt", "--task", "sst2", "--out", str(out), "--vocab-size", "300"]


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be a whole number >= 1, got 0"),
    (["--steps", "-5"], "--steps must be a whole number >= 1, got -5"),
    (["--batch-size", "0"], "--batch-size must be a whole number >= 1, got 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--warmup", "-1"], "--warmup must be a whole number >= 0, got -1"),
    (["--vocab-size", "0"], "--vocab-size must be a whole number >= 258"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be a whole number >= 1, got 0"),
    (["--eval-every", "0"], "--eval-every must be a whole number >= 1, got 0"),
    (["--distill-weight", "2"], "--distill-weight must be a finite number in [0, 1], got 2.0"),
    (["--distill-temperature", "nan"], "--distill-temperature must be a finite number > 0, got nan"),
    (["--ema-decay", "1"], "--ema-decay must be a finite number in [0, 1), got 1.0"),
    (["--length-weighting", "nan"], "--length-weighting must be a finite number >= 0, got nan"),
    (["--set", "n_layer=abc"], "--set n_layer='abc': config field n_layer must be a whole number"),
    (["--set", "n_layer=4.0"], "--set n_layer='4.0': config field n_layer must be a whole number"),
    (["--set", "tau=abc"], "--set tau='abc': config field tau must be a finite number"),
])
def test_bad_options_exit_2_naming_the_flag(extra, message, capsys, small_data_dir, tmp_path):
    assert main(base_argv(tmp_path / "m") + ["--data-dir", str(small_data_dir)] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("qslm train: error: ") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # refused before any work


def test_out_naming_a_file_exits_2(capsys, small_data_dir, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    assert main(base_argv(out) + ["--data-dir", str(small_data_dir)]) == 2
    assert f"output folder {out} is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [out]


def test_a_trained_model_is_not_replaced_without_overwrite(capsys, small_data_dir, tiny_lm, tmp_path):
    out = tmp_path / "trained"
    shutil.copytree(tiny_lm, out)  # a model folder written by qslm train (it carries the manifest)
    before = (out / "model.safetensors").read_bytes()
    argv = ["train", "--arch", "spikegpt", "--task", "sst2", "--out", str(out), "--steps", "1", "--batch-size", "4",
            "--vocab-size", "300", "--data-dir", str(small_data_dir), "--device", "cpu"]
    assert main(argv) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
