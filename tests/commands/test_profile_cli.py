"""``qslm profile`` in-process on the tiny fixture models and the small data slice."""
from __future__ import annotations

import json

import pytest

from qslm.cli import main


def profile_json(capsys, *args) -> dict:
    assert main(["profile", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_language_model_json(tiny_lm, small_data_dir, capsys):
    info = profile_json(capsys, tiny_lm, "--data-dir", small_data_dir, "--limit", 1)
    assert set(info) >= {"path", "arch", "task", "calibration", "hardware", "hierarchy", "groups", "op_counts",
                         "energy_fp32", "energy_fp32_by_group", "power_fp32_mw"}
    assert (info["arch"], info["task"], info["hardware"]) == ("spikegpt", "wikitext2", "default_45nm")
    assert info["calibration"]["split"] == "calibration" and info["calibration"]["sequences"] > 0
    tree = info["hierarchy"]
    assert [b["name"] for b in tree["blocks"]] == ["blocks.0", "blocks.1"]
    assert [u["name"] for u in tree["top_level"]] == ["emb", "head"]
    block = tree["blocks"][0]
    assert set(block) >= {"parameters", "bytes_fp32", "firing_rate", "neurons", "modules"}
    assert set(block["neurons"]) == {"blocks.0.lif1", "blocks.0.lif2"}
    assert 0 <= block["firing_rate"] <= 1
    assert list(info["groups"]) == ["emb", "blocks.0", "blocks.1", "head"]
    # SpikeGPT's linear layers see LayerNorm outputs: dense MACs, not spike ACs
    assert info["op_counts"]["units"]["blocks.0.att.key"]["input"] == "dense"
    assert info["energy_fp32"]["total_pj"] == pytest.approx(sum(info["energy_fp32_by_group"].values()))


def test_classifier_text_output(tiny_encoder, small_data_dir, capsys):
    assert main(["profile", str(tiny_encoder), "--data-dir", str(small_data_dir), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "sst2 held-out slice, 4 sequences" in out
    for name in ("blocks.0", "  blocks.0.attn.query", "  blocks.1.mlp.fc2", "pos_emb", "classifier"):
        assert f"\n{name} " in out
    assert "firing rate" in out and "nJ" in out and "mW" in out


def test_hardware_profile_can_be_swapped(tiny_classifier, small_data_dir, capsys):
    args = (tiny_classifier, "--data-dir", small_data_dir, "--limit", 2)
    default = profile_json(capsys, *args)
    neuromorphic = profile_json(capsys, *args, "--hardware", "neuromorphic")
    assert neuromorphic["hardware"] == "neuromorphic"
    assert neuromorphic["energy_fp32"]["memory_pj"] < default["energy_fp32"]["memory_pj"]


@pytest.mark.parametrize("extra, message", [
    (["--task", "sst2"], "is a language model; it cannot be profiled on task 'sst2'"),
    (["--limit", "0"], "--limit must be positive, got 0"),
    (["--hardware", "tpu"], "hardware profile 'tpu' is neither a JSON file nor a bundled profile"),
])
def test_errors_are_one_line(tiny_lm, small_data_dir, capsys, extra, message):
    assert main(["profile", str(tiny_lm), "--data-dir", str(small_data_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qslm profile: error:") and message in err


def test_a_masked_lm_stage_is_refused(tiny_masked_lm, small_data_dir, capsys):
    assert main(["profile", str(tiny_masked_lm), "--data-dir", str(small_data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qslm profile: error:") and "masked-language-model pre-training stage" in err


def test_classification_file(tiny_classifier, small_data_dir, tmp_path, capsys):
    from qslm.tasks.datasets.sst2 import load_sst2

    examples = load_sst2("dev", small_data_dir)[:7]
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps({"sentence": ex.sentence, "label": ex.label}) + "\n" for ex in examples))
    info = profile_json(capsys, tiny_classifier, "--task", "text-classification", "--data-files", f"validation={path}")
    assert (info["task"], info["calibration"]["sequences"]) == ("text-classification", 7)
    assert info["calibration"]["source"] == f"validation file {path}"
    assert main(["profile", str(tiny_classifier), "--task", "text-classification", "--data-files",
                 f"validation={path}", "--limit", "3"]) == 0
    assert f"text-classification validation file {path}, 3 sequences" in capsys.readouterr().out


@pytest.mark.slow
def test_text_file_with_a_calibration_file(tiny_lm, small_data_dir, tmp_path, capsys):
    valid = (small_data_dir / "wikitext-2" / "valid.txt").read_text()
    (tmp_path / "val.txt").write_text(valid)
    (tmp_path / "cal.txt").write_text("".join(line for line in valid.splitlines(keepends=True)[100:] if line.strip()))
    files = f"validation={tmp_path / 'val.txt'},calibration={tmp_path / 'cal.txt'}"
    one_line = profile_json(capsys, tiny_lm, "--task", "language-modeling", "--data-files", files, "--limit", 1)
    many = profile_json(capsys, tiny_lm, "--task", "language-modeling", "--data-files", files)
    assert one_line["calibration"]["source"] == f"calibration file {tmp_path / 'cal.txt'}"
    assert 0 < one_line["calibration"]["sequences"] < many["calibration"]["sequences"]


def test_file_kinds_need_their_files(tiny_classifier, capsys):
    assert main(["profile", str(tiny_classifier), "--task", "text-classification"]) == 2
    assert "task text-classification reads your files: give --data-files" in capsys.readouterr().err
