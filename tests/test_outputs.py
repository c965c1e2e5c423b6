"""Output folders: what a claim accepts and refuses, what a commit installs, removes and keeps, and the
order that keeps a model beside its own report even when a commit is cut short."""
from __future__ import annotations

import json
import os
import stat

import pytest

from qslm import outputs
from qslm.errors import QslmError
from qslm.outputs import MANIFEST_FILE, STAGING_PREFIX, OutputFolder, check_writable_folder, read_manifest


def stage(folder: OutputFolder, **contents: str) -> dict:
    staging = folder.staging()
    for name, text in contents.items():
        (staging / name.replace("_", ".")).write_text(text)
    return {name.replace("_", "."): staging / name.replace("_", ".") for name in contents}


def run_once(path, tag: str, kind: str = "search", plots: tuple[str, ...] = ("plot_png",)) -> OutputFolder:
    """One run's output: a model and a report (and plots) that name the run."""
    folder = OutputFolder.claim(path, kind)
    staging = stage(folder, model_bin=tag, report_json=tag, **{p: tag for p in plots})
    folder.commit({"model.bin": staging.pop("model.bin")}, last=staging)
    return folder


def listing(path) -> list[str]:
    return sorted(os.listdir(path))


# ---- claim: accepted folders

def test_a_new_folder_is_created_with_a_manifest(tmp_path):
    folder = OutputFolder.claim(tmp_path / "a" / "b", "quantize")
    assert folder.path.is_dir() and listing(folder.path) == [MANIFEST_FILE]
    raw = json.loads((folder.path / MANIFEST_FILE).read_text())
    assert raw == {"version": 1, "kind": "quantize", "files": [], "kept": []}


def test_an_empty_folder_and_a_same_kind_output_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    OutputFolder.claim(tmp_path / "empty", "train")
    run_once(tmp_path / "out", "one")
    folder = OutputFolder.claim(tmp_path / "out", "search")
    assert folder.manifest.files == ["model.bin", "plot.png", "report.json"]


# ---- claim: refused folders

def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(QslmError, match=r"already holds files qslm did not write \(thesis.tex\).*--overwrite"):
        OutputFolder.claim(tmp_path, "quantize")
    assert listing(tmp_path) == ["thesis.tex"]  # not even a manifest


def test_another_kinds_output_is_refused(tmp_path):
    run_once(tmp_path / "out", "one", kind="train")
    with pytest.raises(QslmError, match=r"holds the output of 'qslm train'.*not of 'qslm quantize'.*--overwrite"):
        OutputFolder.claim(tmp_path / "out", "quantize")


def test_a_file_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "notes").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(QslmError, match=r"notes is a file, not a folder"):
            OutputFolder.claim(tmp_path / "notes", "quantize", overwrite=overwrite)
    with pytest.raises(QslmError, match=r"cannot create output folder .*notes/sub: .*notes is a file"):
        OutputFolder.claim(tmp_path / "notes" / "sub", "quantize")
    assert (tmp_path / "notes").read_text() == "mine"


@pytest.mark.parametrize("out", [".", ".."])
def test_the_input_model_or_a_folder_above_it_is_refused_even_with_overwrite(tmp_path, out):
    model = tmp_path / "projects" / "mymodel"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_text("weights")
    relation = "is" if out == "." else "contains"
    with pytest.raises(QslmError, match=f"{relation} the input model"):
        OutputFolder.claim(model / out, "quantize", overwrite=True, protect=[model])
    assert listing(model) == ["model.safetensors"] and listing(model.parent) == ["mymodel"]


def test_a_broken_manifest_is_named_and_refused(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text('{"kind": "quantize", "files": ["../../etc/passwd"], "version": 1}')
    with pytest.raises(QslmError, match=f"{MANIFEST_FILE} is not a qslm output manifest.*--overwrite"):
        OutputFolder.claim(tmp_path, "quantize")
    folder = OutputFolder.claim(tmp_path, "quantize", overwrite=True)
    assert folder.manifest.files == []  # nothing a broken manifest names is ever removed


def test_a_manifest_with_a_key_twice_is_refused(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text('{"version": 1, "kind": "quantize", "files": [], "files": ["x"]}')
    with pytest.raises(QslmError, match=f"{MANIFEST_FILE}: key 'files' appears more than once"):
        OutputFolder.claim(tmp_path, "quantize")


def test_a_read_only_place_is_refused_up_front():
    # /sys refuses new folders even to root, where permission bits would not.
    with pytest.raises(QslmError, match="cannot create output folder /sys/qslm-out"):
        OutputFolder.claim("/sys/qslm-out", "quantize")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_up_front(tmp_path):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(QslmError, match="ro is not writable"):
            OutputFolder.claim(tmp_path / "ro", "quantize")
    finally:
        os.chmod(tmp_path / "ro", stat.S_IRWXU)


def test_cache_folder_checks(tmp_path):
    assert check_writable_folder(tmp_path / "cache" / "deep", "cache folder").is_dir()
    assert listing(tmp_path / "cache" / "deep") == []  # the probe leaves nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(QslmError, match="cache folder .*file is a file, not a folder"):
        check_writable_folder(tmp_path / "file", "cache folder")
    with pytest.raises(QslmError, match="cache folder /sys/qslm-cache"):
        check_writable_folder("/sys/qslm-cache", "cache folder")


# ---- overwrite

def test_overwrite_replaces_only_what_qslm_writes_and_deletes_nothing_else(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    (tmp_path / "model.bin").write_text("old user file of the same name")
    folder = OutputFolder.claim(tmp_path, "search", overwrite=True)
    staging = stage(folder, model_bin="new", report_json="new")
    folder.commit({"model.bin": staging["model.bin"]}, last={"report.json": staging["report.json"]})
    assert (tmp_path / "thesis.tex").read_text() == "mine"
    assert (tmp_path / "model.bin").read_text() == "new"
    # a later run that writes fewer files still leaves the user's file alone
    folder = OutputFolder.claim(tmp_path, "search")
    folder.commit(stage(folder, report_json="infeasible"))
    assert listing(tmp_path) == [MANIFEST_FILE, "report.json", "thesis.tex"]


def test_overwrite_of_another_kind_removes_that_kinds_stale_files_only(tmp_path):
    folder = OutputFolder.claim(tmp_path, "train")
    folder.commit(stage(folder, config_json="t", training_json="t"))
    (tmp_path / "notes.txt").write_text("mine")
    folder = OutputFolder.claim(tmp_path, "quantize", overwrite=True)
    folder.commit(stage(folder, config_json="q"))
    assert listing(tmp_path) == [MANIFEST_FILE, "config.json", "notes.txt"]
    assert read_manifest(tmp_path).kind == "quantize"


# ---- commit

def test_a_second_run_replaces_the_first_and_removes_its_stale_plot(tmp_path):
    run_once(tmp_path, "one", plots=("plot_png", "old-plot_png"))
    run_once(tmp_path, "two")
    assert listing(tmp_path) == [MANIFEST_FILE, "model.bin", "plot.png", "report.json"]
    assert {(tmp_path / n).read_text() for n in ("model.bin", "plot.png", "report.json")} == {"two"}
    assert read_manifest(tmp_path).files == ["model.bin", "plot.png", "report.json"]


def test_kept_files_survive_commits_and_count_as_qslms(tmp_path):
    folder = OutputFolder.claim(tmp_path, "search")
    folder.keep("journal.jsonl")
    (tmp_path / "journal.jsonl").write_text("entry\n")
    folder.commit(stage(folder, report_json="one"))
    folder = OutputFolder.claim(tmp_path, "search")
    folder.commit(stage(folder, report_json="two"))
    assert (tmp_path / "journal.jsonl").read_text() == "entry\n"
    assert read_manifest(tmp_path).kept == ["journal.jsonl"]
    with pytest.raises(ValueError, match="kept file"):
        folder.keep("../elsewhere")


def test_committed_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        folder = OutputFolder.claim(tmp_path, "quantize")
        staging = stage(folder, model_bin="x")
        os.chmod(staging["model.bin"], 0o600)  # as safetensors leaves its file
        folder.commit(staging)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model.bin").stat().st_mode) == 0o644
    assert listing(tmp_path) == [MANIFEST_FILE, "model.bin"]  # the staging folder is gone


def test_only_staged_files_inside_the_folder_can_be_committed(tmp_path):
    folder = OutputFolder.claim(tmp_path / "out", "quantize")
    (tmp_path / "elsewhere.bin").write_text("x")
    with pytest.raises(ValueError, match="not a file inside"):
        folder.commit({"model.bin": tmp_path / "elsewhere.bin"})
    with pytest.raises(ValueError, match="not a plain name"):
        folder.commit({"../model.bin": stage(folder, model_bin="x")["model.bin"]})


def test_a_cut_short_commit_never_leaves_a_report_beside_another_runs_model(tmp_path, monkeypatch):
    """Fail the commit at every removal and rename in turn: the folder then holds the old run's
    consistent set, or model files without any report, never a mismatched pair; the next claim and
    commit clean up."""
    steps = {"count": 0, "fail_at": None}

    def counted(real):
        def step(*args):
            steps["count"] += 1
            if steps["count"] == steps["fail_at"]:
                raise OSError(28, "No space left on device", str(args[-1]))
            real(*args)
        return step

    monkeypatch.setattr(outputs, "_remove", counted(outputs._remove))
    monkeypatch.setattr(outputs, "_install", counted(outputs._install))

    def second_run(out) -> None:
        steps["count"] = 0
        with OutputFolder.claim(out, "search") as folder:
            staging = stage(folder, model_bin="new", report_json="new", plot_png="new")
            folder.commit({"model.bin": staging.pop("model.bin")}, last=staging)

    run_once(tmp_path / "whole", "old")
    second_run(tmp_path / "whole")
    total = steps["count"]
    assert total == 5  # remove the old report and plot, install model, report, plot
    for fail_at in range(1, total + 1):
        out = tmp_path / f"cut-{fail_at}"
        run_once(out, "old")
        steps["fail_at"] = fail_at
        with pytest.raises(OSError, match="No space"):
            second_run(out)
        steps["fail_at"] = None
        model = (out / "model.bin").read_text()
        for report in ("report.json", "plot.png"):
            if (out / report).exists():
                assert (out / report).read_text() == model, (fail_at, report)
        assert not any(name.startswith(STAGING_PREFIX) for name in os.listdir(out))
        run_once(out, "next")
        assert listing(out) == [MANIFEST_FILE, "model.bin", "plot.png", "report.json"]


def test_a_crashed_runs_staging_folders_go_at_the_next_claim(tmp_path):
    folder = OutputFolder.claim(tmp_path, "quantize")
    stage(folder, model_bin="half-written")  # a kill here leaves the staging folder
    (tmp_path / f".{MANIFEST_FILE}.abc.partial").write_text("{")
    OutputFolder.claim(tmp_path, "quantize")
    assert listing(tmp_path) == [MANIFEST_FILE]


# ---- abandon

def test_a_failed_job_removes_the_folder_its_claim_created(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputFolder.claim(tmp_path / "new", "train") as folder:
            stage(folder, model_bin="x")
            raise RuntimeError("bad option found late")
    assert listing(tmp_path) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError):
        with OutputFolder.claim(tmp_path / "empty", "train"):
            raise RuntimeError("interrupted")
    assert listing(tmp_path / "empty") == []


def test_a_failed_job_keeps_the_manifest_once_it_wrote_files(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputFolder.claim(tmp_path / "out", "search") as folder:
            folder.keep("journal.jsonl")
            (tmp_path / "out" / "journal.jsonl").write_text("entry\n")
            raise RuntimeError("interrupted")
    assert listing(tmp_path / "out") == [MANIFEST_FILE, "journal.jsonl"]
    OutputFolder.claim(tmp_path / "out", "search")  # the re-run resumes there
