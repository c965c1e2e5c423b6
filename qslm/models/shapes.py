"""A model's state-dict shapes and dtypes without allocating its weights.

Building under ``torch.device("meta")`` would do, but many operations on meta tensors run Python
kernels whose first use imports torch's compiler stack (seconds, in every process that loads a model).
So the model is built on the CPU, except that factory calls of more than ``META_ABOVE`` elements (the
Linear and Embedding weights: everything a huge config makes huge) give meta tensors, and the in-place
initialisers run on those are skipped (their values are never read).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

META_ABOVE = 2 ** 16  # elements; smaller tensors (norms, RWKV mixing vectors) are cheap to build for real
FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn}


def _requested_numel(args: tuple, kwargs: dict) -> int:
    """Elements a factory call asks for (0 when its size is not plain integers)."""
    sizes = kwargs.get("size", args)
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
        sizes = tuple(sizes[0])
    if not all(isinstance(size, int) for size in sizes):
        return 0
    return math.prod(sizes)


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


class _LargeTensorsOnMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in FACTORIES:
            size_args = args[:1] if func is torch.full else args  # full(size, fill_value)
            if _requested_numel(size_args, kwargs) > META_ABOVE:
                kwargs["device"] = "meta"
        else:
            target = _first_tensor(args, kwargs)
            name = getattr(func, "__name__", "")
            if target is not None and target.is_meta and name.endswith("_") and not name.startswith("__"):
                return target  # an initialiser (normal_, zeros_, ...) writing values nobody reads
        return func(*args, **kwargs)


def state_shapes(build: Callable[[], nn.Module]) -> nn.Module:
    """The model ``build`` returns, its large tensors on the meta device (shape and dtype only): read its
    state dict for the shapes."""
    with _LargeTensorsOnMeta():
        return build()
