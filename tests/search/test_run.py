"""``run_search`` end to end on the tiny fixtures: files written, model loadable, memory exact, runs
deterministic, resume and interruption replay the journal, infeasible constraints and wrong options
are clear. Each search configuration runs once per module and its result is shared by the tests."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from safetensors import safe_open

import qslm
from qslm.analysis.sensitivity import SensitivityCache, model_hash
from qslm.cli import main
from qslm.digest_lines import dropped_note
from qslm.errors import QslmError
from qslm.quant.plan import QuantPlan
from qslm.search.config import BASE_SPEC
from qslm.search.journal import Journal, assignment_key
from qslm.search.objective import Constraints
from tests.search.interrupting import interrupt_at

SMALL = {"calibration_size": 32, "validation_size": 64, "reported_limit": 64, "progress": False, "device": "cpu"}
CONSTRAINTS = Constraints(max_drop=1.0, max_memory=0.5, confidence=0.5)  # 64 examples bound little
# The tiny classifier is untrained, so which plans pass on its 64 examples is luck; its searches keep the
# symmetric grid alone, so these tests of the run's files, resume and errors do not hang on that luck.
SYM = {"grids": ("sym",)}
MODEL_FILES = ["config.json", "model.safetensors", "quant_plan.json", "tokenizer.json"]
REPORT_FILES = ["report.json", "report.md", "pareto.png", "bitwidths.png", "sensitivity.png", "journal.jsonl"]


def shared_cache(tmp_path_factory):
    """One sensitivity cache for the session's searches (keyed by model and calibration, so safe to share)."""
    return tmp_path_factory.getbasetemp() / "sensitivity-cache"


def search(model, out, data_dir, cache_dir, task="sst2", constraints=CONSTRAINTS, **options):
    if "config" not in options:
        options = {**SYM, **options}
    return qslm.search(model, task=task, out=out, constraints=constraints, data_dir=data_dir, cache_dir=cache_dir,
                       **{**SMALL, **options})


def tensors(path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


@pytest.fixture(scope="module")
def base(tiny_classifier, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "base"
    return search(tiny_classifier, out, small_data_dir, shared_cache(tmp_path_factory),
                  config=qslm.SearchConfig(sensitivity_table="full", **SYM))


@pytest.fixture(scope="module")
def twin(tiny_classifier, small_data_dir, tmp_path_factory):
    """The same search in another folder, with sensitivities recomputed in a cache of its own, and
    measured only when the search asks for them (the default)."""
    root = tmp_path_factory.mktemp("twin")
    return search(tiny_classifier, root / "out", small_data_dir, root / "cache")


@pytest.mark.slow
def test_output_folder(base, tiny_classifier):
    assert base.report["status"] == "feasible"
    # the model as it was named, and its weights' identity
    assert base.report["model"] == str(tiny_classifier)
    assert base.report["model_hash"] == model_hash(qslm.load(tiny_classifier).model)
    for name in MODEL_FILES + REPORT_FILES:
        assert (base.out / name).is_file(), name
    assert not (base.out / ".model.tmp").exists()
    report = json.loads((base.out / "report.json").read_text())
    assert report["final"] == base.report["final"]
    assert report["chosen"]["assignment"] == base.report["chosen"]["assignment"]
    assert "| Memory (MB) |" in (base.out / "report.md").read_text()
    assert set(base.plan.units) >= set(report["chosen"]["assignment"])


def test_chosen_plan_meets_constraints_on_validation(base):
    chosen = base.report["chosen"]
    assert chosen["feasible"] and chosen["quality_loss"] <= 1.0 and chosen["memory_fraction"] <= 0.5
    assert base.report["evaluations"]["total"] == len(base.report["candidates"]) >= 1
    assert {c["tier"] for c in base.report["candidates"]} <= {"global", "block", "module"}


def test_written_model_loads_and_evaluates(base, small_data_dir, capsys):
    loaded = qslm.load(base.out)
    assert loaded.model is not None
    capsys.readouterr()
    assert main(["eval", str(base.out), "--task", "sst2", "--limit", "16", "--data-dir", str(small_data_dir),
                 "--device", "cpu", "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0


def test_reported_memory_is_the_exported_tensor_bytes(base):
    stored = sum(t.nbytes for t in tensors(base.out / "model.safetensors").values())
    final = base.report["final"]
    assert final["memory_bytes"] == stored == final["memory_bytes_predicted"]
    assert final["memory_bytes"] == base.report["chosen"]["memory_bytes"]
    assert final["memory_bytes"] < base.report["baseline"]["memory_bytes"] * 0.5


@pytest.mark.slow
def test_deterministic(base, twin):
    """The same plan and bytes whether every sensitivity is measured first or each when asked for; the
    report's table then holds what was asked for, equal to the full table's entries."""
    for name in ("quant_plan.json", "model.safetensors"):
        assert (base.out / name).read_bytes() == (twin.out / name).read_bytes(), name
    assert twin.report["config"]["sensitivity_table"] == "needed"
    asked = twin.report["sensitivity"]  # here empty: uniform 2 bits already meets the constraints
    assert asked == {name: {bits: base.report["sensitivity"][name][bits] for bits in row} for name, row in asked.items()}
    strip = lambda report: [(c["tier"], c["metric"], c["assignment"]) for c in report["candidates"]]  # noqa: E731
    assert strip(base.report) == strip(twin.report)


@pytest.mark.slow
def test_rerun_resumes_without_new_evaluations(base, tiny_classifier, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "out"
    shutil.copytree(base.out, out)
    for name in MODEL_FILES:
        (out / name).unlink()  # as if the first run had died after its search
    again = search(tiny_classifier, out, small_data_dir, shared_cache(tmp_path_factory))
    assert again.report["evaluations"] == {"total": base.report["evaluations"]["total"], "new": 0}
    assert all(c["resumed"] for c in again.report["candidates"])
    assert (out / "quant_plan.json").read_bytes() == (base.out / "quant_plan.json").read_bytes()
    assert len((out / "journal.jsonl").read_text().splitlines()) == 1 + base.report["evaluations"]["total"]


@pytest.mark.slow
def test_rerun_measures_edited_journal_and_cache_lines_again(base, tiny_classifier, small_data_dir, tmp_path_factory,
                                                             capsys):
    """Every journal metric set to 99.0 and two cached sensitivities swapped: the rerun trusts none of them,
    measures them again, says so once, and finds the untampered run's plan with its metrics."""
    root = tmp_path_factory.mktemp("tampered")
    out, cache = root / "out", root / "cache"
    shutil.copytree(base.out, out)
    shutil.copytree(shared_cache(tmp_path_factory), cache)
    journal = out / "journal.jsonl"
    header, *entries = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps(line) + "\n" for line in [header] + [{**e, "metric": 99.0} for e in entries]))
    cache_path = next(cache.glob(f"sensitivity-{base.report['model_hash'][:16]}.jsonl"))
    cached = [json.loads(line) for line in cache_path.read_text().splitlines()]
    first, second = next((i, j) for i in range(len(cached)) for j in range(i + 1, len(cached))
                         if cached[i]["value"] != cached[j]["value"])
    cached[first]["value"], cached[second]["value"] = cached[second]["value"], cached[first]["value"]
    cache_path.write_text("".join(json.dumps(line) + "\n" for line in cached))
    capsys.readouterr()

    again = search(tiny_classifier, out, small_data_dir, cache, config=qslm.SearchConfig(sensitivity_table="full", **SYM))
    total = base.report["evaluations"]["total"]
    assert again.report["evaluations"] == {"total": total, "new": total}
    assert (out / "quant_plan.json").read_bytes() == (base.out / "quant_plan.json").read_bytes()
    assert again.report["chosen"]["assignment"] == base.report["chosen"]["assignment"]
    strip = lambda report: [(c["tier"], c["metric"], c["assignment"]) for c in report["candidates"]]  # noqa: E731
    assert strip(again.report) == strip(base.report) and again.report["sensitivity"] == base.report["sensitivity"]
    assert again.report["final"]["metric"] == base.report["final"]["metric"]
    notes = [dropped_note(journal, "journal", list(range(2, total + 2)), "those plans are measured again"),
             f"sensitivity cache {cache_path}: 2 damaged lines dropped (lines {first + 1}, {second + 1}: edited, "
             "corrupt, or written before qslm gave each line a digest); those sensitivities are measured again"]
    assert again.report["dropped_lines"] == notes and base.report["dropped_lines"] == []
    assert capsys.readouterr().err.splitlines() == [f"note: {note}" for note in notes]  # said once, on stderr
    # the measurements made again were appended: a next rerun replays them and has nothing to say
    assert len(journal.read_text().splitlines()) == 1 + 2 * total
    reread = Journal(journal, header["header"])
    assert reread.dropped == 0 and [reread.get(e["key"])["metric"] for e in entries] == [
        c["metric"] for c in base.report["candidates"]]
    assert SensitivityCache(cache_path).dropped == 0


@pytest.mark.slow
def test_interrupted_search_reuses_its_journal(tiny_classifier, small_data_dir, tmp_path_factory, monkeypatch):
    # rtn alone, so that a key is the units' widths (with several methods it names them too, and the check of
    # equal-bytes methods measures plans of its own: tests/search/test_engine.py resumes such a search)
    out = tmp_path_factory.mktemp("interrupt") / "out"
    cache = shared_cache(tmp_path_factory)
    calls = interrupt_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        search(tiny_classifier, out, small_data_dir, cache, strategy="uniform", methods=("rtn",))
    assert len(calls) == 4 and not (out / "model.safetensors").exists()
    journaled = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()[1:]]
    assert [e["key"] for e in journaled] == [assignment_key({u: s.bits for u, s in p.units.items()})
                                              for p in calls[:3]]
    monkeypatch.undo()
    resumed = search(tiny_classifier, out, small_data_dir, cache, strategy="uniform", methods=("rtn",))
    report = resumed.report
    assert report["status"] == "feasible"
    assert report["evaluations"] == {"total": 6, "new": 3}
    assert [c["resumed"] for c in report["candidates"]] == [True] * 3 + [False] * 3
    assert [c["metric"] for c in report["candidates"][:3]] == [e["metric"] for e in journaled]


@pytest.mark.slow
def test_infeasible_constraints(tiny_classifier, small_data_dir, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("infeasible") / "out"
    capsys.readouterr()
    code = main(["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--max-memory", "0.01",
                 "--out", str(out), "--data-dir", str(small_data_dir), "--calibration-size", "32",
                 "--validation-size", "64", "--cache-dir", str(shared_cache(tmp_path_factory)), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 3
    assert "no plan met the constraints" in printed and str(out / "report.md") in printed
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "infeasible" and report["final"] is None and report["chosen"] is None
    assert report["closest"] and all(c["violations"] for c in report["closest"])
    assert any(v.startswith("memory") for v in report["closest"][0]["violations"])
    assert "Closest plans" in (out / "report.md").read_text()
    for name in MODEL_FILES:
        assert not (out / name).exists(), name


def test_wrong_task_for_the_model(tiny_classifier, tiny_lm, small_data_dir, tmp_path):
    with pytest.raises(QslmError, match="classifier"):
        search(tiny_classifier, tmp_path / "a", small_data_dir, tmp_path, task="wikitext2", constraints=None)
    with pytest.raises(QslmError, match="language model"):
        search(tiny_lm, tmp_path / "b", small_data_dir, tmp_path, constraints=None)


@pytest.mark.parametrize("model, task, constraints, message", [
    ("tiny_classifier", "sst2", Constraints(max_relative_increase=0.03),
     "higher-is-better: limit its drop with max_drop"),
    ("tiny_lm", "wikitext2", Constraints(max_drop=1.0), "lower-is-better: limit it with max_relative_increase"),
    ("tiny_classifier", "wikitext2", None, "is a classifier; it cannot be searched on task 'wikitext2'"),
    ("tiny_classifier", "mnli", None, "unknown task"),
])
def test_constraint_for_the_other_task(model, small_data_dir, tmp_path, task, constraints, message, request):
    with pytest.raises(QslmError, match=message):
        search(request.getfixturevalue(model), tmp_path / "out", small_data_dir, tmp_path, task=task,
               constraints=constraints)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_bad_options(tiny_classifier, small_data_dir, tmp_path):
    with pytest.raises(QslmError, match="unsupported bit-widths"):
        search(tiny_classifier, tmp_path / "out", small_data_dir, tmp_path, bit_choices=(7, 4))
    with pytest.raises(QslmError, match="unknown strategy"):
        search(tiny_classifier, tmp_path / "out", small_data_dir, tmp_path, strategy="anneal")
    with pytest.raises(QslmError, match="evaluation budget must be a positive integer, got 0"):
        search(tiny_classifier, tmp_path / "out", small_data_dir, tmp_path, strategy="random", max_evaluations=0)
    with pytest.raises(QslmError, match="unknown sensitivity method 'fast'"):
        search(tiny_classifier, tmp_path / "out", small_data_dir, tmp_path, sensitivity_method="fast")


@pytest.mark.parametrize("option, message", [
    ({"calibration_size": 0}, "calibration size must be positive, got 0"),  # 0 used to mean the default
    ({"validation_size": 0}, "validation size must be positive, got 0"),
    ({"reported_limit": 0}, "test limit must be positive, got 0"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"block_cache_mb": -1}, "block_cache_mb must be a whole number of MiB >= 0"),
    ({"sensitivity_table": "some"}, "unknown sensitivity_table 'some'"),
])
def test_zero_is_not_the_default(tiny_classifier, small_data_dir, tmp_path, option, message):
    with pytest.raises(QslmError, match=message):
        search(tiny_classifier, tmp_path / "out", small_data_dir, tmp_path, **option)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_local_sensitivity_search(base, tiny_classifier, small_data_dir, tmp_path_factory):
    """Block units are measured block-locally, units outside blocks exactly; the search still meets
    its constraints, and the estimates are cached apart from the exact ones."""
    root = tmp_path_factory.mktemp("local")
    result = search(tiny_classifier, root / "out", small_data_dir, shared_cache(tmp_path_factory),
                    config=qslm.SearchConfig(sensitivity="local", sensitivity_table="full", **SYM))
    report = result.report
    assert report["config"]["sensitivity_method"] == "local" and base.report["config"]["sensitivity_method"] == "exact"
    methods = {unit: {row["method"] for row in by_bits.values()} for unit, by_bits in report["sensitivity"].items()}
    assert methods["blocks.0"] == {"local"} and methods["blocks.1.att.key"] == {"local"}
    assert methods["emb"] == {"exact"} and methods["classifier"] == {"exact"}
    assert report["sensitivity"]["emb"] == base.report["sensitivity"]["emb"]  # same exact measurement
    assert report["sensitivity"]["blocks.0"] != base.report["sensitivity"]["blocks.0"]
    assert report["status"] == "feasible" and report["chosen"]["memory_fraction"] <= 0.5


@pytest.mark.slow
def test_signed_grid_search(tiny_classifier, small_data_dir, tmp_path_factory):
    """A base spec with the signed grid reaches every rtn and gptq unit of the plan, which the packed model
    stores and a fresh load computes with; it is another search, so it has a journal of its own."""
    root = tmp_path_factory.mktemp("signed")
    base_spec = dataclasses.replace(BASE_SPEC, all_levels=True)
    result = search(tiny_classifier, root / "out", small_data_dir, shared_cache(tmp_path_factory),
                    config=qslm.SearchConfig(base_spec=base_spec, bit_choices=(2, 4, 8)))
    plan = QuantPlan.load(root / "out" / "quant_plan.json")
    specs = [spec for spec in plan.units.values() if spec is not None]
    assert specs and all(spec.all_levels == (spec.method != "codebook") for spec in specs)
    assert result.report["config"]["base_spec"]["all_levels"] is True
    assert qslm.load(root / "out").model is not None


def test_quantized_model_is_refused(base, small_data_dir, tmp_path):
    with pytest.raises(QslmError, match="already quantized"):
        search(base.out, tmp_path / "out", small_data_dir, tmp_path)


@pytest.mark.slow
def test_language_model_search(tiny_lm, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "out"
    result = search(tiny_lm, out, small_data_dir, shared_cache(tmp_path_factory), task="wikitext2",
                    constraints=Constraints(max_relative_increase=0.5, max_memory=0.5), bit_choices=(4, 8),
                    calibration_size=64, validation_size=150, reported_limit=20)
    report = result.report
    assert report["status"] == "feasible" and not report["higher_is_better"]
    assert report["final"]["split"] == "test" and report["final"]["metric"] > 1
    assert report["chosen"]["quality_loss"] <= 0.5 and report["chosen"]["memory_fraction"] <= 0.5
    assert report["calibration_size"] == 2 and report["validation_size"] == 150  # windows of 32 tokens; words
    assert qslm.load(out).model is not None


def test_output_folder_must_not_be_the_model(tiny_classifier, small_data_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model)
    weights = (model / "model.safetensors").read_bytes()
    with pytest.raises(QslmError, match="is the input model"):
        search(model, model, small_data_dir, tmp_path / "cache")
    assert (model / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_classifier.iterdir())


def test_conflicting_settings_are_refused_before_any_work(tmp_path):
    """``qslm.search(..., config=SearchConfig(...), strategy="random")``: two places for one setting."""
    from qslm.tasks.data_config import DataConfig

    with pytest.raises(QslmError, match="config= and strategy= both set search settings"):
        qslm.search("spikegpt-sst2", "sst2", out=tmp_path / "out", config=qslm.SearchConfig(), strategy="random")
    with pytest.raises(QslmError, match="data= and validation_size= both set the task's data"):
        qslm.search("spikegpt-sst2", "sst2", out=tmp_path / "out", data=DataConfig(), validation_size=10)
    assert not (tmp_path / "out").exists()
