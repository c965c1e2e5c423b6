"""The registry of export targets. A target declares how it writes a quantized model, how it loads it
back (every figure a search reports comes from what was written and read back), and its byte count: the
memory figure, and a bound above on the disk it takes, checked before anything is written.

    register_target(MyTarget())              # name, write, load, memory_bytes, disk_bytes, overhead_bytes
    export_target("safetensors").write(model, plan, folder)

The built-in targets are the modules of this package, each registering itself when imported; they are
imported when the registry is first asked.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import nn

from ..errors import QslmError
from ..quant.context import QuantContext
from ..quant.plan import QuantPlan

DEFAULT_TARGET = "safetensors"


@runtime_checkable
class ExportTarget(Protocol):
    name: str

    def write(self, model: nn.Module, plan: QuantPlan, folder: Path, context: QuantContext | None = None
              ) -> dict[str, Path]:
        """Write ``model`` quantized by ``plan`` into ``folder``; returns file name -> path."""

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        """``model`` (a float instance of the class written) with what ``folder`` holds loaded into it."""

    def memory_bytes(self, files: dict[str, Path]) -> int:
        """The memory figure of written files: the bytes the model's tensors take, scales included."""

    def disk_bytes(self, model: nn.Module, plan: QuantPlan) -> int:
        """A bound above on the disk ``write(model, plan, ...)`` takes."""

    def overhead_bytes(self, model: nn.Module) -> int:
        """A bound above on what ``write`` adds to the plan's tensor bytes under any plan."""


_TARGETS: dict[str, ExportTarget] = {}
_built_in_loaded = False


def register_target(target: ExportTarget) -> ExportTarget:
    """Make ``target`` available by its name; a name already taken is an error."""
    if not isinstance(target, ExportTarget) or not isinstance(getattr(target, "name", None), str):
        raise QslmError(f"an export target has a name and write, load, memory_bytes, disk_bytes and "
                        f"overhead_bytes; got {type(target).__name__}")
    if target.name in _TARGETS:
        raise QslmError(f"export target {target.name!r} is already registered")
    _TARGETS[target.name] = target
    return target


def unregister_target(name: str) -> None:
    _TARGETS.pop(name, None)


def _load_built_in() -> None:
    global _built_in_loaded
    if not _built_in_loaded:
        _built_in_loaded = True
        package = __name__.rpartition(".")[0]
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            if module.name != "targets":
                importlib.import_module(f"{package}.{module.name}")


def target_names() -> list[str]:
    _load_built_in()
    return sorted(_TARGETS)


def export_target(name: str) -> ExportTarget:
    """The target registered as ``name``; an unknown name is an error naming the registered ones."""
    _load_built_in()
    if name not in _TARGETS:
        raise QslmError(f"unknown export target {name!r}; expected one of {', '.join(sorted(_TARGETS))}")
    return _TARGETS[name]
