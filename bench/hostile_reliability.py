"""Reliability cases of the hostile-input probe (``bench/hostile_inputs.py`` runs them with the rest):
damaged journals and caches, keys given twice, unreachable clusters, too many workers, a full disk, bad
calibration inputs through the Python API, SIGTERM, non-finite test values, very long text lines,
concurrent runs into one folder, and files that are not what their name says.

Cases that need the Python API run a short script written into the case folder (``program="python"``);
the script turns a ``QslmError`` into one line on stderr and exit 2, as the command line does, so a raw
torch error still shows as a traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from hostile_inputs import (
    SMALL_SEARCH,
    Case,
    CaseRun,
    Fixtures,
    Check,
    Prepare,
    read_json_allowing_nan,
    random_bytes,
    report_is_sound,
    search,
    write,
)

CATEGORY = "6 reliability"
# A search long enough to have a journal and a sensitivity cache worth damaging: the tiered strategy
# measures per-unit sensitivity, then candidates.
TIERED = ["search", "{cls}", "--task", "sst2", "--data-dir", "{data}", "--out", "out", "--calibration-size", "8",
          "--validation-size", "16", "--reported-limit", "16", "--bits", "2,4,8"]


def case_env(folder: Path, fixtures: Fixtures) -> dict[str, str]:
    """The environment ``run_case`` gives a case's command, for commands a case runs while preparing."""
    env = {**os.environ, "HOME": str(folder / "home"), "QSLM_CACHE_DIR": str(folder / "cache"),
           "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONPATH": str(fixtures.package)}
    env.pop("QSLM_DATA_DIR", None)
    return env


def run_qslm(folder: Path, fixtures: Fixtures, args: list[str]) -> None:
    paths = fixtures.paths(folder)
    argv = [sys.executable, "-m", "qslm.cli", *[arg.format(**paths) for arg in args]]
    done = subprocess.run(argv, cwd=folder, env=case_env(folder, fixtures), capture_output=True, text=True,
                          timeout=600)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"preparing the case failed: {' '.join(argv)}\n{done.stderr[-2000:]}")


def earlier_search(then: Callable[[Path], None]) -> Prepare:
    """A finished search in ``out`` (its plan kept as ``first_plan.json``), then ``then`` damages it."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        run_qslm(folder, fixtures, TIERED)
        shutil.copy(folder / "out" / "quant_plan.json", folder / "first_plan.json")
        then(folder)
    return prepare


def journal_metrics_set_to(value: float):
    def damage(folder: Path) -> None:
        path = folder / "out" / "journal.jsonl"
        lines = path.read_text().splitlines()
        entries = [json.loads(line) for line in lines[1:]]
        for entry in entries:
            entry["metric"] = value
        path.write_text("\n".join([lines[0], *(json.dumps(e) for e in entries)]) + "\n")
    return damage


def cache_values_swapped(folder: Path) -> None:
    """The first two sensitivity-cache lines exchange their measured values (keys kept)."""
    for path in sorted((folder / "cache").rglob("*.jsonl")):
        lines = path.read_text().splitlines()
        if len(lines) >= 2:
            first, second = json.loads(lines[0]), json.loads(lines[1])
            first["value"], second["value"] = second["value"], first["value"]
            path.write_text("\n".join([json.dumps(first), json.dumps(second), *lines[2:]]) + "\n")
            return
    raise RuntimeError(f"no sensitivity cache with two lines under {folder / 'cache'}")


def same_plan_as_before(run: CaseRun) -> str | None:
    """The rerun after damage chose the plan the undamaged search chose, and reported no damaged metric."""
    before = json.loads((run.folder / "first_plan.json").read_text())
    plan = run.folder / "out" / "quant_plan.json"
    if not plan.is_file():
        return "no quant_plan.json after the rerun"
    if json.loads(plan.read_text()) != before:
        return "the rerun chose another plan than the undamaged search"
    text = (run.folder / "out" / "report.json").read_text()
    return "a damaged figure (99.0) reached report.json" if '"metric": 99.0' in text else None


def holding_the_lock(folder: Path, fixtures: Fixtures) -> None:
    """A search into ``out``, stopped (SIGSTOP) once its journal exists, so it holds the folder; the case's
    cleanup kills it."""
    paths = fixtures.paths(folder)
    argv = [sys.executable, "-m", "qslm.cli", *[arg.format(**paths) for arg in TIERED]]
    process = subprocess.Popen(argv, cwd=folder, env=case_env(folder, fixtures), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    (folder / "holder.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if (folder / "out" / "journal.jsonl").is_file():
            process.send_signal(signal.SIGSTOP)
            return
        time.sleep(0.05)
    raise RuntimeError("the first search never started measuring")


def stop_holder(folder: Path, fixtures: Fixtures) -> None:
    pid_file = folder / "holder.pid"
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def small_tmpfs(relative: str, size: str) -> Prepare:
    """A tmpfs of ``size`` mounted at ``relative`` (needs root; the case is then skipped otherwise)."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        target = folder / relative
        target.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], check=True)
    return prepare


def unmount(relative: str) -> Prepare:
    def cleanup(folder: Path, fixtures: Fixtures) -> None:
        subprocess.run(["umount", "-l", str(folder / relative)], check=False)
    return cleanup


def fifo(relative: str) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        os.mkfifo(folder / relative)
    return prepare


def long_line_file(relative: str, kilobytes: int) -> Prepare:
    """The data slice's WikiText-2 words as one line of about ``kilobytes`` KB."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        words = (fixtures.data / "wikitext-2" / "valid.txt").read_text().split()
        text, size = [], 0
        while size < kilobytes * 1000:
            for word in words:
                text.append(word)
                size += len(word) + 1
        (folder / relative).write_text(" ".join(text) + "\n")
    return prepare


def huge_embedding(shape: tuple[int, int]) -> Prepare:
    """The upstream state dict with an embedding of ``shape`` (stride 0: a few bytes on disk)."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        import torch
        state = torch.load(fixtures.upstream, weights_only=True)
        state["emb.weight"] = torch.zeros(1, 1).expand(*shape)
        torch.save(state, folder / "src.pth")
    return prepare


def checkpoint_with_data_pkl(content: bytes) -> Prepare:
    """A zip in torch.save's layout whose ``data.pkl`` is ``content``."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        with zipfile.ZipFile(folder / "src.pth", "w") as archive:
            archive.writestr("archive/data.pkl", content)
            archive.writestr("archive/version", "3\n")
    return prepare


API_SCRIPT = textwrap.dedent('''\
    import math, sys
    import numpy as np
    import torch
    from torch import nn
    import qslm

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(64, 16)
            self.hidden = nn.Linear(16, 16)
            self.head = nn.Linear(16, 2)
        def forward(self, ids):
            return self.head(torch.relu(self.hidden(self.embed(ids).mean(1))))

    torch.manual_seed(0)
    model = Tiny().eval()
    ids = torch.randint(0, 64, (48, 6))
    labels = model(ids).argmax(-1)
    def correct(m):
        with torch.no_grad():
            return 100.0 * (m(ids).argmax(-1) == labels).double()
    calibration = [ids[:8], ids[8:16]]
    evaluate, test = correct, correct
    {change}
    try:
        qslm.search(model, qslm.Task(evaluate=evaluate, calibration=calibration, higher_is_better=True, test=test),
                    out="out", constraints=qslm.Constraints(max_drop=5.0, max_memory=0.5, confidence=0.5),
                    config=qslm.SearchConfig(bit_choices=(4, 8), strategy="uniform"))
    except qslm.QslmError as err:
        print(f"error: {{err}}", file=sys.stderr)
        sys.exit(2)
''')


def api_case(name: str, change: str, expect: str = "error", check: Check | None = None, says: str | None = None
             ) -> Case:
    return Case(name, CATEGORY, ["search.py"], expect=expect, program="python",
                prepare=write("search.py", API_SCRIPT.format(change=change)), check=check, ok_codes=(0, 3), says=says)


def test_figure_is_null(run: CaseRun) -> str | None:
    path = run.folder / "out" / "report.json"
    if not path.is_file():
        return "no report.json"
    text = path.read_text()
    if "NaN" in text:
        return "NaN in report.json"
    report = read_json_allowing_nan(path)
    return None if report.get("non_finite") else "a NaN test value is not listed under non_finite"


def reliability_cases() -> list[Case]:
    return [
        # Damage a journal or a cache could suffer (an editor, a bad disk): re-measured, never trusted.
        Case("search resumed from a journal whose metrics were all set to 99.0", CATEGORY, TIERED, expect="ok",
             prepare=earlier_search(journal_metrics_set_to(99.0)), check=same_plan_as_before,
             replaced=("out/*",)),
        Case("search resumed from a sensitivity cache whose values were swapped", CATEGORY, TIERED, expect="ok",
             prepare=earlier_search(cache_values_swapped), check=same_plan_as_before, replaced=("out/*", "cache/*")),
        Case("eval text-classification on a JSONL line with a key twice", CATEGORY,
             ["eval", "{cls}", "--task", "text-classification", "--data-files", "test=t.jsonl"],
             prepare=write("t.jsonl", '{"text": "fine", "label": 0}\n{"text": "bad", "label": 0, "label": 1}\n'),
             says="t.jsonl:2: key 'label' appears more than once"),
        Case("quantize --plan with a key twice", CATEGORY, ["quantize", "{cls}", "--plan", "plan.json", "--out", "q"],
             prepare=write("plan.json", '{"default": {"bits": 4}, "default": {"bits": 8}}'),
             says="key 'default' appears more than once"),
        # Hangs.
        Case("search --ray-address to a closed port", CATEGORY, search("{cls}", "--ray-address", "127.0.0.1:1"),
             timeout=60, says="127.0.0.1:1"),
        Case("search --workers 64 on this machine", CATEGORY, search("{cls}", "--workers", "64"), expect="either",
             check=report_is_sound(), timeout=240),
        # One line for every fault.
        Case("quantize into a full disk (a 64 KiB tmpfs)", CATEGORY,
             ["quantize", "{cls}", "--bits", "4", "--out", "full/q"], prepare=small_tmpfs("full", "64k"),
             cleanup=unmount("full"), needs_root=True, says="free"),
        Case("search into a full disk (a 64 KiB tmpfs)", CATEGORY, search("{cls}", out="full/out"),
             prepare=small_tmpfs("full", "64k"), cleanup=unmount("full"), needs_root=True, says="free"),
        api_case("API: calibration token ids as float32", "calibration = [ids[:8].float()]",
                 says="Task.calibration[0]"),
        api_case("API: calibration token ids as int8", "calibration = [ids[:8].to(torch.int8)]",
                 says="Task.calibration[0]"),
        api_case("API: calibration token ids beyond the embedding", "calibration = [ids[:8] + 1000]",
                 says="Task.calibration[0]"),
        api_case("API: a model on the meta device", "model = model.to('meta')", says="meta device"),
        Case("search, SIGTERM once the journal exists", CATEGORY, TIERED, expect="ok", ok_codes=(143,),
             interrupt=("out/journal.jsonl", signal.SIGTERM), check=one_line_and_journal_kept),
        # Wrong refusals and slow paths.
        api_case("API: Task.evaluate returns np.float32", "evaluate = lambda m: np.float32(correct(m).mean())",
                 expect="ok"),
        api_case("API: Task.test returns NaN", "test = lambda m: float('nan')", expect="ok",
                 check=test_figure_is_null),
        api_case("API: Task.test scores hold a NaN", "test = lambda m: torch.cat([correct(m)[:-1], "
                 "torch.tensor([float('nan')], dtype=torch.float64)])", expect="ok", check=test_figure_is_null),
        Case("eval language-modeling on one 100 KB line", CATEGORY,
             ["eval", "{lm}", "--task", "language-modeling", "--data-files", "test=t.txt"], expect="ok",
             prepare=long_line_file("t.txt", 100), timeout=60),
        Case("eval language-modeling on one 5 MB line", CATEGORY,
             ["eval", "{lm}", "--task", "language-modeling", "--data-files", "test=t.txt", "--limit", "200"],
             expect="either", prepare=long_line_file("t.txt", 5000), timeout=120),
        Case("search into a folder another search holds", CATEGORY, TIERED, prepare=holding_the_lock,
             cleanup=stop_holder, replaced=("out/*", "cache/*"), timeout=120, says="in use by another qslm job"),
        # Messages that name the right thing.
        Case("convert a checkpoint whose data.pkl is random bytes", CATEGORY,
             ["convert", "spikegpt", "src.pth", "--tokenizer", "{tok}", "--out", "converted"],
             prepare=checkpoint_with_data_pkl(random_bytes(64)), says="not a PyTorch checkpoint"),
        Case("convert a checkpoint whose data.pkl is empty", CATEGORY,
             ["convert", "spikegpt", "src.pth", "--tokenizer", "{tok}", "--out", "converted"],
             prepare=checkpoint_with_data_pkl(b""), says="not a PyTorch checkpoint"),
        Case("convert a checkpoint with a huge embedding", CATEGORY,
             ["convert", "spikegpt", "src.pth", "--tokenizer", "{tok}", "--out", "converted"],
             prepare=huge_embedding((300, 10 ** 6)), says="emb.weight has shape [300, 1000000]"),
        Case("eval text-classification on a FIFO", CATEGORY,
             ["eval", "{cls}", "--task", "text-classification", "--data-files", "test=t.csv"], prepare=fifo("t.csv"),
             timeout=60, says="(a FIFO)"),
        Case("eval text-classification on a folder", CATEGORY,
             ["eval", "{cls}", "--task", "text-classification", "--data-files", "test=t.csv"],
             prepare=lambda folder, fixtures: (folder / "t.csv").mkdir(), says="is a folder, expected a data file"),
    ]


def one_line_and_journal_kept(run: CaseRun) -> str | None:
    lines = [line for line in run.stderr.splitlines() if line.strip() and "%|" not in line and "it/s" not in line]
    journal = run.folder / "out" / "journal.jsonl"
    if not journal.is_file():
        return "the journal is gone"
    if not any(line.startswith("qslm search: terminated") for line in lines):
        return f"no 'qslm search: terminated' line on stderr: {lines[-3:]}"
    return None
