"""Read a ``torch.save``'d state dict without running any code from the file.

Only ``torch.load(..., weights_only=True)`` is used: tensors and plain containers load, anything that
needs a class or function from the pickle is refused before it is called.
"""
from __future__ import annotations

import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import QslmError

# Containers training scripts commonly wrap a state dict in; the upstream loaders read the dict as is.
WRAPPER_KEYS = ("state_dict", "model")
# torch.save's format before zip files: a protocol-2 pickle opening with the magic number 0x1950a86a20f9469cfc6c.
LEGACY_TORCH_SAVE_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# The pickles of the legacy format, in order: magic number, protocol version, system info, the object.
LEGACY_PICKLES = 4
# nn.DataParallel / DistributedDataParallel prefix every key with this when the wrapper itself is saved.
PARALLEL_PREFIX = "module."


def load_state_dict(path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    """The tensors in the checkpoint at ``path``, keyed by name. A wrapper dict or a ``module.`` prefix
    is removed, with a line in ``notes`` saying so."""
    raw = _load_weights_only(path)
    if not isinstance(raw, dict):
        raise QslmError(f"{path} holds a {type(raw).__name__}, not a state dict (a dict of tensors)")
    raw = _unwrap(raw, path, notes)
    not_tensors = sorted(str(key) for key, value in raw.items()
                         if not (isinstance(key, str) and isinstance(value, torch.Tensor)))
    if not_tensors:
        raise QslmError(f"{path} is not a state dict: {name_listing(not_tensors)} "
                        f"{'is' if len(not_tensors) == 1 else 'are'} not named tensors")
    if not raw:
        raise QslmError(f"{path} is an empty dict, not a state dict")
    return _strip_parallel_prefix(raw, notes)


def _load_weights_only(path: Path):
    if not path.is_file():
        raise QslmError(f"missing checkpoint {path}: expected a file written by torch.save")
    if not _looks_like_torch_save(path):
        # Checked first: any other pickle would be reported as needing full unpickling, which misleads.
        raise QslmError(f"{path} is not a PyTorch checkpoint: neither torch.save's zip format nor its "
                        f"legacy pickle format")
    try:
        with warnings.catch_warnings():
            # The restricted unpickler warns about pickle protocols it was not written for; it still
            # refuses what it cannot load safely, which is all that matters here.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports truncated or foreign files with many exception types
        if "Weights only load failed" in str(err):
            # torch says so of any pickle its restricted unpickler stops on, garbage included
            broken = _broken_pickle(path)
            if broken:
                raise QslmError(f"{path} is not a PyTorch checkpoint: {broken}") from None
            raise QslmError(f"{path} needs full unpickling (it stores Python objects, not only tensors), "
                            f"which could run arbitrary code; refused. Re-save it as a plain dict of "
                            f"tensors") from None
        said = f": {err}" if str(err).strip() else ""
        raise QslmError(f"{path} is not a PyTorch checkpoint ({type(err).__name__}{said})") from None


def _broken_pickle(path: Path) -> str | None:
    """What is wrong with the pickle of a torch.save file when it is no pickle at all (random or empty
    bytes), or None when it is one. Read with pickletools, which decodes opcodes and runs nothing."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                records = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"]
                if not records:
                    return "its zip archive holds no data.pkl"
                what = records[0]
                with archive.open(what) as handle:
                    for _ in pickletools.genops(handle):
                        pass
        else:
            what = "pickle"
            with open(path, "rb") as handle:
                for _ in range(LEGACY_PICKLES):
                    for _ in pickletools.genops(handle):
                        pass
    except Exception as err:  # pickletools raises ValueError and friends on bytes that are not a pickle
        return f"its {what} is not a valid pickle ({err or type(err).__name__})"
    return None


def _looks_like_torch_save(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(len(LEGACY_TORCH_SAVE_PREFIX)) == LEGACY_TORCH_SAVE_PREFIX


def _unwrap(raw: dict, path: Path, notes: list[str]) -> dict:
    for key in WRAPPER_KEYS:
        if key in raw and isinstance(raw[key], dict) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
            others = sorted(str(k) for k in raw if k != key)
            notes.append(f"read the state dict under {key!r} in {path.name}"
                         + (f" (ignored entries that are not tensors: {name_listing(others)})" if others else ""))
            return raw[key]
    return raw


def _strip_parallel_prefix(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    if all(key.startswith(PARALLEL_PREFIX) for key in state):
        notes.append(f"removed the {PARALLEL_PREFIX!r} prefix every key carries (a data-parallel wrapper)")
        return {key[len(PARALLEL_PREFIX):]: value for key, value in state.items()}
    return state


def name_listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
