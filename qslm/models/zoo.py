"""Model folders (``config.json`` + ``model.safetensors`` + ``tokenizer.json``) and bundled checkpoints.

A model is named either by a bundled name (``spikegpt-sst2``) or by a path to a folder.
The config carries ``arch`` so loading never guesses what to build.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn

from ..data.tokenizer import load_tokenizer
from ..errors import QslmError
from ..outputs import OutputFolder
from ..jsonfile import read_json_file
from .shapes import state_shapes
from .spikegpt import SpikeGPT, SpikeGPTConfig
from .spiking_encoder import SpikingEncoder, SpikingEncoderConfig
from .weights import check_finite, header_problems, read_header, read_state_dict

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
ARCHITECTURES = {
    "spikegpt": (SpikeGPTConfig, SpikeGPT),
    "spiking-encoder": (SpikingEncoderConfig, SpikingEncoder),
}
# The head each architecture trains for language modelling: SpikeGPT is causal (next token), the spiking
# encoder is bidirectional (masked tokens).
LANGUAGE_MODEL_TASK = {"spikegpt": "lm", "spiking-encoder": "mlm"}
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


@dataclass
class LoadedModel:
    model: nn.Module
    config: object
    tokenizer: Tokenizer
    path: Path


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
    """The task a model is evaluated, profiled and searched on: ``wikitext2`` for a language model,
    ``sst2`` for a classifier. A masked-LM pre-training stage has no such task."""
    task = getattr(config, "task", "classification")
    if task == "mlm":
        raise QslmError(f"model {path} is a masked-language-model pre-training stage, not a classifier or a "
                        f"language model; fine-tune it first: qslm train --arch {config.arch} --task sst2 "
                        f"--init {path} --out OUT")
    return "wikitext2" if task == "lm" else "sst2"


def check_task(loaded: LoadedModel, task: str | None, action: str) -> str:
    """The task to run ``loaded`` on: ``task``, or the model's own when None. A classifier asked for
    ``wikitext2`` or a language model for ``sst2`` is refused, naming ``action`` (e.g. "evaluated")."""
    own = evaluation_task(loaded.config, loaded.path)
    if task is not None and task != own:
        kind = "language model" if own == "wikitext2" else "classifier"
        raise QslmError(f"model {loaded.path} is a {kind}; it cannot be {action} on task {task!r}")
    return own


def build_model(config) -> nn.Module:
    _, model_cls = ARCHITECTURES[config.arch]
    return model_cls(config)


def read_config(folder: Path):
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise QslmError(f"missing {path}: a model folder needs {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE}")
    return config_from_dict(read_json_file(path), path)


def expected_state(config, plan_file: Path | None) -> dict[str, torch.Tensor]:
    """The state dict (names, shapes, dtypes; large tensors without storage) a folder with ``config`` and,
    for a quantized folder, ``plan_file`` must hold. Cheap even for a config asking for a huge model."""
    from ..quant.pack import pack_units  # late import: quant builds on models
    from ..quant.plan import QuantPlan

    plan = None if plan_file is None else QuantPlan.load(plan_file)

    def build() -> nn.Module:
        model = build_model(config)
        if plan is not None:
            plan.validate(model)
            pack_units(model, plan)
        return model

    return state_shapes(build)


def check_weights_header(weights: Path, expected: dict[str, torch.Tensor], config, plan_file: Path | None) -> None:
    problems = header_problems(read_header(weights), expected)
    if not problems:
        return
    if plan_file is None:
        what = f"{weights} does not match arch {config.arch!r} as {weights.parent / CONFIG_FILE} describes it"
    else:
        what = f"{weights}: packed weights do not match {plan_file} and {weights.parent / CONFIG_FILE}"
    raise QslmError(what + ":\n  " + "\n  ".join(problems))


def load_model(ref: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a float or quantized model folder (or bundled name) ready for evaluation. The weights file's
    names, shapes and dtypes are checked against the config (and plan) before anything is allocated, and
    its float tensors must be finite."""
    from ..quant.pack import PLAN_FILE, fill_tied_keys, load_packed_into  # late import: quant builds on models

    folder = resolve_model_path(ref)
    config = read_config(folder)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    weights, plan_path = folder / WEIGHTS_FILE, folder / PLAN_FILE
    plan_file = plan_path if plan_path.is_file() else None
    check_weights_header(weights, expected_state(config, plan_file), config, plan_file)
    state = read_state_dict(weights)
    check_finite(state, weights)
    model = build_model(config)
    if plan_file is not None:
        load_packed_into(model, state, plan_file)
    else:
        try:
            model.load_state_dict(fill_tied_keys(model, state), strict=True)
        except RuntimeError as err:
            raise QslmError(f"{weights} does not match arch {config.arch!r}: {err}") from None
    model.to(device).eval()
    return LoadedModel(model, config, tokenizer, folder)


def write_config(folder: Path, config) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def save_model(out: str | os.PathLike, model: nn.Module, tokenizer: Tokenizer, extra_files: dict[str, str] | None = None
               ) -> Path:
    """Write a float model folder (a ``train`` output, see ``qslm.outputs``): the files go in one rename
    each; files qslm did not write are never touched."""
    out = Path(out)
    with OutputFolder.claim(out, "train") as folder:
        staging = folder.staging()
        write_config(staging, model.config)
        from ..quant.pack import unique_state  # late import: quant builds on models

        state = {k: v.detach().cpu().contiguous() for k, v in unique_state(model).items()}  # a tied tensor once
        save_file(state, str(staging / WEIGHTS_FILE))
        tokenizer.save(str(staging / TOKENIZER_FILE))
        for name, content in (extra_files or {}).items():
            (staging / name).write_text(content)
        folder.commit({name: staging / name for name in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, *(extra_files or {})]})
    return out
