"""qslm: mixed-precision post-training quantization for spike-driven language models.

    import qslm
    task = qslm.Task(evaluate=my_eval, calibration=my_batches, higher_is_better=True, test=my_test_eval)
    result = qslm.search(my_model, task, out="out/mine",
                         constraints=qslm.Constraints(max_drop=1.0, max_memory=0.14))
    qslm.load_quantized(MyModel(...), "out/mine")

    qslm.search("spikegpt-sst2", "sst2", out="out/sst2", constraints=qslm.Constraints(max_drop=1.0))
    model = qslm.load("out/sst2").model
"""
from .checkpoint import load_model as load
from .checkpoint import load_quantized
from .errors import QslmError
from .quant.api import quantize
from .search.api import search
from .search.config import SearchConfig
from .search.engine import SearchResult
from .search.objective import Constraints
from .tasks.base import Task

__all__ = ["Constraints", "QslmError", "SearchConfig", "SearchResult", "Task", "load", "load_quantized", "quantize",
           "search"]
