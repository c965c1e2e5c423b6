"""``qslm search`` and ``qslm demo`` in-process through ``qslm.cli.main``: the FP32 vs QSLM table, strategies,
option errors (exit code 2) and help."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import time

import pytest

from qslm.cli import main
from qslm.commands.search import options_from_args
from qslm.search.config import BASE_SPEC, SearchConfig
from qslm.tasks.presets import DEFAULT_SIZES as DEFAULTS


def small_options(small_data_dir, cache_dir) -> list[str]:
    # the tiny classifier is untrained: which plans pass on its 64 examples is luck, so its searches keep the
    # symmetric grid alone and these tests of the command's output do not hang on that luck
    return ["--data-dir", str(small_data_dir), "--confidence", "0.5", "--calibration-size", "32", "--validation-size", "64",
            "--cache-dir", str(cache_dir), "--device", "cpu", "--grids", "sym"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The session's shared sensitivity cache (keyed by model and calibration data, so safe to share)."""
    return tmp_path_factory.getbasetemp() / "sensitivity-cache"


@pytest.mark.slow
def test_search_prints_fp32_vs_qslm_table(tiny_classifier, small_data_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--max-memory", "50%",
                 "--out", str(out), *small_options(small_data_dir, cache_dir)]) == 0
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    header = next(line for line in printed if "FP32" in line)
    assert header.split() == ["FP32", "QSLM", "change"]
    rows = {line.split("  ")[0]: line for line in printed}
    for row in ("memory (MB)", "energy / inference (uJ)", "power (mW)", "accuracy (%) (dev)"):
        assert row in rows, row
    report = json.loads((out / "report.json").read_text())
    fraction = report["final"]["memory_bytes"] / report["baseline"]["memory_bytes"]
    assert f"{100 * fraction:.1f}% of FP32" in rows["memory (MB)"]
    assert f"model and report written to {out}" in printed[-1]
    assert report["config"]["strategy"] == "tiered"
    # the preset scores every sentence: the limit was judged per example, and the headline is printed
    assert report["quality"]["bounded"] and report["quality"]["confidence"] == 0.5
    assert report["quality"]["search_examples"] + report["quality"]["confirmation_examples"] == 64
    # (on stderr when the reported split broke the limit, as on these 200 dev sentences)
    assert report["headline"][1] in (printed if report["final"]["quality_within_limit"] else captured.err.splitlines())
    # what was asked, and the limit it means for this model
    assert report["constraints"]["max_memory"] == "50%"
    assert report["constraints"]["memory_limit_bytes"] == 0.5 * report["baseline"]["memory_bytes"]
    # modelled latency (what the objective used) beside the measured one, in strict JSON
    json.loads((out / "report.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert report["baseline"]["modelled_latency_s"] > report["final"]["modelled_latency_s"] > 0
    assert report["baseline"]["latency_s"] > 0 and report["final"]["latency_s"] > 0
    for candidate in report["candidates"]:
        assert candidate["modelled_latency_s"] > 0 and candidate["measured_latency_s"] >= 0
        assert candidate["latency_fraction"] == pytest.approx(
            candidate["modelled_latency_s"] / report["baseline"]["modelled_latency_s"])


@pytest.mark.slow
def test_greedy_strategy(tiny_classifier, small_data_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "greedy"
    assert main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--strategy", "greedy",
                 "--weights", "quality=2,memory=1", "--out", str(out), *small_options(small_data_dir, cache_dir)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["strategy"] == "greedy" and report["status"] == "feasible"
    assert {c["tier"] for c in report["candidates"]} == {"greedy"}
    assert report["config"]["objective_weights"] == {"quality": 2.0, "memory": 1.0, "energy": 0.5, "latency": 0.0}
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--bits", "2,x"], "--bits '2,x': expected comma-separated integers"),
    (["--bits", ","], "--bits is empty"),
    (["--bits", "1,4"], "bit-width 1 is taken by none of the methods ['rtn', 'gptq', 'codebook']; add binary"),
    (["--bits", "7,4"], "unsupported bit-widths [7]"),
    (["--max-relative-increase", "0.03"], "higher-is-better: limit its drop with max_drop"),
    (["--max-ppl-increase", "0.03"], "higher-is-better: limit its drop with max_drop"),
    (["--max-memory", "-1"], "--max-memory must be > 0"),
    (["--weights", "speed=1"], "unknown objective weight 'speed'"),
    (["--max-energy", "0"], "--max-energy must be > 0"),
    # not finite: refused before anything runs (a NaN limit used to disable the check and break report.json)
    (["--max-memory", "nan"], "--max-memory must be a finite number, got 'nan'"),
    (["--max-energy", "inf"], "--max-energy must be a finite number, got 'inf'"),
    (["--max-drop", "nan"], "--max-drop must be a finite number, got nan"),
    (["--weights", "latency=nan"], "objective weight latency must be a finite number"),
    # a bare number above 1 used to be read as bytes / pJ
    (["--max-memory", "2.0"], "--max-memory '2.0' is ambiguous"),
    (["--max-energy", "1500"], "--max-energy '1500' is ambiguous"),
    (["--max-memory", "3 lots"], "unknown unit 'lots'"),
    (["--methods", "rtn,awq"], "methods must be distinct names among ['rtn', 'gptq', 'codebook', 'ternary', 'binary', 'learned'], got ['rtn', 'awq']"),
    (["--methods", ","], "methods must be distinct names"),
    (["--grids", "sym,skewed"], "grids must be distinct names among ['sym', 'signed', 'asym', 'ternary'], got ['sym', 'skewed']"),
    (["--grids", "signed", "--methods", "ternary", "--bits", "2"], "grid 'signed' is taken by none of the methods ['ternary']"),
    (["--max-drop", "1", "--confidence", "1.0"], "--confidence must be a number in [0.5, 1)"),
    (["--max-drop", "1", "--confidence", "0.2"], "--confidence must be a number in [0.5, 1)"),
])
def test_bad_options_exit_2(tiny_classifier, tmp_path, capsys, argv, message):
    code = main(["search", str(tiny_classifier), "--task", "sst2", "--out", str(tmp_path / "out"), *argv])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("qslm search: error:") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [
    ("--calibration-size", "0"), ("--validation-size", "0"), ("--reported-limit", "0"), ("--max-evals", "0"),
    ("--calibration-size", "-5"), ("--max-evals", "x"), ("--seed", "-1"), ("--block-cache", "-1"),
])
@pytest.mark.parametrize("command", ["search", "demo"])
def test_counts_must_be_positive(tiny_classifier, tmp_path, capsys, command, flag, value):
    """0 used to mean "the default" (``size or default``); now it is refused, naming the flag."""
    task = ["--task", "sst2"] if command == "search" else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, str(tiny_classifier) if command == "search" else "--model=" + str(tiny_classifier),
              *task, "--out", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    expected = "an integer >= 0" if flag in ("--seed", "--block-cache") else "a positive integer"
    assert f"qslm {command}: error: argument {flag}: expected {expected}, got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_counts_and_limits_that_are_accepted():
    from qslm.cli import build_parser

    args = build_parser().parse_args(["search", "m", "--task", "wikitext2", "--out", "o", "--seed", "0",
                                      "--max-evals", "1", "--max-ppl-increase", "0.02", "--max-memory", "3MiB"])
    assert (args.seed, args.max_evals, args.max_relative_increase) == (0, 1, 0.02)  # the old name still works
    constraints = options_from_args(args)["constraints"]
    assert constraints.max_relative_increase == 0.02 and constraints.memory_limit_bytes(10 ** 9) == 3 * 2 ** 20
    assert options_from_args(args)["config"].base_spec.scale_dtype == "float16"  # the default
    args = build_parser().parse_args(["search", "m", "--task", "sst2", "--out", "o", "--scale-dtype", "float32"])
    assert options_from_args(args)["config"].base_spec == dataclasses.replace(BASE_SPEC, scale_dtype="float32")
    assert not options_from_args(args)["config"].base_spec.all_levels  # the symmetric grid unless --signed
    args = build_parser().parse_args(["search", "m", "--task", "sst2", "--out", "o", "--signed"])
    assert options_from_args(args)["config"].base_spec == dataclasses.replace(BASE_SPEC, all_levels=True)
    assert options_from_args(args)["config"].sensitivity_table == "needed"
    args = build_parser().parse_args(["search", "m", "--task", "sst2", "--out", "o", "--sensitivity-table", "full"])
    assert options_from_args(args)["config"].sensitivity_table == "full"
    assert options_from_args(args)["config"].methods == SearchConfig().methods  # the search's default
    args = build_parser().parse_args(["search", "m", "--task", "sst2", "--out", "o", "--methods", "rtn, gptq"])
    assert options_from_args(args)["config"].methods == ("rtn", "gptq")
    assert options_from_args(args)["config"].grids == ("sym", "signed", "asym", "ternary")  # the search's default
    args = build_parser().parse_args(["search", "m", "--task", "sst2", "--out", "o", "--grids", "sym,signed"])
    assert options_from_args(args)["config"].grids == ("sym", "signed")


def test_out_is_checked_before_any_work(tiny_classifier, tiny_lm, tmp_path, capsys, monkeypatch):
    import importlib

    def no_search(*args, **kwargs):
        raise AssertionError("the search ran before --out was checked")

    monkeypatch.setattr(importlib.import_module("qslm.search.run"), "run_search", no_search)
    other = shutil.copytree(tiny_lm, tmp_path / "other-model")  # another float model's folder
    weights = (other / "model.safetensors").read_bytes()
    (tmp_path / "file").write_text("mine")
    for out, overwrite, message in [
            (other, [], f"output folder {other} holds the output of 'qslm train'"),
            (tiny_classifier.parent, ["--overwrite"], "contains the input model"),
            (tmp_path / "file", ["--overwrite"], "is a file, not a folder")]:
        capsys.readouterr()
        assert main(["search", str(tiny_classifier), "--task", "sst2", "--out", str(out), *overwrite]) == 2
        assert message in capsys.readouterr().err
    assert (other / "model.safetensors").read_bytes() == weights and (tmp_path / "file").read_text() == "mine"
    capsys.readouterr()
    assert main(["search", str(tiny_classifier), "--task", "sst2", "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "file")]) == 2
    assert f"cache folder {tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the folder claimed for this run goes with it


def messages(err: str) -> list[str]:
    """What a run printed on stderr, without the progress bars drawn over themselves there."""
    return [line.rsplit("\r", 1)[-1] for line in err.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def test_too_little_room_is_refused_before_the_search(tiny_classifier, small_data_dir, cache_dir, tmp_path, capsys,
                                                     monkeypatch):
    from qslm.search.measure import Measurements
    from tests.test_diskspace import fake_free_space

    def no_measuring(*args, **kwargs):
        raise AssertionError("a plan was measured without room for the search's files")

    monkeypatch.setattr(Measurements, "metric_of", no_measuring)
    fake_free_space(monkeypatch, 100_000)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--out", str(out),
                 *small_options(small_data_dir, cache_dir)]) == 2
    [err] = messages(capsys.readouterr().err)
    # the bound: the largest plan without a memory limit, headers, plan and report
    assert err.startswith(f"qslm search: error: not enough free space in {out} for the largest model and report "
                          f"this search may write: ")
    assert err.endswith(" MB) needed, 100,000 bytes (100.0 kB) free; free some space or choose another output "
                        "folder")
    assert not out.exists()


@pytest.mark.slow
def test_a_full_disk_at_the_export_is_one_line_and_keeps_the_previous_run(tiny_classifier, small_data_dir, cache_dir,
                                                                          tmp_path, capsys, monkeypatch):
    import qslm.quant.pack
    from safetensors import SafetensorError

    from tests.commands.test_quantize_cli import folder_bytes
    from tests.test_diskspace import DiskUsage

    out = tmp_path / "out"
    argv = ["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--max-memory", "50%",
            "--out", str(out), *small_options(small_data_dir, cache_dir)]
    assert main(argv) == 0
    previous = folder_bytes(out)

    free = iter([10 ** 9, 1000])  # room enough when the search starts, too little when the chosen plan is known
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(2 * 10 ** 9, 0, next(free)))
    capsys.readouterr()
    assert main(argv) == 2
    [err] = messages(capsys.readouterr().err)
    assert err.startswith(f"qslm search: error: not enough free space in {out} for the chosen plan's model and "
                          "report: ")
    assert err.endswith("needed, 1,000 bytes (1.0 kB) free; the journal keeps every measurement: free some space "
                        "and rerun to resume")
    assert next(free, None) is None and folder_bytes(out) == previous
    monkeypatch.undo()

    # the file system fills up while the model is written (safetensors' own exception)
    def disk_full(state, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(qslm.quant.pack, "save_file", disk_full)
    assert main(argv) == 2
    [err] = messages(capsys.readouterr().err)
    assert err.startswith(f"qslm search: error: cannot write {out}/.qslm-staging-")
    assert err.endswith("/model.safetensors: No space left on device")
    assert folder_bytes(out) == previous  # byte for byte, journal included, and no staging folder left
    monkeypatch.undo()

    assert main(argv) == 0  # room again: the journal answers every plan
    assert json.loads((out / "report.json").read_text())["evaluations"]["new"] == 0


def test_a_ray_address_where_no_cluster_answers_fails_fast_before_out(tiny_classifier, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = time.monotonic()
    code = main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--ray-address", "127.0.0.1:1",
                 "--out", str(tmp_path / "out")])
    assert time.monotonic() - started < 5  # it used to retry for ever
    assert code == 2 and capsys.readouterr().err == (
        "qslm search: error: no Ray cluster answers at ray_address='127.0.0.1:1': Connection refused; check the "
        "address, or start a cluster there with 'ray start --head'\n")
    assert not (tmp_path / "out").exists()  # refused before --out was claimed


def test_an_out_folder_another_search_holds_is_refused_naming_it(tiny_classifier, tmp_path, capsys, monkeypatch):
    import importlib

    def no_search(*args, **kwargs):
        raise AssertionError("the search ran in a folder another job holds")

    monkeypatch.setattr(importlib.import_module("qslm.search.run"), "run_search", no_search)
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.jsonl").write_text("the other run's\n")
    (out / ".qslm-output.json").write_text(json.dumps({"version": 1, "kind": "search", "files": ["journal.jsonl"],
                                                       "kept": ["journal.jsonl"]}))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    # another open file description of the lock file: a second job, as far as flock is concerned
    holder = os.open(out / ".qslm-lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(holder, json.dumps({"pid": 31337, "host": "node1", "started": "2026-12-06 06:00:00",
                                     "command": f"qslm search m --out {out}"}).encode())
        assert main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--out", str(out)]) == 2
        assert capsys.readouterr().err == (
            f"qslm search: error: output folder {out} is in use by another qslm job (pid 31337 on node1, started "
            f"2026-12-06 06:00:00: qslm search m --out {out}); wait for it to end, or choose another folder\n")
        assert {name: (out / name).read_bytes() for name in before} == before
    finally:
        os.close(holder)


@pytest.mark.parametrize("command", ["search", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--max-drop", "--max-relative-increase", "--max-memory", "--strategy", "--bits", "--cache-dir",
                   "--out"):
        assert option in text
    assert "--max-ppl-increase" not in text  # the former name works but is not offered
    # the defaults the help states are the ones the search uses
    assert f"(sst2, default {DEFAULTS['sst2']['calibration']})" in text
    assert f"(wikitext2, default {DEFAULTS['wikitext2']['calibration']})" in text
    assert f"(sst2, default {DEFAULTS['sst2']['validation']})" in text
    assert f"(wikitext2, default {DEFAULTS['wikitext2']['validation']})" in text


@pytest.mark.slow
def test_demo_applies_its_default_constraints(tiny_classifier, small_data_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    capsys.readouterr()
    assert main(["demo", "--model", str(tiny_classifier), "--out", str(out),
                 *small_options(small_data_dir, cache_dir)]) == 0
    printed = capsys.readouterr().out
    assert "max accuracy drop 1.0 points and max memory 0.125 of FP32" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["constraints"] == {"max_drop": 1.0, "max_relative_increase": None, "max_memory": 0.125,
                                     "max_energy": None, "energy_limit_pj": None, "confidence": 0.5,
                                     "memory_limit_bytes": 0.125 * report["baseline"]["memory_bytes"]}
    assert report["final"]["memory_bytes"] <= 0.125 * report["baseline"]["memory_bytes"]


def test_summary_says_not_finite_for_a_null_test_figure(capsys, tmp_path):
    from types import SimpleNamespace

    from qslm.commands.search import print_summary

    costs = {"memory_bytes": 1e6, "energy_pj": 1e6, "power_mw": 1.0}
    report = {"higher_is_better": True, "metric_name": "accuracy", "reported_limit": None,
              "baseline": {**costs, "metric_test": None},
              "final": {**costs, "split": "test", "metric": None, "quality_loss": None, "quality_within_limit": None},
              "headline": ["Status: **feasible** on the validation data"], "candidates": [{}],
              "seconds": {"total": 1.0}}
    print_summary(SimpleNamespace(report=report, out=tmp_path))
    out = capsys.readouterr()
    table = [line for line in out.out.splitlines() if line.startswith("accuracy")]
    assert table and table[0].count("not finite") == 3 and "nan" not in (out.out + out.err).lower()
    report["baseline"]["metric_test"] = 82.22
    report["final"].update(metric=82.22, quality_loss=0.0, quality_within_limit=True)
    print_summary(SimpleNamespace(report=report, out=tmp_path))
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("accuracy")]
    assert table[0].split()[-1] == "+0"  # no loss reads +0, not -0
