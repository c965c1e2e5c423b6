"""``qslm.search``: the engine for any model and ``Task``, or a model folder / bundled name with a
built-in task name (a thin wrapper that builds both and calls the same engine)."""
from __future__ import annotations

import os

from torch import nn

from ..model_inputs import check_in_memory, inputs_name
from ..tasks.base import Task
from .engine import SearchResult
from .engine import search as search_model


def search(model, task, out: str | os.PathLike, constraints=None, config=None, **options) -> SearchResult:
    """``search(my_model, qslm.Task(...), out, constraints, config)``, or
    ``search("spikegpt-sst2", "sst2", out, constraints, ...)`` for a model folder and a built-in task."""
    if isinstance(model, nn.Module) and not isinstance(task, str):
        if isinstance(task, Task):  # before the search moves the model: a meta tensor cannot be moved
            check_in_memory(model, f"{inputs_name(task.profiling, 'Task.calibration')}[0]")
        return search_model(model, task, out, constraints, config, **options)
    from .run import run_search  # model folders and built-in tasks

    return run_search(model, task, out, constraints, config=config, **options)
