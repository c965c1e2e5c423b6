"""``qslm search`` end to end on data and models qslm does not ship: a text-classification CSV with its
own column names and string labels, a language-modeling text file, and a checkpoint in the original
SpikeGPT repository's format converted with ``qslm convert``."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import qslm
from qslm.cli import main
from qslm.tasks.datasets.sst2 import load_sst2

SMALL = ["--calibration-size", "16", "--max-evals", "6", "--strategy", "uniform", "--bits", "4,8"]


@pytest.mark.slow
def test_text_classification_csv_with_other_columns_and_named_labels(tiny_classifier, small_data_dir, tmp_path,
                                                                     capsys):
    examples = load_sst2("dev", small_data_dir)
    names = ["negative", "positive"]
    files = {}
    for role, rows in (("validation", examples[:60]), ("test", examples[60:120])):
        path = files[role] = tmp_path / f"{role}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "review", "sentiment"])
            writer.writerows([i, ex.sentence, names[ex.label]] for i, ex in enumerate(rows))
    out = tmp_path / "out"
    argv = ["search", str(tiny_classifier), "--task", "text-classification",
            "--data-files", f"validation={files['validation']},test={files['test']}",
            "--text-column", "review", "--label-column", "sentiment", "--labels", ",".join(names),
            "--max-drop", "100", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *SMALL]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "text-classification" and report["final"]["split"] == "test"
    # the reported figure is the test file's accuracy, reproduced by the written model
    loaded = qslm.load(out)
    capsys.readouterr()
    assert main(["eval", str(out), "--task", "text-classification", "--data-files", f"test={files['test']}",
                 "--text-column", "review", "--label-column", "sentiment", "--labels", ",".join(names),
                 "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert 100 * evaluated["accuracy"] == pytest.approx(report["final"]["metric"])
    assert loaded.model is not None


@pytest.mark.slow
def test_language_modeling_text_files(tiny_lm, small_data_dir, tmp_path):
    lines = (small_data_dir / "wikitext-2" / "valid.txt").read_text().splitlines(keepends=True)
    (tmp_path / "val.txt").write_text("".join(lines[:150]))
    (tmp_path / "test.txt").write_text("".join(lines[150:200]))
    out = tmp_path / "out"
    argv = ["search", str(tiny_lm), "--task", "language-modeling",
            "--data-files", f"validation={tmp_path / 'val.txt'},test={tmp_path / 'test.txt'}",
            "--max-relative-increase", "1.0", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *SMALL]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["higher_is_better"] is False and report["metric_name"] == "word perplexity"
    assert report["final"]["memory_bytes"] < report["baseline"]["memory_bytes"]


@pytest.mark.slow
def test_converted_spikegpt_checkpoint(upstream_spikegpt, word_tokenizer_file, tmp_path, capsys):
    checkpoint = tmp_path / "rwkv-spikegpt.pth"
    torch.save(upstream_spikegpt(vocab_size=40, n_embd=16, n_layer=2), checkpoint)
    converted = tmp_path / "converted"
    assert main(["convert", "spikegpt", str(checkpoint), "--tokenizer", str(word_tokenizer_file(40)),
                 "--ctx-len", "16", "--out", str(converted)]) == 0
    words = " ".join(f"w{(7 * i) % 40}" for i in range(400))
    (tmp_path / "val.txt").write_text("\n".join(words[i:i + 80] for i in range(0, 1600, 80)) + "\n")
    (tmp_path / "test.txt").write_text(words[:400] + "\n")
    out = tmp_path / "out"
    argv = ["search", str(converted), "--task", "language-modeling",
            "--data-files", f"validation={tmp_path / 'val.txt'},test={tmp_path / 'test.txt'}",
            "--max-relative-increase", "10", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *SMALL]
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "feasible"
    assert len(report["hierarchy"]["blocks"]) == 2
    assert qslm.load(out).model is not None


def test_ignore_patterns_must_match_and_a_refusal_leaves_no_folder(tiny_classifier, small_data_dir, tmp_path,
                                                                   capsys):
    base = ["search", str(tiny_classifier), "--task", "sst2", "--data-dir", str(small_data_dir),
            "--cache-dir", str(tmp_path / "cache"), *SMALL]
    assert main(base + ["--out", str(tmp_path / "a"), "--ignore", "no-such-unit*"]) == 2
    assert "ignore pattern 'no-such-unit*' matches no unit" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b"), "--ignore", "*"]) == 2
    assert "matches the ignore patterns" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
