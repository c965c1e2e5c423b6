"""Seeded fuzzing of every file loader: mutated config.json, model.safetensors, quant_plan.json, journal.jsonl,
SST-2 and WikiText-2 files either load into a valid result or raise QslmError, never another exception."""
from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qslm.checkpoint import WEIGHTS_FILE, write_quantized_folder, load_model, save_model
from qslm.data.tokenizer import train_tokenizer
from qslm.errors import QslmError
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.models.zoo import CONFIG_FILE
from qslm.quant.pack import PLAN_FILE
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.quant.neuron_spec import NeuronSpec
from qslm.search.journal import Journal, assignment_key
from qslm.tasks.datasets.sst2 import load_sst2
from qslm.tasks.datasets.wikitext import load_wikitext

CASES = 60  # mutations per file kind
# Values a field is swapped for: other types, out-of-range and non-finite numbers, huge sizes.
ODD_VALUES = ["4", 4.0, 2.5, True, False, None, [], [4], {}, {"bits": 4}, -1, 0, 1, 3, 7, 10 ** 30, 2 ** 63,
              1e308, -1e308, float("nan"), float("inf"), "", "x" * 300, "per-tensor", "group", "mse"]
JOURNAL_HEADER = {"model": "abc", "task": "sst2", "bits": [2, 4, 8]}


class Pairs(list):
    """A JSON object written as these (key, value) pairs, so a key can appear twice."""


def to_text(value) -> str:
    if isinstance(value, (Pairs, dict)):
        items = value if isinstance(value, Pairs) else value.items()
        return "{" + ", ".join(f"{json.dumps(key)}: {to_text(item)}" for key, item in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_text(item) for item in value) + "]"
    return json.dumps(value)


def containers(value, path=()):
    """Paths of every object and array inside ``value`` (itself included)."""
    if isinstance(value, (dict, list)):
        yield path
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from containers(item, (*path, key))


def mutate_json(value, rng: random.Random):
    """``value`` with one change at a random place: a key deleted or given twice, a value swapped for an
    odd one, or the whole document replaced by something that is not an object."""
    if rng.random() < 0.05:
        return rng.choice([[value], "text", 3, None])
    value = json.loads(json.dumps(value))
    paths = list(containers(value))
    path = rng.choice(paths)
    parent = value
    for key in path:
        parent = parent[key]
    if not parent:
        return rng.choice(ODD_VALUES)
    key = rng.choice(list(parent)) if isinstance(parent, dict) else rng.randrange(len(parent))
    action = rng.choice(["delete", "duplicate", "swap", "swap", "swap"])
    if action == "delete":
        del parent[key]
    elif action == "swap":
        parent[key] = rng.choice(ODD_VALUES)
    elif isinstance(parent, dict):  # duplicate: the same key again, with an odd value or the same one
        twice = Pairs([*parent.items(), (key, rng.choice([parent[key], *ODD_VALUES]))])
        if not path:
            return twice
        grand = value
        for step in path[:-1]:
            grand = grand[step]
        grand[path[-1]] = twice
    else:
        parent.append(parent[key])
    return value


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes(rng.randbytes(rng.randint(1, 64)))
    pos = rng.randrange(len(data))
    action = rng.choice(["flip", "truncate", "insert", "delete", "repeat"])
    if action == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1:]
    if action == "truncate":
        return data[:pos]
    if action == "insert":
        return data[:pos] + rng.randbytes(rng.randint(1, 16)) + data[pos:]
    end = min(len(data), pos + rng.randint(1, 64))
    if action == "delete":
        return data[:pos] + data[end:]
    return data[:end] + data[pos:end] + data[end:]


def mutated_json_text(original: str, rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return mutate_bytes(original.encode(), rng)
    return to_text(mutate_json(json.loads(original), rng)).encode()


def fuzz(write: Callable[[random.Random], None], load: Callable[[], object], check: Callable[[object], None],
         seed: int, cases: int = CASES) -> None:
    """Write ``cases`` mutated files and load each: a result must pass ``check``, an error must be a QslmError."""
    rng = random.Random(seed)
    for case in range(cases):
        write(rng)
        try:
            result = load()
        except QslmError as err:
            assert str(err), f"case {case}: empty message"
            continue
        except Exception as err:  # noqa: BLE001 - the point of the test: say which case broke, with what
            pytest.fail(f"seed {seed} case {case}: {type(err).__name__}: {err}")
        check(result)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    tokenizer = train_tokenizer(["a fine film", "a dull film", "one long string of cliches"], vocab_size=270)
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=tokenizer.get_vocab_size(), n_embd=8, n_layer=1, ctx_len=16,
                                    task="classification"))
    return save_model(tmp_path_factory.mktemp("fuzz") / "model", model.eval(), tokenizer)


@pytest.fixture(scope="module")
def quantized_folder(model_folder, tmp_path_factory) -> Path:
    loaded = load_model(model_folder)
    plan = QuantPlan({"emb": QuantSpec(4), "classifier": QuantSpec(3, "group", 4, False)},
                     {"blocks.0.lif1": NeuronSpec(8)})
    return write_quantized_folder(loaded.model, plan, loaded.tokenizer, tmp_path_factory.mktemp("fuzz") / "quantized")


def loaded_ok(loaded) -> None:
    assert isinstance(loaded.model, torch.nn.Module) and not loaded.model.training
    assert all(bool(torch.isfinite(t).all()) for t in loaded.model.state_dict().values() if t.is_floating_point())


def test_mutated_configs(model_folder, tmp_path):
    folder = shutil.copytree(model_folder, tmp_path / "model")
    original = (model_folder / CONFIG_FILE).read_text()
    fuzz(lambda rng: (folder / CONFIG_FILE).write_bytes(mutated_json_text(original, rng)),
         lambda: load_model(folder), loaded_ok, seed=1)


def restructured_header(header: dict, rng: random.Random) -> dict:
    """``header`` with one tensor retyped or reshaped to the same byte size, so the file stays readable
    and only the comparison with the config can tell."""
    header = json.loads(json.dumps(header))
    name = rng.choice([key for key in header if key != "__metadata__"])
    info = header[name]
    if rng.random() < 0.5 and info["dtype"] in ("F32", "I32"):
        info["dtype"] = "I32" if info["dtype"] == "F32" else "F32"
    else:
        info["shape"] = list(reversed(info["shape"])) + ([1] if rng.random() < 0.5 else [])
    return header


def test_mutated_weights(model_folder, tmp_path):
    folder = shutil.copytree(model_folder, tmp_path / "model")
    original = (model_folder / WEIGHTS_FILE).read_bytes()
    header_end = 8 + int.from_bytes(original[:8], "little")
    header = json.loads(original[8:header_end])

    def write(rng: random.Random) -> None:
        action = rng.choice(["header-bytes", "bytes", "restructure", "non-finite"])
        if action == "header-bytes":  # where a change moves, retypes or reshapes tensors
            data = mutate_bytes(original[:header_end], rng) + original[header_end:]
        elif action == "bytes":
            data = mutate_bytes(original, rng)
        elif action == "restructure":
            text = json.dumps(restructured_header(header, rng)).encode()
            data = len(text).to_bytes(8, "little") + text + original[header_end:]
        else:  # one float32 of some tensor made NaN or infinite
            at = header_end + 4 * rng.randrange((len(original) - header_end) // 4)
            data = original[:at] + rng.choice([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\xff"]) + original[at + 4:]
        (folder / WEIGHTS_FILE).write_bytes(data)

    fuzz(write, lambda: load_model(folder), loaded_ok, seed=2)


def test_mutated_plans(quantized_folder, model_folder, tmp_path):
    folder = shutil.copytree(quantized_folder, tmp_path / "quantized")
    original = (quantized_folder / PLAN_FILE).read_text()
    model = load_model(model_folder).model
    fuzz(lambda rng: (folder / PLAN_FILE).write_bytes(mutated_json_text(original, rng)),
         lambda: load_model(folder), loaded_ok, seed=3)

    def load_and_validate() -> QuantPlan:
        plan = QuantPlan.load(folder / PLAN_FILE)
        plan.validate(model)
        return plan

    def plan_ok(plan: QuantPlan) -> None:
        assert all(spec is None or isinstance(spec.bits, int) for spec in plan.units.values())
        assert all(isinstance(spec.bits, int) for spec in plan.neurons.values())

    fuzz(lambda rng: (folder / PLAN_FILE).write_bytes(mutated_json_text(original, rng)), load_and_validate,
         plan_ok, seed=4)


def test_mutated_journals(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, JOURNAL_HEADER)
    for bits in (2, 4, 8):
        journal.add({"key": assignment_key({"head": bits}), "metric": 0.5 + bits / 100, "latency_s": 0.1})
    lines = path.read_text().splitlines()

    def write(rng: random.Random) -> None:
        mutated = list(lines)
        at = rng.randrange(len(mutated))
        if rng.random() < 0.2:
            mutated.insert(at, to_text(rng.choice(ODD_VALUES)))
        else:
            mutated[at] = mutated_json_text(mutated[at], rng).decode("utf-8", "surrogateescape")
        path.write_bytes("\n".join(mutated).encode("utf-8", "surrogateescape") + b"\n" * rng.randint(0, 1))

    def journal_ok(loaded: Journal) -> None:
        assert all(isinstance(key, str) and isinstance(entry, dict) for key, entry in loaded.entries.items())

    fuzz(write, lambda: Journal(path, JOURNAL_HEADER), journal_ok, seed=5)


def test_mutated_sst2_files(data_dir, tmp_path):
    (tmp_path / "sst2").mkdir()
    original = "".join((data_dir / "sst2" / "dev.tsv").read_text().splitlines(keepends=True)[:30]).encode()

    def examples_ok(examples) -> None:
        assert examples and all(ex.label in (0, 1) and isinstance(ex.sentence, str) for ex in examples)

    def write(rng: random.Random) -> None:
        data = original
        for _ in range(rng.randint(1, 3)):
            data = mutate_bytes(data, rng)
        (tmp_path / "sst2" / "dev.tsv").write_bytes(data)

    fuzz(write, lambda: load_sst2("dev", tmp_path), examples_ok, seed=6)


def test_mutated_wikitext_files(data_dir, tmp_path):
    (tmp_path / "wikitext-2").mkdir()
    original = "".join((data_dir / "wikitext-2" / "valid.txt").read_text().splitlines(keepends=True)[:20]).encode()

    def write(rng: random.Random) -> None:
        data = original if rng.random() < 0.9 else b""
        for _ in range(rng.randint(1, 3)):
            data = mutate_bytes(data, rng)
        (tmp_path / "wikitext-2" / "valid.txt").write_bytes(data)

    def text_ok(text) -> None:
        assert isinstance(text, str) and text.strip()

    fuzz(write, lambda: load_wikitext("valid", tmp_path), text_ok, seed=7)
