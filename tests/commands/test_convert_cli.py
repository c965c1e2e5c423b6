"""``qslm convert spikegpt``: a folder the other commands load, and one line with exit 2 on bad input."""
from __future__ import annotations

import json

import pytest
import torch

from qslm.cli import main


@pytest.fixture
def checkpoint(upstream_spikegpt, tmp_path):
    path = tmp_path / "SpikeGPT-tiny.pth"
    torch.save(upstream_spikegpt(40, 8, 2), path)
    return path


def test_convert_then_info(checkpoint, word_tokenizer_file, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "spikegpt", str(checkpoint), "--tokenizer", str(word_tokenizer_file(37)),
                 "--out", str(out), "--ctx-len", "256"]) == 0
    printed = capsys.readouterr().out
    assert "note: cast bfloat16 tensors to float32 (exact)" in printed
    assert f"wrote {out}: SpikeGPT, 2 blocks, width 8, vocabulary 40, FFN 4x, ctx_len 256" in printed
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "spikegpt" and info["task"] == "lm"
    assert info["parameters"] == sum(t.numel() for t in torch.load(checkpoint, weights_only=True).values())


def test_json_output(checkpoint, word_tokenizer_file, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "spikegpt", str(checkpoint), "--tokenizer", str(word_tokenizer_file(40)),
                 "--out", str(out), "--binary-embedding", "on", "--tau", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["path"] == str(out) and result["binary_embedding"] is True
    assert (result["config"]["n_layer"], result["config"]["tau"]) == (2, 4.0)
    assert json.loads((out / "config.json").read_text()) == result["config"]


def bad_inputs(tmp_path, checkpoint, word_tokenizer_file, upstream_spikegpt, hostile_checkpoint):
    """(arguments after ``convert spikegpt``, text the error line must hold) for each kind of bad input."""
    tokenizer = str(word_tokenizer_file(40))
    hostile = hostile_checkpoint(tmp_path / "hostile.pth", tmp_path / "marker")
    missing_key = upstream_spikegpt(40, 8, 2)
    del missing_key["ln_out.weight"]
    torch.save(missing_key, tmp_path / "missing-key.pth")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    out = str(tmp_path / "out")
    return [
        ([str(tmp_path / "nope.pth"), "--tokenizer", tokenizer, "--out", out], "missing checkpoint"),
        ([str(hostile), "--tokenizer", tokenizer, "--out", out], "needs full unpickling"),
        ([str(tmp_path / "missing-key.pth"), "--tokenizer", tokenizer, "--out", out], "missing keys: ln_out.weight"),
        ([str(checkpoint), "--tokenizer", str(word_tokenizer_file(41)), "--out", out], "has 41 tokens"),
        ([str(checkpoint), "--tokenizer", str(tmp_path / "none.json"), "--out", out], "missing tokenizer"),
        ([str(checkpoint), "--tokenizer", tokenizer, "--out", str(tmp_path / "full")], "is not empty"),
        ([str(checkpoint), "--tokenizer", tokenizer, "--out", out, "--tau", "0.5"], "tau must be greater than 1"),
        ([str(checkpoint), "--tokenizer", tokenizer, "--out", out, "--ctx-len", "0"], "ctx_len must be a positive"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(checkpoint, word_tokenizer_file, upstream_spikegpt,
                                                hostile_checkpoint, tmp_path, capsys):
    for argv, expected in bad_inputs(tmp_path, checkpoint, word_tokenizer_file, upstream_spikegpt,
                                     hostile_checkpoint):
        capsys.readouterr()
        assert main(["convert", "spikegpt", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("qslm convert: error: ") and expected in err, err
    assert not (tmp_path / "marker").exists() and not (tmp_path / "out").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_unknown_format_is_an_argument_error(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "rwkv", str(checkpoint), "--tokenizer", "t.json", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'rwkv'" in capsys.readouterr().err
