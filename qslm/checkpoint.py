"""Model folders: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` (plus ``quant_plan.json``
when quantized), read and written in one place, and a user's own model's packed weights.

    loaded = load_model("spikegpt-sst2")          # or a folder path
    save_model("runs/mine", model, tokenizer)
    load_quantized(MyModel(), "out/mine")         # a searched user model: weights + plan, no config

Loading checks the weights file's names, shapes and dtypes against the config (and plan) before
anything is allocated, and that its float tensors are finite. Every write goes through an output
folder (``qslm.outputs``): nothing qslm did not write is touched.
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

from .data.tokenizer import load_tokenizer
from .diskspace import FILE_SLACK, native_write, require_free_space
from .errors import QslmError
from .jsonfile import read_json_file
from .models.neurons import lif_modules
from .models.shapes import state_shapes
from .models.weights import check_finite, header_problems, read_header, read_state_dict
from .models.zoo import CONFIG_FILE, build_model, config_from_dict, resolve_model_path
from .outputs import OutputFolder
from .quant.apply import check_context
from .quant.context import QuantContext
from .quant.memory import plan_bytes
from .quant.methods import registered_methods
from .quant.pack import (
    PLAN_FILE,
    WEIGHTS_FILE,
    fill_tied_keys,
    load_packed_into,
    pack_units,
    unique_state,
    write_packed,
)
from .quant.plan import QuantPlan
from .quant.units import quantizable_units

TOKENIZER_FILE = "tokenizer.json"
__all__ = ["CONFIG_FILE", "PLAN_FILE", "TOKENIZER_FILE", "WEIGHTS_FILE", "LoadedModel",
           "load_model", "load_quantized", "quantized_files_bytes", "read_config", "read_state_dict", "save_model",
           "write_config", "write_quantized_files"]


@dataclass
class LoadedModel:
    model: nn.Module
    config: object
    tokenizer: Tokenizer
    path: Path


def read_config(folder: Path):
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise QslmError(f"missing {path}: a model folder needs {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE}")
    return config_from_dict(read_json_file(path), path)


def expected_state(config, plan_file: Path | None) -> dict[str, torch.Tensor]:
    """The state dict (names, shapes, dtypes; large tensors without storage) a folder with ``config`` and,
    for a quantized folder, ``plan_file`` must hold. Cheap even for a config asking for a huge model."""
    plan = None if plan_file is None else QuantPlan.load(plan_file)

    def build() -> nn.Module:
        model = build_model(config)
        if plan is not None:
            plan.validate(model)
            pack_units(model, plan)
        return model

    return unique_state(state_shapes(build))


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
        state = {k: v.detach().cpu().contiguous() for k, v in unique_state(model).items()}  # a tied tensor once
        with native_write(staging / WEIGHTS_FILE):
            save_file(state, str(staging / WEIGHTS_FILE))
        save_tokenizer(tokenizer, staging / TOKENIZER_FILE)
        for name, content in (extra_files or {}).items():
            (staging / name).write_text(content)
        folder.commit({name: staging / name for name in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, *(extra_files or {})]})
    return out


def write_quantized_files(model: nn.Module, plan: QuantPlan, folder: Path, tokenizer: Tokenizer | None = None,
                          context: "QuantContext | None" = None
                          ) -> dict[str, Path]:
    """Write a quantized model's files into ``folder`` (e.g. an output folder's staging folder):
    model.safetensors (packed) and quant_plan.json, plus config.json for a model built from a model
    folder's config and tokenizer.json when given; returns name -> path."""
    files = {}
    if hasattr(getattr(model, "config", None), "arch"):
        write_config(folder, model.config)
        files[CONFIG_FILE] = folder / CONFIG_FILE
    files.update(write_packed(model, plan, folder, context))
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder / TOKENIZER_FILE)
        files[TOKENIZER_FILE] = folder / TOKENIZER_FILE
    return files


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    with native_write(path):  # tokenizers reports a full disk as a bare Exception
        tokenizer.save(str(path))


# Bounds on what the files add to the tensors' bytes: a safetensors header entry per tensor (its name,
# dtype, shape and offsets as JSON: about 70 bytes besides the name) and a plan entry per unit (a spec
# with every field: about 230 bytes besides the name) and per neuron (about 60).
HEADER_BYTES_PER_TENSOR = 160
PLAN_BYTES_PER_UNIT = 320
PLAN_BYTES_PER_NEURON = 96
QUANTIZED_FILES = 4  # model.safetensors, quant_plan.json, config.json, tokenizer.json


def quantized_files_overhead(model: nn.Module, tokenizer: Tokenizer | None = None) -> int:
    """A bound above on what ``write_quantized_files`` writes besides the plan's tensor bytes, under any
    plan: the weights file's header, quant_plan.json, config.json and tokenizer.json, each file's last
    block."""
    units = quantizable_units(model)
    header = sum(len(name) + HEADER_BYTES_PER_TENSOR for name in unique_state(model))
    # a quantized unit stores at most as many tensors as the method storing most (rtn: codes, scale, its
    # exponent, zero-point)
    packed_buffers = max(len(method.stored_names) for method in registered_methods())
    header += sum(packed_buffers * (len(unit.path) + HEADER_BYTES_PER_TENSOR) for unit in units.values())
    plan = (sum(len(name) + PLAN_BYTES_PER_UNIT for name in units)
            + sum(len(name) + PLAN_BYTES_PER_NEURON for name in lif_modules(model)))
    config = getattr(model, "config", None)
    config_bytes = len(json.dumps(dataclasses.asdict(config), indent=2)) + 1 if hasattr(config, "arch") else 0
    tokenizer_bytes = 0 if tokenizer is None else len(tokenizer.to_str(pretty=True).encode())
    return header + plan + config_bytes + tokenizer_bytes + QUANTIZED_FILES * FILE_SLACK


def quantized_files_bytes(model: nn.Module, plan: QuantPlan, tokenizer: Tokenizer | None = None) -> int:
    """A bound above on the disk ``write_quantized_files(model, plan, ..., tokenizer)`` takes: the plan's
    tensors to the byte, and ``quantized_files_overhead``."""
    return plan_bytes(model, plan) + quantized_files_overhead(model, tokenizer)


def write_quantized_folder(model: nn.Module, plan: QuantPlan, tokenizer: Tokenizer | None, out_dir: str | os.PathLike,
                           overwrite: bool = False, protect: tuple[str | os.PathLike, ...] = (),
                           context: "QuantContext | None" = None) -> Path:
    """Write a quantized model into output folder ``out_dir`` (a ``quantize`` output, see
    ``qslm.outputs``: new, empty, or an earlier quantize output unless ``overwrite``), the writer behind
    ``qslm.quantize``. The model is left as it was. ``context`` carries the calibration Hessians gptq units
    need (see ``qslm.quant.apply``)."""
    plan.validate(model)  # a bad plan is refused before the folder is touched
    check_context(plan, context)
    with OutputFolder.claim(out_dir, "quantize", overwrite=overwrite, protect=protect) as folder:
        commit_quantized(folder, model, plan, tokenizer, context)
    return Path(out_dir)


def commit_quantized(folder: OutputFolder, model: nn.Module, plan: QuantPlan, tokenizer: Tokenizer | None = None,
                     context: "QuantContext | None" = None) -> None:
    """Write a quantized model's files into a claimed output folder, after checking there is room for them."""
    require_free_space(folder.path, quantized_files_bytes(model, plan, tokenizer), "the quantized model")
    folder.commit(write_quantized_files(model, plan, folder.staging(), tokenizer, context))


def load_quantized(model: nn.Module, folder: str | os.PathLike) -> nn.Module:
    """Load the packed weights of a quantized folder (``model.safetensors`` + ``quant_plan.json``) into
    ``model``, a fresh float instance of the class that was searched; its units then hold bit-packed
    codes, not float copies. Returns ``model``."""
    folder = Path(folder)
    if not (folder / PLAN_FILE).is_file():
        raise QslmError(f"{folder} holds no {PLAN_FILE}: not a quantized model folder")
    state = read_state_dict(folder / WEIGHTS_FILE)
    check_finite(state, folder / WEIGHTS_FILE)
    load_packed_into(model, state, folder / PLAN_FILE)
    return model.eval()
