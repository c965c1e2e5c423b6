"""Reading ``model.safetensors`` safely: its header (names, dtypes, shapes) is compared with the tensors a
model expects before any weight is read or any model allocated, and every float tensor read must be finite."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import QslmError

# safetensors dtype names of the floating-point tensors; a float tensor may be stored in any of them
# (loading casts it to the model's dtype), a non-float one (a packed code stream, a counter) only in its own.
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
TORCH_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                     torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                     torch.uint8: "U8", torch.bool: "BOOL"}
MAX_LISTED = 8  # names listed per kind of problem; the rest are counted


@dataclass(frozen=True)
class StoredTensor:
    dtype: str  # safetensors name, e.g. "F32", "U8"
    shape: tuple[int, ...]


def _unreadable(path: Path, err: Exception) -> QslmError:
    return QslmError(f"{path} is not a readable safetensors file: {err}")


def read_header(path: Path) -> dict[str, StoredTensor]:
    """Names, dtypes and shapes of the tensors in ``path``, read from its header alone."""
    if not path.is_file():
        raise QslmError(f"missing weights {path}: expected a safetensors file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: StoredTensor(handle.get_slice(name).get_dtype(), tuple(handle.get_slice(name).get_shape()))
                    for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:  # a header of another layout or dtype
        raise _unreadable(path, err) from None


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def dtype_fits(stored: str, expected: torch.dtype) -> bool:
    if expected.is_floating_point:
        return stored in FLOAT_DTYPES
    return stored == TORCH_DTYPE_NAMES.get(expected)


def header_problems(header: dict[str, StoredTensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Every difference between the stored tensors and the ``expected`` ones (meta tensors will do)."""
    problems = []
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing:
        problems.append(f"missing tensors {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_listed(unexpected)}")
    for name in sorted(set(expected) & set(header)):
        stored, want = header[name], expected[name]
        if stored.shape != tuple(want.shape):
            problems.append(f"size mismatch for {name}: the file has {list(stored.shape)}, the config implies "
                            f"{list(want.shape)}")
        elif not dtype_fits(stored.dtype, want.dtype):
            kind = ("a float dtype" if want.dtype.is_floating_point
                    else TORCH_DTYPE_NAMES.get(want.dtype, str(want.dtype)))
            problems.append(f"dtype of {name}: the file has {stored.dtype}, expected {kind}")
    return problems


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise QslmError(f"missing weights {path}: expected a safetensors file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise _unreadable(path, err) from None


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse NaN or infinite values in any float tensor: they would spread through every evaluation."""
    bad = sorted(name for name, tensor in state.items()
                 if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))
    if bad:
        raise QslmError(f"{path}: tensors {_listed(bad)} hold NaN or infinite values; expected finite weights")
