"""``qslm`` itself: SIGTERM ends any command as Ctrl-C does (the same cleanup), with one line and exit 143;
a handler a command sets for itself (training's) takes precedence while it is set."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qslm.commands.quantize
from qslm.cli import SIGTERM_EXIT, Terminated, main
from qslm.outputs import OutputFolder
from tests.commands.test_search_cli import messages, small_options

REPO = Path(__file__).resolve().parent.parent


def terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # the handler interrupts this at once
    raise AssertionError("SIGTERM did not interrupt the command")


def test_sigterm_is_one_line_and_exit_143(tiny_lm, tmp_path, capsys, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(qslm.commands.quantize, "run", lambda args: terminate_self())
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(tmp_path / "q")]) == SIGTERM_EXIT == 143
    assert capsys.readouterr().err == "qslm quantize: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before  # put back when the command ends


def test_sigterm_runs_the_cleanup_ctrl_c_runs(tiny_lm, tmp_path, capsys, monkeypatch):
    out = tmp_path / "q"

    def claim_then_terminate(args):
        with OutputFolder.claim(out, "quantize") as folder:
            folder.staging()
            terminate_self()

    monkeypatch.setattr(qslm.commands.quantize, "run", claim_then_terminate)
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(out)]) == 143
    assert not out.exists()  # the claim of a job that wrote nothing is undone, staging folder and all


def test_a_commands_own_handler_takes_precedence_while_set(tiny_lm, tmp_path, capsys, monkeypatch):
    """As training does: its handler checkpoints on SIGTERM and puts the previous one back after."""
    seen = []

    def own_handler_then_terminate(args):
        def own(signum, frame):
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGTERM, own)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        except KeyboardInterrupt as interrupt:
            seen.append(type(interrupt))
        finally:
            signal.signal(signal.SIGTERM, previous)
        terminate_self()  # the command's handler is gone: the CLI's is back

    monkeypatch.setattr(qslm.commands.quantize, "run", own_handler_then_terminate)
    capsys.readouterr()
    assert main(["quantize", str(tiny_lm), "--bits", "4", "--out", str(tmp_path / "q")]) == 143
    assert seen == [KeyboardInterrupt] and capsys.readouterr().err == "qslm quantize: terminated\n"


def test_terminated_is_caught_where_ctrl_c_is():
    assert issubclass(Terminated, KeyboardInterrupt)


@pytest.mark.slow
def test_a_terminated_search_keeps_its_journal_and_resumes(tiny_classifier, small_data_dir, tmp_path, capsys):
    """A real process: a scheduler's SIGTERM in the middle of a search."""
    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    argv = ["search", str(tiny_classifier), "--task", "sst2", "--max-drop", "1", "--max-memory", "50%",
            "--out", str(out), *small_options(small_data_dir, tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "qslm.cli", *argv], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # bytes: progress bars keep their \r
    deadline = time.monotonic() + 120
    # the header and at least one measurement journaled, the search not over
    while process.poll() is None and time.monotonic() < deadline and (
            not journal.is_file() or journal.read_text().count("\n") < 2):
        time.sleep(0.05)
    assert process.poll() is None, "the search ended before it could be terminated"
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=60)[1].decode()
    assert process.returncode == 143
    assert messages(err) == ["qslm search: terminated"]  # one line beside the progress bars, no traceback
    lines = journal.read_text().splitlines()
    assert "header" in json.loads(lines[0]) and len(lines) >= 2
    assert not (out / "model.safetensors").exists() and not list(out.glob(".qslm-staging-*"))

    capsys.readouterr()
    assert main(argv) == 0  # resumes
    assert journal.read_text().splitlines()[:len(lines)] == lines  # appended to, never rewritten
    evaluations = json.loads((out / "report.json").read_text())["evaluations"]
    assert evaluations["new"] < evaluations["total"]


@pytest.mark.parametrize("argv", [["--help"], ["quantize", "--help"]])
def test_the_handler_is_put_back_after_argparse_exits(argv, capsys):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        main(argv)
    assert signal.getsignal(signal.SIGTERM) is before
