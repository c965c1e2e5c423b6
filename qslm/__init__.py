"""qslm: mixed-precision post-training quantization for spike-driven language models.

    import qslm
    result = qslm.search("spikegpt-sst2", task="sst2", out="out/sst2",
                         constraints=qslm.Constraints(max_drop=1.0, max_memory=0.125))
    model = qslm.load("out/sst2").model
"""
from .errors import QslmError
from .models.zoo import load_model as load
from .quant.api import quantize
from .search.objective import Constraints
from .search.run import run_search as search

__all__ = ["Constraints", "QslmError", "load", "quantize", "search"]
