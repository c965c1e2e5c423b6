"""Hostile-input probe: malformed, careless and malicious inputs on every ``qslm`` command.

    QSLM_DATA_DIR=../shared/data python bench/hostile_inputs.py            # all cases, 2 at a time
    python bench/hostile_inputs.py --package /path/to/other/checkout        # probe that copy of qslm
    python bench/hostile_inputs.py --data-dir ../shared/data --only pickle  # cases whose name has "pickle"
    python bench/hostile_inputs.py --list                                   # the cases, without running them

Everything is built in a temporary folder: a slice of the real data (read from --data-dir), a BPE
tokenizer and tiny random SpikeGPT / spiking-encoder model folders made with qslm's own functions
(seeded, so every run builds the same files), and per case the user's files the case needs. Each case
runs ``python -m qslm.cli ...`` of the package this script sits beside as a subprocess, in its own
folder, with a timeout, and is classified as one of:

* ``clear error, exit 2``   the input was refused with a one-line message and exit code 2;
* ``handled correctly``     a valid (or tolerable) input did the right thing;
* ``raw traceback``         a Python traceback reached the user;
* ``exit 0 while wrong``    the command succeeded on an input it should have refused, or its result is
                            wrong (a NaN in report.json, a limit ignored, a plan that differs between runs);
* ``destroyed data``        a file that was there before the command changed or vanished;
* ``ran pickled code``      a crafted pickle's ``__reduce__`` ran (it creates a marker file);
* ``exit 2, output left behind``  refused, but the new ``--out`` folder it named was left there;
* ``exit 2, message misses the point``  refused, but the message does not name what is wrong;
* ``refused valid input``, ``other exit code``, ``timed out``: as named.

Data destruction is found by hashing every file of the case's folder, the model folders and the data
slice before and after the command (the files a case expects the command to replace are exempt).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout probed unless --package names another

TRACEBACK = "Traceback (most recent call last)"
CLEAR, HANDLED = "clear error, exit 2", "handled correctly"
TRACEBACK_OUTCOME, WRONG, DESTROYED = "raw traceback", "exit 0 while wrong", "destroyed data"
RAN_PICKLE, REFUSED_VALID, OTHER_EXIT, TIMED_OUT = ("ran pickled code", "refused valid input", "other exit code",
                                                    "timed out")
LEFT_BEHIND = "exit 2, output left behind"
MISLEADING = "exit 2, message misses the point"
OUTCOMES = (CLEAR, HANDLED, TRACEBACK_OUTCOME, WRONG, DESTROYED, RAN_PICKLE, LEFT_BEHIND, MISLEADING, REFUSED_VALID,
            OTHER_EXIT, TIMED_OUT)
GOOD_OUTCOMES = (CLEAR, HANDLED)
MARKER = "PICKLE_RAN"  # the file a crafted pickle creates in the case's folder when it is unpickled
SEED = 0
# A runaway allocation (a config asking for a huge vocabulary) must fail inside the case, not take the
# machine down: the probe sets this address-space limit on itself, and every case inherits it.
MEMORY_LIMIT_BYTES = 8 * 2 ** 30

# Options that keep one search to seconds on a tiny model.
SMALL_SEARCH = ["--calibration-size", "8", "--validation-size", "16", "--reported-limit", "16", "--bits", "4,8",
                "--strategy", "uniform"]


# --- cases ------------------------------------------------------------------------------------------------

Check = Callable[["CaseRun"], "str | None"]  # what is wrong with a run that exited 0 (None: nothing)
Prepare = Callable[[Path, "Fixtures"], None]  # builds the user's files of a case in its folder


@dataclass
class Case:
    name: str
    category: str
    args: list[str]  # after ``qslm``; ``{key}`` is replaced by the fixture path of that key
    expect: str = "error"  # "error": must be refused; "ok": must work; "either": refused or working
    prepare: Prepare | None = None
    check: Check | None = None
    ok_codes: tuple[int, ...] = (0,)  # exit codes of a working run (search: 3 is "no plan met the limits")
    replaced: tuple[str, ...] = ()  # files of the case folder the command may rewrite (relative paths)
    repeat: int = 1  # runs of the same command (determinism); the check sees every run
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    # (moment, signal): Ctrl-C or a kill after ``moment`` seconds, or once a file matching the glob ``moment``
    # appears in the case folder
    interrupt: tuple[float | str, int] | None = None
    program: str = "qslm"  # "python": ``args`` are a script in the case folder and its arguments
    cleanup: Prepare | None = None  # runs after the command, whatever happened (a mount, a process)
    needs_root: bool = False  # skipped (not counted) when the probe is not root
    says: str | None = None  # text a refusal's message must hold (it names the right thing)

    def __post_init__(self) -> None:
        if self.args[0] in ("search", "demo") and self.ok_codes == (0,):
            self.ok_codes = (0, 3)  # 3: the search ran and no plan met the limits


@dataclass
class Fixtures:
    package: Path  # the checkout whose qslm is probed (its folder holds qslm/ and tests/)
    root: Path
    data: Path  # the slice of the real data, standard layout
    models: Path  # cls, lm, enc: tiny model folders; copied into each case's folder as models/
    tokenizer: Path
    upstream: Path  # a valid original-SpikeGPT state dict (convert's input)
    unit_names: list[str]  # quantizable units of the tiny classifier

    def paths(self, case_dir: Path) -> dict[str, str]:
        return {"data": str(self.data), "cls": str(case_dir / "models" / "cls"), "lm": str(case_dir / "models" / "lm"),
                "enc": str(case_dir / "models" / "enc"), "models": str(case_dir / "models"),
                "tok": str(self.tokenizer), "upstream": str(self.upstream), "case": str(case_dir)}


@dataclass
class CaseRun:
    case: Case
    folder: Path
    codes: list[int | None]
    stdouts: list[str]
    stderrs: list[str]
    seconds: float

    @property
    def code(self) -> int | None:
        return self.codes[-1]

    @property
    def stderr(self) -> str:
        return self.stderrs[-1]

    @property
    def stdout(self) -> str:
        return self.stdouts[-1]


@dataclass
class Outcome:
    case: Case
    outcome: str
    detail: str
    code: int | None
    seconds: float
    message: str  # the last lines the user saw on stderr


# --- fixtures ---------------------------------------------------------------------------------------------

def slice_data(source: Path, target: Path) -> None:
    """The first lines of each real data file, in the layout the loaders read."""
    slices = {"sst2/train.tsv": 3001, "sst2/dev.tsv": 201, "wikitext-2/valid.txt": 300,
              "wikitext-2/test.txt": 60, "brown/brown.txt": 2000}
    for relative, lines in slices.items():
        src = source / relative
        if not src.is_file():
            raise SystemExit(f"hostile_inputs: {src} not found; pass --data-dir (or QSLM_DATA_DIR) naming the "
                             "real data folder")
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")


def build_fixtures(package: Path, data_source: Path, root: Path) -> Fixtures:
    import torch

    from qslm.checkpoint import save_model
    from qslm.data.tokenizer import train_tokenizer
    from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
    from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig
    from qslm.quant.units import quantizable_units
    from tests.conftest import upstream_spikegpt_state

    data = root / "data"
    slice_data(data_source, data)
    texts = (data / "brown" / "brown.txt").read_text().splitlines() + (data / "sst2" / "train.tsv").read_text().splitlines()
    tokenizer = train_tokenizer(texts, vocab_size=400)
    vocab = tokenizer.get_vocab_size()
    models = root / "models"
    configs = {
        "cls": lambda: SpikeGPT(SpikeGPTConfig(vocab_size=vocab, n_embd=32, n_layer=2, ctx_len=48, task="classification")),
        "lm": lambda: SpikeGPT(SpikeGPTConfig(vocab_size=vocab, n_embd=32, n_layer=2, ctx_len=32)),
        "enc": lambda: SpikingEncoder(SpikingEncoderConfig(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, max_len=48,
                                                           time_steps=2)),
    }
    for name, build in configs.items():
        torch.manual_seed(SEED)
        model = build().eval()
        save_model(models / name, model, tokenizer)
        if name == "cls":
            unit_names = list(quantizable_units(model))
    upstream = root / "upstream.pth"
    torch.save(upstream_spikegpt_state(vocab, 16, 1, seed=SEED), upstream)
    return Fixtures(package, root, data, models, models / "cls" / "tokenizer.json", upstream, unit_names)


def write_hostile_pickle(path: Path, marker: Path, legacy: bool = False, with_weights: bool = False) -> None:
    """A torch.save file whose unpickling creates ``marker`` (``__reduce__`` -> ``open(marker, "w")``)."""
    import torch

    from tests.conftest import CreatesMarkerWhenUnpickled

    payload: dict = {"emb.weight": torch.ones(2, 2), "payload": CreatesMarkerWhenUnpickled(str(marker))}
    if with_weights:
        from tests.conftest import upstream_spikegpt_state
        payload = {**upstream_spikegpt_state(400, 16, 1, seed=SEED), "payload": payload["payload"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)


# --- case builders ----------------------------------------------------------------------------------------

def write(relative: str, content: str | bytes) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return prepare


def steps(*prepares: Prepare) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        for step in prepares:
            step(folder, fixtures)
    return prepare


def pickle_at(relative: str, legacy: bool = False, with_weights: bool = False) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        write_hostile_pickle(folder / relative, folder / MARKER, legacy, with_weights)
    return prepare


def edit_config(model: str, change: Callable[[dict], object]) -> Prepare:
    """Rewrite ``models/<model>/config.json`` as ``change(config)`` returns it (text is written as is)."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        path = folder / "models" / model / "config.json"
        new = change(json.loads(path.read_text()))
        path.write_text(new if isinstance(new, str) else json.dumps(new))
    return prepare


def edit_weights(model: str, change: Callable[[dict], dict]) -> Prepare:
    """Rewrite ``models/<model>/model.safetensors`` with ``change(tensors)``."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        from safetensors.torch import load_file, save_file

        path = folder / "models" / model / "model.safetensors"
        save_file(change(load_file(str(path))), str(path))
    return prepare


def first_tensor(change: Callable) -> Callable[[dict], dict]:
    """Apply ``change`` to the first tensor by name only."""
    def apply(tensors: dict) -> dict:
        name = min(tensors)
        return {**tensors, name: change(tensors[name])}
    return apply


def write_plan(build: Callable[[list[str]], str], relative: str = "plan.json") -> Prepare:
    """A plan file whose text ``build(unit_names)`` makes (text, so a repeated key can be written)."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        (folder / relative).write_text(build(fixtures.unit_names))
    return prepare


def spec(bits: str) -> str:
    return '{"bits": ' + bits + '}'


def search(model: str, *extra: str, task: str = "sst2", out: str = "out") -> list[str]:
    data = ["--data-dir", "{data}"] if task in ("sst2", "wikitext2") else []
    return ["search", model, "--task", task, *data, "--out", out, *SMALL_SEARCH, *extra]


def train(*extra: str, out: str = "run", task: str = "sst2") -> list[str]:
    return ["train", "--arch", "spikegpt", "--task", task, "--data-dir", "{data}", "--out", out, "--steps", "2",
            "--batch-size", "2", "--vocab-size", "300", "--set", "n_layer=1", "--set", "n_embd=16",
            "--checkpoint-every", "1", "--eval-every", "100", *extra]


def demo(*extra: str) -> list[str]:
    return ["demo", "--model", "{cls}", "--data-dir", "{data}", *SMALL_SEARCH, *extra]


def convert(*extra: str, source: str = "{upstream}", out: str = "converted") -> list[str]:
    return ["convert", "spikegpt", source, "--tokenizer", "{tok}", "--out", out, "--ctx-len", "32", *extra]


# --- checks ----------------------------------------------------------------------------------------------

def read_json_allowing_nan(path: Path):
    return json.loads(path.read_text(), parse_constant=lambda name: float("nan"))


def non_finite_paths(value, where: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [where or "(top)"]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in non_finite_paths(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in non_finite_paths(item, f"{where}[{i}]")]
    return []


def report_is_sound(out: str = "out", max_memory_bytes: float | None = None) -> Check:
    """report.json exists, holds no NaN/inf, and a chosen plan's memory respects ``max_memory_bytes``."""
    def check(run: CaseRun) -> str | None:
        path = run.folder / out / "report.json"
        if not path.is_file():
            return f"no {out}/report.json"
        report = read_json_allowing_nan(path)
        bad = non_finite_paths(report)
        if bad:
            return f"non-finite numbers in report.json at {', '.join(bad[:3])}"
        final = report.get("final")
        if final and max_memory_bytes is not None and final["memory_bytes"] > max_memory_bytes:
            return f"memory {final['memory_bytes']} B over the limit {max_memory_bytes:.0f} B"
        return None
    return check


def memory_fraction_respected(fraction: float, out: str = "out") -> Check:
    def check(run: CaseRun) -> str | None:
        report = read_json_allowing_nan(run.folder / out / "report.json")
        final = report.get("final")
        if final and final["memory_bytes"] > fraction * report["baseline"]["memory_bytes"] * (1 + 1e-9):
            return f"memory {final['memory_bytes']} B over {fraction:.1%} of FP32"
        return report_is_sound(out)(run)
    return check


def no_nan_printed(run: CaseRun) -> str | None:
    text = run.stdout.lower()
    return "printed a NaN metric" if "nan" in text.split() or " nan" in text else None


def folder_loads(relative: str) -> Check:
    """The written folder is a model qslm can load (``qslm.checkpoint.load_model``, in this process)."""
    def check(run: CaseRun) -> str | None:
        from qslm.checkpoint import load_model
        from qslm.errors import QslmError
        try:
            load_model(run.folder / relative)
        except QslmError as err:
            return f"{relative} does not load: {str(err).splitlines()[0]}"
        return None
    return check


def nothing_at(relative: str) -> Check:
    def check(run: CaseRun) -> str | None:
        return f"{relative} was written" if (run.folder / relative).exists() else None
    return check


def same_plan_every_run(out_prefix: str) -> Check:
    def check(run: CaseRun) -> str | None:
        plans = [(run.folder / f"{out_prefix}{i}" / "quant_plan.json") for i in range(run.case.repeat)]
        missing = [str(p.parent.name) for p in plans if not p.is_file()]
        if missing:
            return f"no quant_plan.json in {', '.join(missing)}"
        texts = {json.dumps(json.loads(p.read_text()), sort_keys=True) for p in plans}
        return None if len(texts) == 1 else f"{len(texts)} different plans from {len(plans)} identical runs"
    return check


def output_folder_cases() -> list[Case]:
    """--out pointing at what it must never write into, for every command that writes a folder."""
    user_files = steps(write("notes.txt", "my notes\n"), write("mine/notes.txt", "my notes\n"),
                       write("file.txt", "a user's file\n"), symlink("link", "models/cls"))
    current = "the empty string (the current folder, with user files)"
    targets = {
        "a user's file": "file.txt",
        "a path under a user's file": "file.txt/sub",
        "a folder of user files": "mine",
        "the input model's folder": "{cls}",
        "the folder holding the input model": "{models}",
        "another model's folder": "{lm}",
        "an unwritable place under /proc": "/proc/qslm-hostile-out",
        "a symlink to the input model's folder": "link",
        current: "",
    }
    # Every target for quantize; the others share its claim code, so they get the commonest mistakes.
    common = ["a user's file", "a folder of user files", "the input model's folder", "another model's folder"]
    writers: dict[str, tuple[Callable[[str], list[str]], list[str]]] = {
        "quantize": (lambda out: ["quantize", "{cls}", "--bits", "4", "--out", out], list(targets)),
        "search": (lambda out: search("{cls}", out=out), [*common[:3], current]),
        "train": (lambda out: train("--init", "{cls}", out=out), common),
        "demo": (lambda out: demo("--out", out), ["a user's file", current]),
        "convert": (lambda out: convert(out=out), ["a user's file", "an unwritable place under /proc"]),
    }
    cases = [Case(f"{command} --out {what}", "1 --out", args(targets[what]), prepare=user_files)
             for command, (args, chosen) in writers.items() for what in chosen]
    cases += [
        Case(f"{command} --out a folder of user files with --overwrite keeps them", "1 --out",
             writers[command][0]("mine") + ["--overwrite"], expect="ok", prepare=user_files)
        for command in ("quantize", "train")]
    cases += [
        Case("convert --out the checkpoint file itself", "1 --out", convert(source="src.pth", out="src.pth"),
             prepare=copy_fixture("upstream", "src.pth")),
        Case("quantize --out an earlier quantize output (same kind)", "1 --out",
             ["quantize", "{cls}", "--bits", "8", "--out", "q"], expect="ok", prepare=earlier_quantize("q"),
             replaced=("q/config.json", "q/model.safetensors", "q/quant_plan.json", "q/tokenizer.json",
                       "q/.qslm-output.json"), check=folder_loads("q")),
        Case("search --cache-dir a user's file", "1 --out", search("{cls}", "--cache-dir", "file.txt"),
             prepare=user_files),
    ]
    # Ctrl-C or a kill while quantize rewrites its earlier output, sent as soon as its staging folder
    # appears (the final write has begun): the folder must still load (the earlier model or the new one,
    # never a mix) and the user's notes must be intact.
    quantized_files = ("q/config.json", "q/model.safetensors", "q/quant_plan.json", "q/tokenizer.json",
                       "q/.qslm-output.json")
    for signal_number, what in ((signal.SIGINT, "Ctrl-C"), (signal.SIGKILL, "kill -9")):
        cases.append(Case(f"quantize into its earlier output, {what} during the final write", "1 --out",
                          ["quantize", "{cls}", "--bits", "8", "--out", "q"], expect="ok",
                          prepare=steps(earlier_quantize("q"), write("q/notes.txt", "my notes\n")),
                          replaced=quantized_files, check=folder_loads("q"),
                          interrupt=("q/.qslm-staging-*", signal_number), ok_codes=(0, 130, -signal_number)))
    cases.append(Case("quantize, Ctrl-C 1 s after the start (while it loads)", "1 --out",
                      ["quantize", "{cls}", "--bits", "8", "--out", "q"], expect="ok",
                      interrupt=(1.0, signal.SIGINT), ok_codes=(130,)))
    return cases


def symlink(relative: str, target: str) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        (folder / relative).symlink_to(folder / target, target_is_directory=True)
    return prepare


def copy_fixture(key: str, relative: str) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(getattr(fixtures, key), folder / relative)
    return prepare


def earlier_quantize(relative: str) -> Prepare:
    """A folder written by ``qslm quantize`` (in this process, through the package's own API)."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        from qslm.quant.api import quantize
        quantize(str(folder / "models" / "cls"), bits=4, out=str(folder / relative))
    return prepare


def pickle_cases() -> list[Case]:
    """Crafted pickles wherever a file could be unpickled: none may run."""
    return [
        Case("train resumes a run folder holding a crafted checkpoint.pt", "2 pickle", train(),
             prepare=pickle_at("run.partial/checkpoint.pt")),
        Case("train resumes a run folder holding a crafted teacher_logits.pt", "2 pickle", train(),
             prepare=pickle_at("run.partial/teacher_logits.pt")),
        Case("train resumes a run whose state.safetensors is a crafted pickle", "2 pickle", train(),
             prepare=pickle_at("run.partial/state.safetensors")),
        Case("train --init a model whose model.safetensors is a crafted pickle", "2 pickle", train("--init", "{cls}"),
             prepare=pickle_at("models/cls/model.safetensors")),
        Case("convert a crafted pickle (zip format)", "2 pickle", convert(source="evil.pth"),
             prepare=pickle_at("evil.pth")),
        Case("convert a crafted pickle (legacy format)", "2 pickle", convert(source="evil.pth"),
             prepare=pickle_at("evil.pth", legacy=True)),
        Case("convert a crafted pickle holding a full valid state dict", "2 pickle", convert(source="evil.pth"),
             prepare=pickle_at("evil.pth", with_weights=True)),
        *[Case(f"{command} a model whose model.safetensors is a crafted pickle", "2 pickle", args,
               prepare=pickle_at("models/cls/model.safetensors"))
          for command, args in (("info", ["info", "{cls}"]),
                                ("eval", ["eval", "{cls}", "--task", "sst2", "--data-dir", "{data}", "--limit", "8"]),
                                ("quantize", ["quantize", "{cls}", "--bits", "4", "--out", "q"]),
                                ("search", search("{cls}")))],
        Case("info a model whose tokenizer.json is a crafted pickle", "2 pickle", ["info", "{cls}"],
             prepare=pickle_at("models/cls/tokenizer.json")),
        Case("info a folder holding only a crafted pytorch_model.bin", "2 pickle", ["info", "bin"],
             prepare=steps(pickle_at("bin/pytorch_model.bin"), copy_model_file("cls", "config.json", "bin"),
                           copy_model_file("cls", "tokenizer.json", "bin"))),
        Case("quantize --plan a crafted pickle", "2 pickle", ["quantize", "{cls}", "--plan", "plan.pt", "--out", "q"],
             prepare=pickle_at("plan.pt")),
    ]


def copy_model_file(model: str, name: str, target: str) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        (folder / target).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "models" / model / name, folder / target / name)
    return prepare


def limit_cases() -> list[Case]:
    """Values a careless user types, which must be refused, not read as something else."""
    refused_search = {
        "--max-memory nan": ["--max-memory", "nan"], "--max-memory 2.0": ["--max-memory", "2.0"],
        "--max-memory -1": ["--max-memory", "-1"], 
        "--max-drop nan": ["--max-drop", "nan"],
        "--max-relative-increase on a classifier": ["--max-relative-increase", "0.03"],
        "--max-energy nan": ["--max-energy", "nan"], 
        "--calibration-size 0": ["--calibration-size", "0"], "--reported-limit 0": ["--reported-limit", "0"],
        "--max-evals 0": ["--max-evals", "0"], "--seed -1": ["--seed", "-1"], 
        "--weights latency=abc": ["--weights", "latency=abc"], "--weights unknown=1": ["--weights", "speed=1"],
        "--device cuda (none here)": ["--device", "cuda"],
        "--ignore matching no unit": ["--ignore", "no-such-unit*"],
    }
    cases = [Case(f"search {what}", "3 accepted", search("{cls}", *extra), prepare=write("hw.json", "{not json"),
                  check=report_is_sound())
             for what, extra in refused_search.items()]
    cases += [
        Case("search --max-memory 12.5%", "3 accepted", search("{cls}", "--max-memory", "12.5%", "--bits", "2,4,8"),
             expect="ok", check=memory_fraction_respected(0.125)),
        Case("search --max-memory 3MB (above FP32)", "3 accepted", search("{cls}", "--max-memory", "3MB"),
             expect="either", check=report_is_sound(max_memory_bytes=3e6)),
        Case("search --ignore '*' (every unit kept float)", "3 accepted", search("{cls}", "--ignore", "*"),
             expect="either", check=report_is_sound()),
        Case("demo --max-memory nan", "3 accepted", demo("--max-memory", "nan")),
        Case("demo on the tiny classifier with small sizes", "3 accepted", demo(), expect="ok",
             check=report_is_sound("qslm-demo")),
    ]
    refused_train = {
        "--steps 0": ["--steps", "0"], "--steps -5": ["--steps", "-5"], "--vocab-size 0": ["--vocab-size", "0"],
        "--lr nan": ["--lr", "nan"], "--batch-size 0": ["--batch-size", "0"],
        "--ema-decay 2": ["--ema-decay", "2"],
        "--distill-weight 1.5 with --teacher": ["--distill-weight", "1.5", "--teacher", "{cls}"],
        "--set n_layer=0": ["--set", "n_layer=0"],
        "--set bogus=1": ["--set", "bogus=1"],
    }
    for what, extra in refused_train.items():
        task = "wikitext2" if what.startswith("--corpus") else "sst2"
        cases.append(Case(f"train {what}", "3 accepted", train(*extra, task=task), check=nothing_at("run/config.json")))
    cases.append(Case("train a tiny model (2 steps)", "3 accepted", train(), expect="ok", check=folder_loads("run")))
    return cases


def quantize_cases() -> list[Case]:
    """Plans and quantize options: a setting is never silently ignored."""
    def q(*extra: str) -> list[str]:
        return ["quantize", "{cls}", "--out", "q", *extra]

    def units(body: Callable[[list[str]], str]) -> Callable[[list[str]], str]:
        return lambda names: '{"version": 1, "units": {' + body(names) + '}}'

    plans: dict[str, Callable[[list[str]], str]] = {
        "a unit named twice": units(lambda n: f'"{n[1]}": {spec("4")}, "{n[1]}": {spec("8")}'),
        "bits 4.0": units(lambda n: f'"{n[1]}": {spec("4.0")}'),
        'bits "4"': units(lambda n: f'"{n[1]}": {spec(chr(34) + "4" + chr(34))}'),
        "an unknown unit": units(lambda n: f'"blocks.9.nothing": {spec("4")}'),
        "an unknown spec key": units(lambda n: f'"{n[1]}": {{"bits": 4, "bitz": 2}}'),
        "method bogus": units(lambda n: f'"{n[1]}": {{"bits": 4, "method": "magic"}}'),
        "method gptq (no calibration data)": units(lambda n: f'"{n[1]}": {{"bits": 4, "method": "gptq"}}'),
        "units as a list": lambda n: '{"version": 1, "units": ["' + n[1] + '"]}',
        "an empty file": lambda n: "",
    }
    cases = [Case(f"quantize --plan with {what}", "3 accepted", q("--plan", "plan.json", "--bits", "8"),
                  prepare=write_plan(body), check=nothing_at("q/model.safetensors"))
             for what, body in plans.items()]
    cases += [
        Case("quantize --strict with a partial plan", "3 accepted", q("--plan", "plan.json", "--strict"),
             prepare=write_plan(units(lambda n: f'"{n[1]}": {spec("4")}'))),
    ]
    refused = {"--bits 7": ["--bits", "7"], 
               "no --bits and no --plan": [],
               "--percentile 150": ["--bits", "4", "--observer", "percentile", "--percentile", "150"],
               "--percentile without --observer percentile": ["--bits", "4", "--percentile", "99"],
               }
    cases += [Case(f"quantize {what}", "3 accepted", q(*extra), check=nothing_at("q/model.safetensors"))
              for what, extra in refused.items()]
    cases += [
        Case("quantize --bits 16", "3 accepted", q("--bits", "16"), expect="either", check=folder_loads("q")),
        Case("quantize an already quantized model", "3 accepted", ["quantize", "q4", "--bits", "8", "--out", "q"],
             expect="either", prepare=earlier_quantize("q4"), check=folder_loads("q")),
        Case("quantize the spiking encoder at 4 bits", "3 accepted",
             ["quantize", "{enc}", "--bits", "4", "--out", "q"], expect="ok", check=folder_loads("q")),
    ]
    return cases


def random_bytes(n: int, seed: int = SEED) -> bytes:
    return random.Random(seed).randbytes(n)


def model_file_cases() -> list[Case]:
    """Model folders whose config, weights or tokenizer are broken: ``info`` and ``eval`` must refuse them."""
    import torch

    configs: dict[str, Callable[[dict], object]] = {
        "ctx_len 0": lambda c: {**c, "ctx_len": 0}, 
        'n_layer "4"': lambda c: {**c, "n_layer": "4"}, 
        "vocab_size 10**12": lambda c: {**c, "vocab_size": 10 ** 12},
        "vocab_size 10 (tokenizer has 400)": lambda c: {**c, "vocab_size": 10},
        "tau NaN": lambda c: {**c, "tau": float("nan")},
        "arch bogus": lambda c: {**c, "arch": "transformer"},
        "an unknown key": lambda c: {**c, "n_layers": 2},
        "a JSON array": lambda c: [c], 
        "an empty file": lambda c: "", 
    }
    cases = [Case(f"info a model whose config.json has {what}", "3 config", ["info", "{cls}"],
                  prepare=edit_config("cls", change)) for what, change in configs.items()]
    cases += [Case(f"eval a model whose config.json has {what}", "3 config",
                   ["eval", "{cls}", "--task", "sst2", "--data-dir", "{data}", "--limit", "8"],
                   prepare=edit_config("cls", change), check=no_nan_printed)
              for what, change in configs.items() if what in ("ctx_len 0", 'n_layer "4"', "vocab_size 10**12",
                                                              "tau NaN", "a JSON array")]
    weights: dict[str, Callable[[dict], dict]] = {
        "NaN weights": first_tensor(lambda t: torch.full_like(t, float("nan"))),
        "int32 weights": lambda ts: {k: v.to(torch.int32) for k, v in ts.items()},
        "float16 weights": lambda ts: {k: v.half() for k, v in ts.items()},
        "a missing tensor": lambda ts: dict(sorted(ts.items())[1:]),
        "a tensor of the wrong shape": first_tensor(lambda t: t.flatten()[:-1].clone()),
    }
    for what, change in weights.items():
        expect = "either" if what == "float16 weights" else "error"
        cases.append(Case(f"eval a model with {what}", "3 weights",
                          ["eval", "{cls}", "--task", "sst2", "--data-dir", "{data}", "--limit", "8"],
                          expect=expect, prepare=edit_weights("cls", change), check=no_nan_printed))
    cases += [
        Case("search a model with NaN weights", "3 weights", search("{cls}"),
             prepare=edit_weights("cls", weights["NaN weights"]), check=report_is_sound()),
        Case("info a model with a truncated model.safetensors", "3 weights", ["info", "{cls}"],
             prepare=truncate("models/cls/model.safetensors")),
        Case("info a model with a garbage tokenizer.json", "3 weights", ["info", "{cls}"],
             prepare=write("models/cls/tokenizer.json", random_bytes(300))),
        Case("info a missing folder", "3 weights", ["info", "no-such-folder"]),
        Case("info the data folder", "3 weights", ["info", "{data}"]),
        Case("info --json a quantized model", "3 weights", ["info", "q", "--json"], expect="ok",
             prepare=earlier_quantize("q"), check=json_on_stdout),
        Case("eval --limit 0", "3 weights", ["eval", "{cls}", "--task", "sst2", "--data-dir", "{data}", "--limit", "0"]),
        Case("eval the tiny classifier", "3 weights", ["eval", "{cls}", "--task", "sst2", "--data-dir", "{data}",
                                                       "--limit", "16"], expect="ok", check=no_nan_printed),
        Case("profile --limit 0", "3 weights", ["profile", "{cls}", "--data-dir", "{data}", "--limit", "0"]),
        Case("profile --hardware with a negative energy", "3 weights",
             ["profile", "{cls}", "--data-dir", "{data}", "--limit", "4", "--hardware", "hw.json"],
             prepare=negative_hardware("hw.json")),
    ]
    return cases


def json_on_stdout(run: CaseRun) -> str | None:
    try:
        json.loads(run.stdout)
    except json.JSONDecodeError as err:
        return f"stdout is not one JSON object ({err.msg})"
    return None


def truncate(relative: str) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        path = folder / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return prepare


def negative_hardware(relative: str) -> Prepare:
    """The bundled 45 nm profile with a negative fp32 MAC energy."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        profile = json.loads((fixtures.package / "qslm" / "hardware" / "default_45nm.json").read_text())
        profile["float"]["mac_pj"] = -4.6
        (folder / relative).write_text(json.dumps(profile))
    return prepare


def data_file_cases() -> list[Case]:
    """Broken data: a preset's files in a data folder, and users' files of the two task kinds."""
    def sst2_dir(dev: str | bytes | None = None, train_text: str | bytes | None = None) -> Prepare:
        def prepare(folder: Path, fixtures: Fixtures) -> None:
            shutil.copytree(fixtures.data, folder / "mydata")
            for name, content in (("dev.tsv", dev), ("train.tsv", train_text)):
                if content is not None:
                    path = folder / "mydata" / "sst2" / name
                    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return prepare

    def eval_sst2(*extra: str) -> list[str]:
        return ["eval", "{cls}", "--task", "sst2", "--data-dir", "mydata", *extra]

    header = "sentence\tlabel\n"
    presets = {
        "binary garbage": random_bytes(2048), "an empty file": "", 
        "no label column": "sentence\nfine film\n", "label 2 for a 2-class model": header + "fine film\t2\n",
        "undecodable bytes": header.encode() + b"fine \xff\xfe film\t1\n",
    }
    cases = [Case(f"eval sst2 whose dev.tsv is {what}", "4 data", eval_sst2(), prepare=sst2_dir(dev=content),
                  check=no_nan_printed) for what, content in presets.items()]
    cases += [
        Case("eval sst2 with CRLF line endings", "4 data", eval_sst2("--limit", "16"), expect="ok",
             prepare=sst2_dir(dev=header.replace("\n", "\r\n") + "a fine film\t1\r\nawful\t0\r\n")),
        Case("search sst2 whose train.tsv is binary garbage", "4 data",
             ["search", "{cls}", "--task", "sst2", "--data-dir", "mydata", "--out", "out", *SMALL_SEARCH],
             prepare=sst2_dir(train_text=random_bytes(4096)), check=report_is_sound()),
        Case("eval wikitext2 whose test.txt is binary garbage", "4 data",
             ["eval", "{lm}", "--task", "wikitext2", "--data-dir", "mydata"],
             prepare=wikitext_dir(random_bytes(2048)), check=no_nan_printed),
    ]

    def eval_files(kind: str, files: str, *extra: str, model: str = "{cls}") -> list[str]:
        return ["eval", model, "--task", kind, "--data-files", files, *extra]

    tc, lm = "text-classification", "language-modeling"
    user_tables = {
        "a CSV missing the text column": ("t.csv", "review,label\nfine,1\n", ()),
        "unknown labels": ("t.csv", "text,label\nfine,positive\n", ("--labels", "neg,pos")),
        "a label 5 for a 2-class model": ("t.csv", "text,label\nfine,5\nbad,0\n", ()),
        "labels not integers, no --labels": ("t.csv", "text,label\nfine,pos\n", ()),
        "a JSONL line that is not an object": ("t.jsonl", '{"text": "fine", "label": 1}\n[1, 2]\n', ()),
        "a CSV with a ragged row": ("t.csv", "text,label\nfine,1,2\n", ()),
        "undecodable bytes in a CSV": ("t.csv", b"text,label\nfine \xff film,1\n", ()),
        "an unknown extension": ("t.txt", "text,label\nfine,1\n", ()),
        "--labels naming 3 classes for 2": ("t.csv", "text,label\nfine,pos\n", ("--labels", "neg,pos,mid")),
        "--data-dir with a file task": ("t.csv", "text,label\nfine,1\n", ("--data-dir", "{data}")),
    }
    cases += [Case(f"eval text-classification on {what}", "4 data", eval_files(tc, f"test={name}", *extra),
                   prepare=write(name, content), check=no_nan_printed)
              for what, (name, content, extra) in user_tables.items()]
    cases += [
        Case("eval text-classification on a CSV with a UTF-8 BOM", "4 data", eval_files(tc, "test=t.csv"),
             expect="either", prepare=write("t.csv", "\ufefftext,label\nfine,1\nbad,0\n"), check=no_nan_printed),
        Case("eval text-classification on a NUL byte in the text", "4 data", eval_files(tc, "test=t.csv"),
             expect="either", prepare=write("t.csv", "text,label\nfi\x00ne,1\nbad,0\n"), check=no_nan_printed),
        Case("eval text-classification on a missing file", "4 data", eval_files(tc, "test=missing.csv")),
        Case("eval sst2 with --data-files", "4 data", ["eval", "{cls}", "--task", "sst2", "--data-dir", "{data}",
                                                       "--data-files", "test=t.csv"],
             prepare=write("t.csv", "text,label\nfine,1\n")),
        Case("eval language-modeling on undecodable bytes", "4 data", eval_files(lm, "test=t.txt", model="{lm}"),
             prepare=write("t.txt", b"good text\nbad \xc3\x28 text\n")),
        Case("search text-classification on binary garbage", "4 data",
             ["search", "{cls}", "--task", tc, "--data-files", "validation=v.tsv,test=v.tsv", "--out", "out",
              *SMALL_SEARCH], prepare=write("v.tsv", random_bytes(1024))),
        Case("profile text-classification on a JSONL line that is not an object", "4 data",
             ["profile", "{cls}", "--task", tc, "--data-files", "validation=v.jsonl"],
             prepare=write("v.jsonl", '"just a string"\n')),
        Case("search text-classification on small user files", "4 data",
             ["search", "{cls}", "--task", tc, "--data-files", "validation=v.csv,test=v.csv", "--labels", "neg,pos",
              "--out", "out", *SMALL_SEARCH], expect="ok", prepare=user_csv("v.csv"),
             check=report_is_sound()),
    ]
    return cases


def wikitext_dir(test: bytes) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        shutil.copytree(fixtures.data, folder / "mydata")
        (folder / "mydata" / "wikitext-2" / "test.txt").write_bytes(test)
    return prepare


def user_csv(relative: str) -> Prepare:
    """40 SST-2 dev sentences as a user's CSV with named labels."""
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        import csv
        rows = [line.split("\t") for line in (fixtures.data / "sst2" / "dev.tsv").read_text().splitlines()[1:41]]
        with open(folder / relative, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows([text, ("neg", "pos")[int(label)]] for text, label in rows)
    return prepare


def convert_cases() -> list[Case]:
    def state_dict(change: Callable[[dict], dict]) -> Prepare:
        def prepare(folder: Path, fixtures: Fixtures) -> None:
            import torch
            torch.save(change(torch.load(fixtures.upstream, weights_only=True)), folder / "src.pth")
        return prepare

    return [
        Case("convert a missing checkpoint", "3 convert", convert(source="missing.pth")),
        Case("convert binary garbage", "3 convert", convert(source="src.pth"), prepare=write("src.pth", random_bytes(4096))),
        Case("convert a state dict missing a key", "3 convert", convert(source="src.pth"),
             prepare=state_dict(lambda s: {k: v for k, v in s.items() if k != "head.weight"})),
        Case("convert a state dict with an unknown key", "3 convert", convert(source="src.pth"),
             prepare=state_dict(lambda s: {**s, "blocks.0.att.bogus.weight": s["head.weight"]})),
        Case("convert a state dict with NaN weights", "3 convert", convert(source="src.pth"),
             prepare=state_dict(lambda s: {**s, "head.weight": s["head.weight"] * float("nan")})),
        Case("convert --tokenizer garbage", "3 convert",
             ["convert", "spikegpt", "{upstream}", "--tokenizer", "tok.json", "--out", "converted"],
             prepare=write("tok.json", random_bytes(256))),
        Case("convert --tokenizer larger than the vocabulary", "3 convert",
             ["convert", "spikegpt", "{upstream}", "--tokenizer", "tok.json", "--out", "converted"],
             prepare=word_tokenizer("tok.json", 1000)),
        Case("convert --ctx-len 0", "3 convert", convert("--ctx-len", "0")),
        Case("convert a valid upstream state dict", "3 convert", convert(), expect="ok",
             check=folder_loads("converted")),
    ]


def word_tokenizer(relative: str, n_tokens: int) -> Prepare:
    def prepare(folder: Path, fixtures: Fixtures) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers
        tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(n_tokens)}, unk_token="w0"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.save(str(folder / relative))
    return prepare


def fetch_cases() -> list[Case]:
    """No network here: every fetch must fail cleanly and leave the data folder as it was."""
    existing = write("mydata/sst2/dev.tsv", "sentence\tlabel\nmy own data\t1\n")
    return [
        Case("data fetch sst2 without network", "4 fetch", ["data", "fetch", "sst2", "--data-dir", "mydata"],
             check=nothing_at("mydata/sst2")),
        Case("data fetch --force over existing data without network", "4 fetch",
             ["data", "fetch", "sst2", "--data-dir", "mydata", "--force"], prepare=existing),
        Case("data fetch --url a missing local file", "4 fetch",
             ["data", "fetch", "sst2", "--data-dir", "mydata", "--url", "file:///nonexistent/sst2.zip"]),
        Case("data fetch --url a local file with the wrong SHA-256", "4 fetch",
             ["data", "fetch", "sst2", "--data-dir", "mydata", "--url", "file://{case}/a.zip", "--sha256", "00"],
             prepare=write("a.zip", random_bytes(128))),
        Case("data fetch --data-dir a user's file", "4 fetch", ["data", "fetch", "sst2", "--data-dir", "file.txt"],
             prepare=write("file.txt", "x\n")),
        Case("data fetch without a data folder", "4 fetch", ["data", "fetch", "sst2"], env={"QSLM_DATA_DIR": ""}),
    ]


def determinism_cases() -> list[Case]:
    return [
        Case("search twice with --weights latency=2 gives one plan", "5 determinism",
             ["search", "{cls}", "--task", "sst2", "--data-dir", "{data}", "--out", "run{run}", "--weights",
              "quality=1,memory=1,energy=0.5,latency=2", "--calibration-size", "8", "--validation-size", "16",
              "--reported-limit", "16", "--bits", "4,8", "--cache-dir", "cache{run}"],
             expect="ok", repeat=2, check=same_plan_every_run("run")),
    ]


def all_cases() -> list[Case]:
    from hostile_reliability import reliability_cases  # it builds its cases from this module's parts

    cases = (output_folder_cases() + pickle_cases() + limit_cases() + quantize_cases() + model_file_cases()
             + data_file_cases() + convert_cases() + fetch_cases() + determinism_cases() + reliability_cases())
    return [c for c in cases if not c.needs_root or os.geteuid() == 0]


# --- running and classifying ----------------------------------------------------------------------------

def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (symlinks not followed, so a link to a model is hashed once)."""
    hashes = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def run_once(argv: list[str], folder: Path, env: dict[str, str], timeout: float, case: Case
             ) -> tuple[int | None, str, str]:
    """(exit code or None on timeout, stdout, stderr) of one command; with ``case.interrupt``, its signal
    is sent once its moment comes (a negative exit code is the signal that ended the command)."""
    with tempfile.TemporaryFile("w+", errors="replace") as out, tempfile.TemporaryFile("w+", errors="replace") as err:
        process = subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=err, text=True)
        started = time.monotonic()
        if case.interrupt is not None:
            wait_for_moment(process, folder, case.interrupt[0], started + timeout)
            if process.poll() is None:
                process.send_signal(case.interrupt[1])
        try:
            code = process.wait(timeout=max(1.0, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


def wait_for_moment(process: subprocess.Popen, folder: Path, moment: float | str, deadline: float) -> None:
    """Until ``moment`` seconds have passed, or a file matching the glob ``moment`` exists in ``folder``
    (e.g. the staging folder of the final write), or the process has ended."""
    started = time.monotonic()
    while process.poll() is None and time.monotonic() < deadline:
        if isinstance(moment, float) and time.monotonic() - started >= moment:
            return
        if isinstance(moment, str) and any(folder.glob(moment)):
            return
        time.sleep(0.005)


def out_argument(argv: list[str], folder: Path) -> Path | None:
    """The folder ``--out`` names, inside the case folder (None when there is none)."""
    if "--out" not in argv[:-1]:
        return None
    value = argv[argv.index("--out") + 1]
    return None if not value or Path(value).is_absolute() else folder / value


def run_case(case: Case, index: int, fixtures: Fixtures, python: str, timeout: float) -> Outcome:
    folder = fixtures.root / "cases" / f"{index:03d}"
    folder.mkdir(parents=True)
    shutil.copytree(fixtures.models, folder / "models")
    if case.prepare:
        case.prepare(folder, fixtures)
    before = snapshot(folder, fixtures.data)
    # ``replaced`` names files or globs (``out/*``) the command may rewrite
    exempt = {path for path in before if any(fnmatch.fnmatch(path, str(folder / name)) for name in case.replaced)}
    env = {**os.environ, "HOME": str(folder / "home"), "QSLM_CACHE_DIR": str(folder / "cache"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": str(SEED),
           "PYTHONPATH": str(fixtures.package), "QSLM_DATA_DIR": "", **case.env}
    # An empty value unsets the variable: cases name their data folder, so none reads all of the real data.
    env = {k: v for k, v in env.items() if v != ""}
    codes, stdouts, stderrs = [], [], []
    new_outputs = []  # --out folders that did not exist before the command
    started = time.monotonic()
    for repeat in range(case.repeat):
        paths = {**fixtures.paths(folder), "run": str(repeat)}
        command = [python] if case.program == "python" else [python, "-m", "qslm.cli"]
        argv = [*command, *[arg.format(**paths) for arg in case.args]]
        out = out_argument(argv, folder)
        if out is not None and not out.exists():
            new_outputs.append(out)
        code, stdout, stderr = run_once(argv, folder, env, case.timeout or timeout, case)
        codes.append(code)
        stdouts.append(stdout)
        stderrs.append(stderr)
        if code is None:
            break
    if case.cleanup:
        case.cleanup(folder, fixtures)
    run = CaseRun(case, folder, codes, stdouts, stderrs, time.monotonic() - started)
    after = snapshot(folder, fixtures.data)
    changed = sorted(path for path, digest in before.items() if path not in exempt and after.get(path) != digest)
    left = [str(out.relative_to(folder)) for out in new_outputs if out.exists()]
    outcome, detail = classify(run, changed, (folder / MARKER).exists(), left)
    message = "\n".join(line for line in "\n".join(stderrs).splitlines() if line.strip())[-600:]
    return Outcome(case, outcome, detail, run.code, run.seconds, message)


def classify(run: CaseRun, changed: list[str], pickle_ran: bool, left_behind: list[str]) -> tuple[str, str]:
    case = run.case
    if pickle_ran:
        return RAN_PICKLE, f"{MARKER} was created"
    if changed:
        shown = ", ".join(str(Path(p).relative_to(run.folder)) if p.startswith(str(run.folder)) else p
                          for p in changed[:3])
        return DESTROYED, f"changed or removed: {shown}" + (f" (+{len(changed) - 3})" if len(changed) > 3 else "")
    if None in run.codes:
        return TIMED_OUT, "no exit within the timeout"
    tracebacks = [text for text in run.stderrs if TRACEBACK in text]
    if tracebacks:
        last = [line for line in tracebacks[0].splitlines() if line.strip()][-1]
        return TRACEBACK_OUTCOME, last.strip()[:200]
    worked = all(code in case.ok_codes for code in run.codes)
    if worked:
        problem = case.check(run) if case.check else None
        if problem:
            return WRONG, problem
        if case.expect == "error":
            return WRONG, f"accepted (exit {run.code})"
        return HANDLED, f"exit {run.code}"
    if all(code == 2 for code in run.codes):
        if case.expect == "ok":
            return REFUSED_VALID, last_line(run.stderr)
        if left_behind:
            return LEFT_BEHIND, f"refused, but left {', '.join(left_behind)} behind: {last_line(run.stderr)}"
        if case.says is not None and case.says not in run.stderr:
            return MISLEADING, f"expected {case.says!r} in: {last_line(run.stderr)}"
        return CLEAR, last_line(run.stderr)
    return OTHER_EXIT, f"exit {run.code}: {last_line(run.stderr)}"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(nothing on stderr)"


# --- report ---------------------------------------------------------------------------------------------

def print_report(outcomes: list[Outcome], seconds: float) -> None:
    counts = Counter(o.outcome for o in outcomes)
    categories = sorted({o.case.category for o in outcomes})
    print(f"\n{len(outcomes)} cases in {seconds:.0f} s\n")
    header = ["category", *[name for name in OUTCOMES if counts[name]], "total"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for category in categories + ["all"]:
        chosen = [o for o in outcomes if category in ("all", o.case.category)]
        cells = [str(sum(o.outcome == name for o in chosen)) for name in header[1:-1]]
        label = f"**{category}**" if category == "all" else category
        print("| " + " | ".join([label, *cells, str(len(chosen))]) + " |")
    failures = [o for o in outcomes if o.outcome not in GOOD_OUTCOMES]
    print(f"\n{len(failures)} cases not 'clear error, exit 2' or 'handled correctly' ({{cls}}, {{lm}}: tiny "
          "SpikeGPT classifier / language model folders, {models}: their parent, {data}: the data slice, "
          "{upstream}: an original-SpikeGPT state dict, {tok}: a tokenizer.json):\n")
    for o in failures:
        print(f"- [{o.outcome}] {o.case.name}\n    qslm {' '.join(quote(a) for a in o.case.args)}\n    {o.detail}")
    multi_line = [o for o in outcomes if o.outcome == CLEAR and o.code == 2 and error_lines(o.message) > 1]
    if multi_line:
        print(f"\nnote: {len(multi_line)} refusals print their error over more than one line: "
              + "; ".join(o.case.name for o in multi_line[:8]) + (" ..." if len(multi_line) > 8 else ""))


def error_lines(message: str) -> int:
    """Lines of the error proper: from the ``qslm <command>: error:`` line on (argparse's usage excluded)."""
    lines = message.splitlines()
    start = next((i for i, line in enumerate(lines) if ": error:" in line), len(lines) - 1)
    return len(lines) - start


def quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=,{}%*" for c in arg) else json.dumps(arg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("QSLM_DATA_DIR"),
                        help="the real data folder (default: $QSLM_DATA_DIR)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a case may run (default 300)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the cases whose name contains this text (repeatable)")
    parser.add_argument("--package", type=Path, default=REPO,
                        help="checkout of qslm to probe (default: the one holding this script)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs qslm (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every outcome to this JSON file")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if not args.only or any(text in c.name for text in args.only)]
    if args.list:
        for case in cases:
            print(f"{case.category:14} {case.name}")
        print(f"{len(cases)} cases")
        return 0
    if not args.data_dir:
        parser.error("no data folder: pass --data-dir or set QSLM_DATA_DIR")
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    # A probe started in the background (``&``, nohup) ignores SIGINT, and its cases would inherit that and
    # never see their Ctrl-C: a handled SIGINT is reset to the default in every command it starts.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    package = args.package.resolve()
    sys.path.insert(0, str(package))  # the fixtures are made with the probed copy's own functions
    root = Path(tempfile.mkdtemp(prefix="qslm-hostile-"))
    started = time.monotonic()
    try:
        import torch
        torch.set_num_threads(1)
        fixtures = build_fixtures(package, Path(args.data_dir), root)
        bundled = snapshot(package / "qslm" / "checkpoints")
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_case, case, i, fixtures, args.python, args.timeout)
                       for i, case in enumerate(cases)]
            outcomes = []
            for case, future in zip(cases, futures):
                outcomes.append(future.result())
                o = outcomes[-1]
                print(f"{len(outcomes):3}/{len(cases)} {o.seconds:5.1f}s  {o.outcome:20}  {case.name}", flush=True)
        if snapshot(package / "qslm" / "checkpoints") != bundled:
            print("warning: the bundled models under qslm/checkpoints changed during the probe")
        print_report(outcomes, time.monotonic() - started)
        if args.json:
            Path(args.json).write_text(json.dumps(
                [{"name": o.case.name, "category": o.case.category, "command": o.case.args, "outcome": o.outcome,
                  "detail": o.detail, "exit": o.code, "seconds": round(o.seconds, 1), "stderr": o.message}
                 for o in outcomes], indent=1))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
