"""Output folders: what a claim accepts and refuses, what a commit installs, removes and keeps, and the
order that keeps a model beside its own report even when a commit is cut short."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from qslm import outputs
from qslm.errors import QslmError
from qslm.outputs import LOCK_FILE, MANIFEST_FILE, STAGING_PREFIX, OutputFolder, check_writable_folder, read_manifest


def stage(folder: OutputFolder, **contents: str) -> dict:
    staging = folder.staging()
    for name, text in contents.items():
        (staging / name.replace("_", ".")).write_text(text)
    return {name.replace("_", "."): staging / name.replace("_", ".") for name in contents}


def run_once(path, tag: str, kind: str = "search", plots: tuple[str, ...] = ("plot_png",)) -> OutputFolder:
    """One run's output: a model and a report (and plots) that name the run."""
    with OutputFolder.claim(path, kind) as folder:
        staging = stage(folder, model_bin=tag, report_json=tag, **{p: tag for p in plots})
        folder.commit({"model.bin": staging.pop("model.bin")}, last=staging)
    return folder


def listing(path) -> list[str]:
    return sorted(os.listdir(path))


# ---- claim: accepted folders

def test_a_new_folder_is_created_with_a_manifest(tmp_path):
    folder = OutputFolder.claim(tmp_path / "a" / "b", "quantize")
    assert folder.path.is_dir() and listing(folder.path) == [LOCK_FILE, MANIFEST_FILE]  # locked while held
    raw = json.loads((folder.path / MANIFEST_FILE).read_text())
    assert raw == {"version": 1, "kind": "quantize", "files": [], "kept": []}
    folder.release()
    assert listing(folder.path) == [MANIFEST_FILE]


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
    folder.release()
    assert (tmp_path / "thesis.tex").read_text() == "mine"
    assert (tmp_path / "model.bin").read_text() == "new"
    # a later run that writes fewer files still leaves the user's file alone
    with OutputFolder.claim(tmp_path, "search") as folder:
        folder.commit(stage(folder, report_json="infeasible"))
    assert listing(tmp_path) == [MANIFEST_FILE, "report.json", "thesis.tex"]


def test_overwrite_of_another_kind_removes_that_kinds_stale_files_only(tmp_path):
    with OutputFolder.claim(tmp_path, "train") as folder:
        folder.commit(stage(folder, config_json="t", training_json="t"))
    (tmp_path / "notes.txt").write_text("mine")
    with OutputFolder.claim(tmp_path, "quantize", overwrite=True) as folder:
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
        with OutputFolder.claim(tmp_path, "quantize") as folder:
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
    del folder  # as a killed job: the lock is dropped, its file stays
    assert LOCK_FILE in listing(tmp_path)
    with OutputFolder.claim(tmp_path, "quantize"):
        assert listing(tmp_path) == [LOCK_FILE, MANIFEST_FILE]
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


# ---- one job at a time

HOLD = """
import sys
from qslm.outputs import OutputFolder
folder = OutputFolder.claim(sys.argv[1], "search")
print("holding", flush=True)
sys.stdin.read()  # until the test closes it (or kills this process)
folder.release()
"""


def test_a_folder_another_process_holds_is_refused_naming_it(tmp_path):
    out = tmp_path / "out"
    run_once(out, "one")
    before = {name: (out / name).read_bytes() for name in listing(out)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "--out", str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        for kind in ("search", "quantize"):
            with pytest.raises(QslmError) as refused:
                OutputFolder.claim(out, kind, overwrite=True)
            message = str(refused.value)
            assert f"output folder {out} is in use by another qslm job (pid {holder.pid} on " \
                   f"{socket.gethostname()}, started " in message and f"-c {out} --out {out})" in message
            assert "\n" not in message and message.endswith("wait for it to end, or choose another folder")
        # the holder's files are untouched (the manifest is read only under the lock)
        assert {name: (out / name).read_bytes() for name in before} == before
        holder.kill()  # killed: the kernel drops its lock, its lock file stays behind
        holder.wait()
        assert listing(out) == sorted([LOCK_FILE, *before])
        run_once(out, "two")  # the stale lock file is neither a user's file nor in the way
        assert listing(out) == sorted(before) and (out / "model.bin").read_text() == "two"
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_held_through_another_open_file_in_this_process_refuses_a_claim(tmp_path):
    (tmp_path / "out").mkdir()
    fd = os.open(tmp_path / "out" / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": 4242, "host": "gpu7", "started": "2026-12-06 06:00:00",
                                 "command": "qslm search m\n--out out"}).encode())
        with pytest.raises(QslmError, match=r"in use by another qslm job \(pid 4242 on gpu7, started "
                                             r"2026-12-06 06:00:00: qslm search m --out out\)"):
            OutputFolder.claim(tmp_path / "out", "search")
        assert listing(tmp_path / "out") == [LOCK_FILE]  # no manifest written: nothing of ours was touched
        os.ftruncate(fd, 0)  # a holder that has not written who it is yet
        with pytest.raises(QslmError, match=r"in use by another qslm job \(which has not recorded its pid yet\)"):
            OutputFolder.claim(tmp_path / "out", "quantize")
    finally:
        os.close(fd)
    with OutputFolder.claim(tmp_path / "out", "search"):
        pass
    assert listing(tmp_path / "out") == [MANIFEST_FILE]


def test_nested_claims_in_one_thread_share_the_lock_and_other_threads_are_refused(tmp_path):
    out = tmp_path / "out"
    refused = []

    def claim_elsewhere():
        try:
            OutputFolder.claim(out, "search")
        except QslmError as err:
            refused.append(str(err))

    with OutputFolder.claim(out, "search") as outer:  # the command line claims --out ...
        with OutputFolder.claim(out, "search") as inner:  # ... and the library it calls claims it again
            inner.keep("journal.jsonl")
        assert outer._lock is not None and (out / LOCK_FILE).exists()  # still held by the outer claim
        thread = threading.Thread(target=claim_elsewhere)
        thread.start()
        thread.join()
        assert len(refused) == 1 and f"pid {os.getpid()}" in refused[0]
    assert listing(out) == [MANIFEST_FILE]  # released at the end of the job
    with OutputFolder.claim(out, "search"):  # and free to take
        pass


def test_a_refused_or_failed_job_leaves_no_lock_file(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(QslmError, match="already holds files qslm did not write"):
        OutputFolder.claim(tmp_path / "mine", "search")
    assert listing(tmp_path / "mine") == ["thesis.tex"]
    with pytest.raises(KeyboardInterrupt):
        with OutputFolder.claim(tmp_path / "new", "search"):
            raise KeyboardInterrupt  # Ctrl-C
    assert listing(tmp_path) == ["mine"]


def test_the_lock_file_is_never_a_runs_file_nor_followed_as_a_link(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST_FILE).write_text(json.dumps({"version": 1, "kind": "search",
                                                             "files": [LOCK_FILE], "kept": []}))
    with pytest.raises(QslmError, match="is not a qslm output manifest"):
        OutputFolder.claim(tmp_path / "out", "search")
    (tmp_path / "precious").write_text("mine")
    (tmp_path / "linked").mkdir()
    os.symlink(tmp_path / "precious", tmp_path / "linked" / LOCK_FILE)
    with pytest.raises(QslmError, match="linked is not writable"):
        OutputFolder.claim(tmp_path / "linked", "search", overwrite=True)
    assert (tmp_path / "precious").read_text() == "mine"
