"""Shared fixtures: the real data folder, a small slice of it, and tiny model folders.

Tests read real data from ``QSLM_DATA_DIR`` (CI sets it to ``../shared/data``). Model fixtures are
tiny (d=32, 2 blocks) and random, so the whole suite stays fast on two CPU cores.
"""
from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest
import torch

from qslm.checkpoint import save_model
from qslm.data.tokenizer import train_tokenizer
from qslm.models.spikegpt import SpikeGPT, SpikeGPTConfig
from qslm.models.spiking_encoder import SpikingEncoder, SpikingEncoderConfig

REPO = Path(__file__).resolve().parent.parent

# The models in tests are tiny: one thread is faster than two fighting over small ops, and it keeps
# the suite quick when the machine is busy.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder. Missing data is a failure, not a skip: CI must exercise real files."""
    path = Path(os.environ.get("QSLM_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "sst2" / "dev.tsv").is_file():
        pytest.fail(f"real data not found in {path}: set QSLM_DATA_DIR to the shared data folder")
    return path


@pytest.fixture(scope="session")
def small_data_dir(data_dir, tmp_path_factory) -> Path:
    """A slice of the real data in the standard layout (first lines of each file)."""
    root = tmp_path_factory.mktemp("data")
    (root / "sst2").mkdir()
    for split, lines in (("train", 3001), ("dev", 201)):
        src = (data_dir / "sst2" / f"{split}.tsv").read_text().splitlines(keepends=True)
        (root / "sst2" / f"{split}.tsv").write_text("".join(src[:lines]))
    (root / "wikitext-2").mkdir()
    for split, lines in (("valid", 300), ("test", 60)):
        src = (data_dir / "wikitext-2" / f"{split}.txt").read_text().splitlines(keepends=True)
        (root / "wikitext-2" / f"{split}.txt").write_text("".join(src[:lines]))
    (root / "brown").mkdir()
    src = (data_dir / "brown" / "brown.txt").read_text().splitlines(keepends=True)
    (root / "brown" / "brown.txt").write_text("".join(src[:2000]))
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer(small_data_dir):
    texts = (small_data_dir / "brown" / "brown.txt").read_text().splitlines()
    texts += (small_data_dir / "sst2" / "train.tsv").read_text().splitlines()
    return train_tokenizer(texts, vocab_size=400)


def _save(model, tokenizer, folder: Path) -> Path:
    model.eval()
    return save_model(folder, model, tokenizer)


@pytest.fixture(scope="session")
def tiny_lm(tiny_tokenizer, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = SpikeGPTConfig(vocab_size=tiny_tokenizer.get_vocab_size(), n_embd=32, n_layer=2, ctx_len=32)
    return _save(SpikeGPT(cfg), tiny_tokenizer, tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="session")
def tiny_classifier(tiny_tokenizer, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = SpikeGPTConfig(vocab_size=tiny_tokenizer.get_vocab_size(), n_embd=32, n_layer=2, ctx_len=48,
                         task="classification")
    return _save(SpikeGPT(cfg), tiny_tokenizer, tmp_path_factory.mktemp("models") / "tiny-classifier")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_tokenizer, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = SpikingEncoderConfig(vocab_size=tiny_tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=2,
                               max_len=48, time_steps=2)
    return _save(SpikingEncoder(cfg), tiny_tokenizer, tmp_path_factory.mktemp("models") / "tiny-encoder")


@pytest.fixture(scope="session")
def tiny_masked_lm(tiny_tokenizer, tmp_path_factory) -> Path:
    """A spiking encoder's masked-LM pre-training stage: not evaluable until fine-tuned."""
    torch.manual_seed(0)
    cfg = SpikingEncoderConfig(vocab_size=tiny_tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=2,
                               max_len=48, time_steps=2, task="mlm")
    return _save(SpikingEncoder(cfg), tiny_tokenizer, tmp_path_factory.mktemp("models") / "tiny-masked-lm")


def upstream_spikegpt_state(vocab_size: int, n_embd: int, n_layer: int, dtype: torch.dtype = torch.bfloat16,
                            seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the key names, shapes and layout of the original SpikeGPT's ``GPT``
    (github.com/ridgerchu/SpikeGPT, src/model.py), every tensor in ``dtype`` as a release would store it.
    Scales are chosen so the LIF neurons fire on some tokens and not on others."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape, std=1.0, mean=0.0):
        return (mean + std * torch.randn(*shape, generator=generator)).to(dtype)

    def uniform(*shape):
        return torch.rand(*shape, generator=generator).to(dtype)

    state = {"emb.weight": normal(vocab_size, n_embd)}
    for i in range(n_layer):
        p = f"blocks.{i}."
        for norm in (["ln0", "ln1", "ln2"] if i == 0 else ["ln1", "ln2"]):
            state[f"{p}{norm}.weight"] = normal(n_embd, std=0.1, mean=1.0)
            state[f"{p}{norm}.bias"] = normal(n_embd, std=0.1)
        state[f"{p}att.time_decay"] = normal(n_embd)
        state[f"{p}att.time_first"] = normal(n_embd, std=0.5)
        for mix in ("k", "v", "r"):
            state[f"{p}att.time_mix_{mix}"] = uniform(1, 1, n_embd)
        for name in ("key", "value", "receptance", "output"):
            state[f"{p}att.{name}.weight"] = normal(n_embd, n_embd, std=0.5)
        for mix in ("k", "r"):
            state[f"{p}ffn.time_mix_{mix}"] = uniform(1, 1, n_embd)
        state[f"{p}ffn.key.weight"] = normal(4 * n_embd, n_embd, std=0.5)
        state[f"{p}ffn.receptance.weight"] = normal(n_embd, n_embd, std=0.5)
        state[f"{p}ffn.value.weight"] = normal(n_embd, 4 * n_embd, std=0.2)
    state["ln_out.weight"] = normal(n_embd, std=0.1, mean=1.0)
    state["ln_out.bias"] = normal(n_embd, std=0.1)
    state["head.weight"] = normal(vocab_size, n_embd, std=0.5)
    return state


@pytest.fixture
def upstream_spikegpt():
    """``make(vocab_size, n_embd, n_layer, dtype, seed)``: see ``upstream_spikegpt_state``."""
    return upstream_spikegpt_state


@pytest.fixture
def word_tokenizer_file(tmp_path):
    """``make(n_tokens)``: a Hugging Face tokenizer.json with exactly ``n_tokens`` tokens ("w0", "w1", ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    def make(n_tokens: int) -> Path:
        vocab = {f"w{i}": i for i in range(n_tokens)}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        path = tmp_path / f"tokenizer-{n_tokens}.json"
        tokenizer.save(str(path))
        return path

    return make


class CreatesMarkerWhenUnpickled:
    """What a hostile checkpoint holds: unpickling it calls ``open(marker, "w")``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def hostile_checkpoint():
    """``write(path, marker, legacy=False)``: torch.save a dict whose unpickling would create ``marker``."""

    def write(path: Path, marker: Path, legacy: bool = False) -> Path:
        payload = {"emb.weight": torch.ones(2, 2), "payload": CreatesMarkerWhenUnpickled(str(marker))}
        torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
        return path

    return write
