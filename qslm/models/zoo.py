"""The architectures qslm ships and the bundled checkpoints: names, configs, building a model.

A model is named either by a bundled name (``spikegpt-sst2``) or by a path to a folder; the config
carries ``arch`` so loading never guesses what to build. Reading and writing model folders is
``qslm.checkpoint``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from torch import nn

from ..errors import QslmError
from .spikegpt import SpikeGPT, SpikeGPTConfig
from .spiking_encoder import SpikingEncoder, SpikingEncoderConfig

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
ARCHITECTURES = {
    "spikegpt": (SpikeGPTConfig, SpikeGPT),
    "spiking-encoder": (SpikingEncoderConfig, SpikingEncoder),
}
# The head each architecture trains for language modelling: SpikeGPT is causal (next token), the spiking
# encoder is bidirectional (masked tokens).
LANGUAGE_MODEL_TASK = {"spikegpt": "lm", "spiking-encoder": "mlm"}
CONFIG_FILE = "config.json"  # what makes a folder a model folder (qslm.checkpoint reads and writes them)


def bundled_names() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_model_path(ref: str | os.PathLike) -> Path:
    candidate = Path(ref).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if str(ref) in bundled_names():
        return (BUNDLED_DIR / str(ref)).resolve()
    raise QslmError(f"model {str(ref)!r} is neither a model folder nor a bundled model "
                    f"(bundled: {', '.join(bundled_names()) or 'none'})")


def config_from_dict(raw: object, source: Path):
    """The config dataclass ``raw`` (config.json's content) describes; every field is checked by the
    dataclass itself, and errors name ``source``."""
    if not isinstance(raw, dict):
        raise QslmError(f"{source}: expected a JSON object of config fields (with 'arch'), got "
                        f"{type(raw).__name__} {raw!r:.60}")
    arch = raw.get("arch")
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise QslmError(f"{source}: unknown arch {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    config_cls, _ = ARCHITECTURES[arch]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise QslmError(f"{source}: unknown config keys {unknown} for arch {arch!r}")
    try:
        return config_cls(**raw)
    except QslmError as err:
        raise QslmError(f"{source}: {err}") from None


def evaluation_task(config, path: Path) -> str:
    """The kind of task a model is evaluated, profiled and searched on: ``language-modeling`` for a language
    model, ``text-classification`` for a classifier (which data, the presets decide). A masked-LM
    pre-training stage has neither."""
    task = getattr(config, "task", "classification")
    if task == "mlm":
        raise QslmError(f"model {path} is a masked-language-model pre-training stage, not a classifier or a "
                        f"language model; fine-tune it first: qslm train --arch {config.arch} --task sst2 "
                        f"--init {path} --out OUT")
    return "language-modeling" if task == "lm" else "text-classification"


def build_model(config) -> nn.Module:
    _, model_cls = ARCHITECTURES[config.arch]
    return model_cls(config)


