"""``qslm eval``: JSON and table output, limits, and clear errors (in-process through ``qslm.cli.main``)."""
from __future__ import annotations

import json
import math

import pytest

from qslm.cli import main
from qslm.tasks.datasets.wikitext import load_wikitext, word_count


def run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object: json.loads rejects trailing text


def test_sst2_json(capsys, tiny_classifier, small_data_dir):
    result = run_json(capsys, "eval", str(tiny_classifier), "--task", "sst2", "--limit", "20", "--json",
                      "--data-dir", str(small_data_dir), "--device", "cpu")
    assert {"task", "split", "n", "accuracy", "seconds", "firing_rates"} <= set(result)
    assert (result["task"], result["split"], result["n"]) == ("sst2", "dev", 20)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["accuracy"] * 20 == pytest.approx(round(result["accuracy"] * 20))
    assert result["seconds"] >= 0
    assert set(result["firing_rates"]) == {f"blocks.{i}.lif{j}" for i in range(2) for j in (1, 2)}
    assert "perplexity" not in result


def test_encoder_on_train_split(capsys, tiny_encoder, small_data_dir):
    result = run_json(capsys, "eval", str(tiny_encoder), "--task", "sst2", "--split", "train", "--limit", "5",
                      "--json", "--data-dir", str(small_data_dir))
    assert (result["split"], result["n"]) == ("train", 5)
    assert len(result["firing_rates"]) == 2 * 7


def test_wikitext2_json(capsys, tiny_lm, small_data_dir):
    result = run_json(capsys, "eval", str(tiny_lm), "--task", "wikitext2", "--limit", "8", "--json",
                      "--data-dir", str(small_data_dir))
    first_lines = "".join(load_wikitext("test", small_data_dir).splitlines(keepends=True)[:8])
    assert (result["task"], result["split"], result["n"]) == ("wikitext2", "test", word_count(first_lines))
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert "accuracy" not in result


def test_data_dir_from_environment(capsys, tiny_classifier, small_data_dir, monkeypatch):
    monkeypatch.setenv("QSLM_DATA_DIR", str(small_data_dir))
    assert run_json(capsys, "eval", str(tiny_classifier), "--task", "sst2", "--limit", "3", "--json")["n"] == 3


def test_table_output(capsys, tiny_classifier, small_data_dir):
    assert main(["eval", str(tiny_classifier), "--task", "sst2", "--limit", "10",
                 "--data-dir", str(small_data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sst2 dev: accuracy ")
    assert "on 10 examples" in out
    assert "neuron" in out and "blocks.1.lif2" in out


@pytest.mark.parametrize("model, task, message", [
    ("tiny_classifier", "wikitext2", "is a classifier; it cannot be evaluated on task 'wikitext2'"),
    ("tiny_lm", "sst2", "is a language model; it cannot be evaluated on task 'sst2'"),
    ("tiny_masked_lm", "sst2", "is a masked-language-model pre-training stage, not a classifier or a language "
                               "model; fine-tune it first: qslm train --arch spiking-encoder --task sst2 --init"),
])
def test_wrong_task_for_the_model(capsys, request, small_data_dir, model, task, message):
    folder = request.getfixturevalue(model)
    assert main(["eval", str(folder), "--task", task, "--data-dir", str(small_data_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("qslm eval: error: model ")
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "--limit must be positive, got 0"),
    (["--data-dir", "/nonexistent/data"], "data folder /nonexistent/data does not exist"),
    (["--split", "test"], "SST-2 split 'test' unknown"),
    (["--device", "tpu:9"], "unknown device 'tpu:9'"),
])
def test_bad_options(capsys, tiny_classifier, small_data_dir, argv, message):
    base = ["eval", str(tiny_classifier), "--task", "sst2", "--data-dir", str(small_data_dir)]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_model(capsys, tmp_path):
    assert main(["eval", str(tmp_path / "nothing-here"), "--task", "sst2"]) == 2
    assert "is neither a model folder nor a bundled model" in capsys.readouterr().err


def test_task_is_required(capsys, tiny_classifier):
    with pytest.raises(SystemExit) as info:
        main(["eval", str(tiny_classifier)])
    assert info.value.code == 2
    assert "--task" in capsys.readouterr().err


# ---- the user's files

def write_user_files(folder, small_data_dir) -> dict:
    """The first dev sentences as a CSV (own column names, named labels), a JSONL and a TSV file, and
    WikiText-2 test lines as a plain-text file."""
    from qslm.tasks.datasets.sst2 import load_sst2

    examples = load_sst2("dev", small_data_dir)[:12]
    names = ("neg", "pos")
    csv_rows = "".join(f'"{ex.sentence.replace(chr(34), chr(34) * 2)}",{names[ex.label]}\n' for ex in examples)
    (folder / "reviews.csv").write_text("review,sentiment\n" + csv_rows)
    (folder / "reviews.jsonl").write_text("".join(json.dumps({"text": ex.sentence, "label": ex.label}) + "\n"
                                                  for ex in examples))
    (folder / "reviews.tsv").write_text("label\tsentence\n" + "".join(f"{ex.label}\t{ex.sentence}\n"
                                                                      for ex in examples))
    (folder / "corpus.txt").write_text(load_wikitext("test", small_data_dir))
    return {"examples": examples}


@pytest.mark.parametrize("file, options", [
    ("reviews.csv", ["--text-column", "review", "--label-column", "sentiment", "--labels", "neg,pos"]),
    ("reviews.jsonl", []),
    ("reviews.tsv", []),
])
def test_classification_files(capsys, tmp_path, tiny_classifier, small_data_dir, file, options):
    from qslm.checkpoint import load_model
    from qslm.tasks.evaluation import evaluate_classification

    examples = write_user_files(tmp_path, small_data_dir)["examples"]
    result = run_json(capsys, "eval", str(tiny_classifier), "--task", "text-classification", "--data-files",
                      f"test={tmp_path / file}", *options, "--json")
    assert (result["task"], result["split"], result["n"]) == ("text-classification", "test", 12)
    loaded = load_model(tiny_classifier)
    expected = evaluate_classification(loaded.model, loaded.tokenizer, examples, "test")
    assert result["accuracy"] == pytest.approx(expected.accuracy)
    assert result["loss"] == pytest.approx(expected.loss, rel=1e-5)


def test_validation_split_of_the_files(capsys, tmp_path, tiny_classifier, small_data_dir):
    write_user_files(tmp_path, small_data_dir)
    result = run_json(capsys, "eval", str(tiny_classifier), "--task", "text-classification", "--data-files",
                      f"validation={tmp_path / 'reviews.jsonl'}", "--split", "validation", "--limit", "5", "--json")
    assert (result["split"], result["n"]) == ("validation", 5)


def test_plain_text_file(capsys, tmp_path, tiny_lm, small_data_dir):
    write_user_files(tmp_path, small_data_dir)
    assert main(["eval", str(tiny_lm), "--task", "language-modeling", "--data-files",
                 f"test={tmp_path / 'corpus.txt'}", "--limit", "8"]) == 0
    out = capsys.readouterr().out
    first_lines = "".join(load_wikitext("test", small_data_dir).splitlines(keepends=True)[:8])
    assert out.startswith("language-modeling test: word perplexity ")
    assert f"on {word_count(first_lines)} words" in out


@pytest.mark.parametrize("argv, message", [
    (["--data-files", "validation={csv}"], "--data-files names no test file; give test=FILE or choose another "
                                           "--split (validation)"),
    (["--data-files", "test={csv}"], "{csv}:1: no text column (sentence or text); columns found: review, sentiment"),
    (["--data-files", "test={csv}", "--text-column", "review", "--label-column", "sentiment"],
     "{csv}:2: label 'neg' is not an integer"),
    (["--data-files", "test={csv}", "--text-column", "review", "--label-column", "sentiment", "--labels", "pos"],
     "--labels names 1 classes (pos), but model"),
    (["--data-files", "test"], "--data-files item 'test': expected ROLE=FILE"),
    (["--data-files", "test={csv},test={csv}"], "--data-files names the test file twice"),
    (["--data-files", "test={csv}", "--split", "dev"], "split 'dev' unknown for task text-classification"),
    (["--data-files", "test={missing}"], "missing data file {missing}"),
])
def test_bad_user_files(capsys, tmp_path, tiny_classifier, small_data_dir, argv, message):
    write_user_files(tmp_path, small_data_dir)
    paths = {"csv": tmp_path / "reviews.csv", "missing": tmp_path / "none.csv"}
    argv = [arg.format(**paths) for arg in argv]
    assert main(["eval", str(tiny_classifier), "--task", "text-classification", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qslm eval: error: ") and len(err.strip().splitlines()) == 1
    assert message.format(**paths) in err


def test_presets_refuse_data_files(capsys, tmp_path, tiny_classifier, small_data_dir):
    assert main(["eval", str(tiny_classifier), "--task", "sst2", "--data-files", f"test={tmp_path}/a.csv",
                 "--data-dir", str(small_data_dir)]) == 2
    assert "--data-files: task sst2 reads its own files from the data folder" in capsys.readouterr().err
