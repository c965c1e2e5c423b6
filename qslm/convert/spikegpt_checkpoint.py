"""Convert a checkpoint of the original SpikeGPT (github.com/ridgerchu/SpikeGPT) into a qslm model folder.

The format. ``train.py`` and ``src/trainer.py`` save ``model.state_dict()`` of ``src/model.py``'s ``GPT``
with ``torch.save``: a plain dict of tensors, which ``src/model_run.py`` loads with ``torch.load`` and reads
key by key (no wrapper dict, no prefix). Keys: ``emb.weight`` [vocab, C]; ``blocks.{i}.ln1/ln2`` (and ``blocks.0.ln0``);
``blocks.{i}.att.{time_decay, time_first}`` [C], ``att.time_mix_{k,v,r}`` [1, 1, C],
``att.{key,value,receptance,output}.weight`` [C, C]; ``blocks.{i}.ffn.time_mix_{k,r}`` [1, 1, C],
``ffn.key.weight`` [4C, C], ``ffn.receptance.weight`` [C, C], ``ffn.value.weight`` [C, 4C]; ``ln_out``;
``head.weight`` [vocab, C]. The LIF neurons, the surrogate ``atan`` module, dropout and the
``time_shift`` padding hold no tensors. These names are the ones qslm's SpikeGPT uses.

What upstream does with the tensors, and what this converter does about it:

* ``time_decay`` is stored raw; both the training kernel (``WKV.forward``) and the runner use
  ``-exp(time_decay)``. qslm's ``wkv`` does the same, so it is copied as is. ``time_first`` is used as is.
* The runner squeezes the ``time_*`` tensors and casts the rest to the float mode (fp32 on CPU);
  here every tensor becomes float32 (exact from bf16/fp16) in the shape qslm expects.
* ``src/model.py`` feeds the embeddings through spikingjelly's ``ATan`` surrogate, whose forward is the
  Heaviside step ``emb >= 0``; the runner does so only for the 77-symbol character model
  (``vocab_size == 77``) and reads the 50277-token models' embeddings as real values. Since the step
  acts element-wise on a looked-up row, it is applied to the embedding table once (``--binary-embedding``:
  ``auto`` follows the runner's rule, ``on``/``off`` force it).
* Neurons: ``MultiStepLIFNode(tau=2, v_threshold=1)`` after each time-mix and channel-mix (earlier
  revisions used ``v_threshold=0.1``), hard reset to 0, the token axis as time, exactly qslm's ``LIF``;
  ``--tau``/``--v-threshold`` set other values. ``ctx_len`` is not in the tensors (``--ctx-len``, 1024 as
  upstream).
* The runner divides ``att.output`` and ``ffn.value`` of block i by ``2 ** (i // 6)`` and halves the
  residual after every 6th block (``RWKV_RESCALE_LAYER``), an fp16 range guard from RWKV. For RWKV
  that is exact; with spiking residuals it is not (the LIF inputs shrink, the spikes added do not), and
  qslm's SpikeGPT has no residual scaling. The converter keeps the training-time blocks of
  ``src/model.py``; for 6 blocks or fewer the guard changes nothing and the converted model computes
  the runner's logits, for deeper models the difference is printed as a note.

Keys qslm's SpikeGPT cannot represent are refused, with the list: a copy head (``head_q``/``head_k``,
``RWKV_HEAD_QK_DIM > 0``), position embeddings (``pos_emb*``), ``RWKV-ffnPre``'s ``blocks.0.ffnPre``.
Dropped with a note, because nothing reads them at inference: tensors under a ``time_shift``
(``nn.ZeroPad2d`` only pads) and ``copy_mask`` without a copy head.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..checkpoint import save_model
from ..data.tokenizer import load_tokenizer
from ..errors import QslmError
from ..models.config_checks import MAX_LAYERS, MAX_MULT, MAX_VOCAB, MAX_WIDTH
from ..models.spikegpt import SpikeGPT, SpikeGPTConfig
from .torch_checkpoint import load_state_dict, name_listing

BINARY_EMBEDDING_CHOICES = ("auto", "on", "off")
CHARACTER_VOCAB_SIZE = 77  # the runner binarizes the embeddings of this (BookCorpus, character) model only
RESCALE_EVERY = 6  # src/model_run.py's RWKV_RESCALE_LAYER
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")

# Upstream features qslm's SpikeGPT has no counterpart for: (key pattern, what it is).
UNREPRESENTABLE = [
    (re.compile(r"head_[qk]\."), "a copy head (RWKV_HEAD_QK_DIM > 0) that adds to the logits"),
    (re.compile(r"pos_emb"), "a learned position embedding"),
    (re.compile(r"blocks\.0\.ffnPre\."), "model_type 'RWKV-ffnPre' (a channel-mix in place of block 0's time-mix)"),
]
# Tensors nothing reads at inference: (key pattern, why).
UNUSED = [
    (re.compile(r"blocks\.\d+\.(att|ffn)\.time_shift\."), "time_shift is nn.ZeroPad2d, whose forward only pads"),
    (re.compile(r"copy_mask$"), "copy_mask is read only by a copy head, which this checkpoint has none of"),
]


@dataclass
class ConversionResult:
    path: Path
    config: SpikeGPTConfig
    binary_embedding: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "config": dataclasses.asdict(self.config),
                "binary_embedding": self.binary_embedding, "notes": self.notes}


def convert_spikegpt(checkpoint: str | Path, tokenizer: str | Path, out: str | Path, *, ctx_len: int = 1024,
                     tau: float = 2.0, v_threshold: float = 1.0, binary_embedding: str = "auto") -> ConversionResult:
    """Write ``out`` (config.json, model.safetensors, tokenizer.json) from an upstream SpikeGPT checkpoint."""
    checkpoint, tokenizer_path, out = Path(checkpoint), Path(tokenizer), Path(out)
    check_options(ctx_len, tau, v_threshold, binary_embedding)
    check_out_folder(out)
    notes: list[str] = []
    state = load_state_dict(checkpoint, notes)
    tok = load_tokenizer(tokenizer_path)
    state = drop_unused(refuse_unrepresentable(state, checkpoint), notes)
    config = infer_config(state, checkpoint, ctx_len=ctx_len, tau=tau, v_threshold=v_threshold)
    check_tokenizer_fits(tok, tokenizer_path, config.vocab_size)
    with torch.device("meta"):  # shapes only: the checkpoint's tensors become the parameters, no init work
        model = SpikeGPT(config)
    weights = match_to_model(state, model, checkpoint, notes)
    del state  # the float32 copies are all that is needed from here on
    binarize = binary_embedding == "on" or (binary_embedding == "auto" and config.vocab_size == CHARACTER_VOCAB_SIZE)
    if binarize:
        # heaviside(emb(idx)) == emb'(idx) with emb' = heaviside(emb.weight): the step is element-wise.
        weights["emb.weight"] = (weights["emb.weight"] >= 0).to(torch.float32)
        notes.append("embeddings binarized (emb.weight >= 0), as upstream's ATan spike on the embedding")
    if config.n_layer > RESCALE_EVERY:
        notes.append(f"upstream's runner (src/model_run.py) halves the residual after every {RESCALE_EVERY}th "
                     f"block for fp16 range, which changes a spiking model's output; this conversion computes "
                     f"the training-time model (src/model.py), without it")
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    save_model(out, model, tok)
    return ConversionResult(out, config, binarize, notes)


def check_options(ctx_len: int, tau: float, v_threshold: float, binary_embedding: str) -> None:
    if ctx_len < 1:
        raise QslmError(f"ctx_len must be a positive number of tokens, got {ctx_len}")
    if not tau > 1.0:
        raise QslmError(f"LIF tau must be greater than 1, got {tau}")
    if not v_threshold > 0.0:
        raise QslmError(f"LIF v_threshold must be positive, got {v_threshold}")
    if binary_embedding not in BINARY_EMBEDDING_CHOICES:
        raise QslmError(f"binary_embedding must be one of {', '.join(BINARY_EMBEDDING_CHOICES)}, "
                        f"got {binary_embedding!r}")


def check_out_folder(out: Path) -> None:
    """Refuse to replace anything: ``out`` may be missing or an empty folder."""
    if out.is_dir():
        if any(out.iterdir()):
            raise QslmError(f"output folder {out} already exists and is not empty; choose a new folder")
    elif out.exists():
        raise QslmError(f"output {out} exists and is not a folder")


def refuse_unrepresentable(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    problems = []
    for pattern, what in UNREPRESENTABLE:
        keys = sorted(key for key in state if pattern.match(key))
        if keys:
            problems.append(f"{what}: {name_listing(keys)}")
    if problems:
        raise QslmError(f"{source} uses features qslm's SpikeGPT cannot represent: " + "; ".join(problems))
    return state


def drop_unused(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    kept = dict(state)
    for pattern, why in UNUSED:
        keys = sorted(key for key in kept if pattern.search(key))
        if keys:
            notes.append(f"dropped {name_listing(keys)}: {why}")
            for key in keys:
                del kept[key]
    return kept


def infer_config(state: dict[str, torch.Tensor], source: Path, *, ctx_len: int, tau: float,
                 v_threshold: float) -> SpikeGPTConfig:
    """Vocabulary and width from ``emb.weight``, depth from the ``blocks.N.`` keys, FFN width from
    block 0's ``ffn.key.weight``; the other shapes are checked against the model this describes."""
    emb = required(state, "emb.weight", source, "the token embedding")
    if emb.dim() != 2:
        raise QslmError(f"{source}: emb.weight has shape {list(emb.shape)}; expected [vocab, width]")
    vocab_size, width = emb.shape
    # checked here, where the tensor they come from is known: every other shape is compared with these
    if not (1 <= vocab_size <= MAX_VOCAB and 1 <= width <= MAX_WIDTH):
        raise QslmError(f"{source}: emb.weight has shape {list(emb.shape)}; qslm's SpikeGPT takes [vocab, width] "
                        f"with a vocabulary of 1 to {MAX_VOCAB} tokens and a width of 1 to {MAX_WIDTH}")
    indices = sorted({int(m.group(1)) for key in state if (m := BLOCK_KEY.match(key))})
    if not indices:
        raise QslmError(f"{source} has no blocks.N. keys; expected the blocks of a SpikeGPT")
    if indices[-1] >= MAX_LAYERS:
        raise QslmError(f"{source} has keys of blocks.{indices[-1]}; qslm's SpikeGPT takes at most {MAX_LAYERS} "
                        f"blocks (blocks.0 to blocks.{MAX_LAYERS - 1})")
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise QslmError(f"{source}: blocks {name_listing([str(i) for i in missing])} are missing "
                        f"(found blocks up to {indices[-1]})")
    ffn_key = required(state, "blocks.0.ffn.key.weight", source, "block 0's channel-mix key")
    if ffn_key.dim() != 2 or ffn_key.shape[1] != width or ffn_key.shape[0] % width \
            or not 1 <= ffn_key.shape[0] // width <= MAX_MULT:
        raise QslmError(f"{source}: blocks.0.ffn.key.weight has shape {list(ffn_key.shape)}; qslm's SpikeGPT "
                        f"needs [k * {width}, {width}] with k from 1 to {MAX_MULT} (an FFN width that is a "
                        f"multiple of the model width {width}, from emb.weight)")
    return SpikeGPTConfig(vocab_size=int(vocab_size), n_embd=int(width), n_layer=len(indices), ctx_len=ctx_len,
                          ffn_mult=int(ffn_key.shape[0] // width), task="lm", tau=tau, v_threshold=v_threshold)


def required(state: dict[str, torch.Tensor], key: str, source: Path, what: str) -> torch.Tensor:
    if key not in state:
        raise QslmError(f"{source} is missing {key} ({what})")
    return state[key]


def check_tokenizer_fits(tokenizer: Tokenizer, path: Path, vocab_size: int) -> None:
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise QslmError(f"tokenizer {path} has {size} tokens but the checkpoint's embedding has only "
                        f"{vocab_size} rows; use the tokenizer the model was trained with")


def match_to_model(state: dict[str, torch.Tensor], model: SpikeGPT, source: Path, notes: list[str]
                   ) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors as float32 in the shapes ``model`` expects; every key must be used."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unexpected or missing:
        parts = ([f"keys qslm's SpikeGPT has no place for: {name_listing(unexpected)}"] if unexpected else []) + \
                ([f"missing keys: {name_listing(missing)}"] if missing else [])
        raise QslmError(f"{source} does not match a {model.config.n_layer}-block SpikeGPT of width "
                        f"{model.config.n_embd}: " + "; ".join(parts))
    weights, wrong, not_float, cast = {}, [], [], set()
    for key, target in expected.items():
        tensor = state[key]
        if not tensor.is_floating_point():
            not_float.append(f"{key} ({str(tensor.dtype).replace('torch.', '')})")
            continue
        if tensor.shape != target.shape and not squeezes_to_same(tensor.shape, target.shape):
            wrong.append(f"{key} {list(tensor.shape)} (expected {list(target.shape)})")
            continue
        if tensor.dtype != torch.float32:
            cast.add(str(tensor.dtype).replace("torch.", ""))
        weights[key] = tensor.to(torch.float32).reshape(target.shape).contiguous()
    if not_float:
        raise QslmError(f"{source}: tensors that are not floating point: {name_listing(not_float)}")
    if wrong:
        raise QslmError(f"{source}: shapes qslm's SpikeGPT cannot take: {name_listing(wrong)}")
    not_finite = sorted(key for key, tensor in weights.items() if not torch.isfinite(tensor).all())
    if not_finite:
        raise QslmError(f"{source}: tensors with NaN or infinite values: {name_listing(not_finite)}")
    if cast:
        notes.append(f"cast {', '.join(sorted(cast))} tensors to float32 (exact)")
    return weights


def squeezes_to_same(shape: torch.Size, target: torch.Size) -> bool:
    """``[C]`` and ``[1, 1, C]`` hold the same values; upstream's runner squeezes the time_* tensors."""
    return [d for d in shape if d != 1] == [d for d in target if d != 1]
