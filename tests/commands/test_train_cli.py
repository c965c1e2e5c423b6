"""``qslm train``: help, option parsing, and a tiny run through the command line."""
from __future__ import annotations

import json

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
    assert parse_overrides(["n_layer=6", "tau=1.5", "task=lm", "v_threshold=1e-1"]) == {
        "n_layer": 6, "tau": 1.5, "task": "lm", "v_threshold": 0.1}
    assert isinstance(parse_overrides(["n_embd=64"])["n_embd"], int)
    with pytest.raises(QslmError, match="--set 'n_layer': expected KEY=VALUE"):
        parse_overrides(["n_layer"])


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
