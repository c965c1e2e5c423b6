"""``qslm eval``: JSON and table output, limits, and clear errors (in-process through ``qslm.cli.main``)."""
from __future__ import annotations

import json
import math

import pytest

from qslm.cli import main
from qslm.data.wikitext import load_wikitext, word_count


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
