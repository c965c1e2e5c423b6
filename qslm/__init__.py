"""qslm: mixed-precision post-training quantization for spike-driven language models.

    import qslm
    task = qslm.Task(evaluate=my_eval, calibration=my_batches, higher_is_better=True, test=my_test_eval)
    result = qslm.search(my_model, task, out="out/mine",
                         constraints=qslm.Constraints(max_drop=1.0, max_memory=0.14))
    qslm.load_quantized(MyModel(...), "out/mine")

    qslm.search("spikegpt-sst2", "sst2", out="out/sst2", constraints=qslm.Constraints(max_drop=1.0))
    model = qslm.load("out/sst2").model

The names below load on first use, so ``qslm.cli`` starts (and answers Ctrl-C) before torch is imported.
"""
from __future__ import annotations

import importlib

from .errors import QslmError

_EXPORTS = {
    "Constraints": ("qslm.search.objective", "Constraints"),
    "SearchConfig": ("qslm.search.config", "SearchConfig"),
    "SearchResult": ("qslm.search.engine", "SearchResult"),
    "Task": ("qslm.tasks.base", "Task"),
    "load": ("qslm.checkpoint", "load_model"),
    "load_quantized": ("qslm.checkpoint", "load_quantized"),
    "quantize": ("qslm.quant.api", "quantize"),
    "search": ("qslm.search", None),  # the package, callable: see qslm/search/__init__.py
}
__all__ = ["QslmError", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qslm' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
