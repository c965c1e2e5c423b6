"""Quantizer methods: the registry (``qslm.quant.methods.registry``) and the built-in methods
(``qslm.quant.methods.builtin``), which the registry loads when it is first asked."""
from .registry import (
    Needs,
    Quantized,
    QuantMethod,
    StoredTensor,
    method_named,
    method_names,
    register,
    registered_methods,
    unregister,
)

__all__ = ["Needs", "QuantMethod", "Quantized", "StoredTensor", "method_named", "method_names", "register",
           "registered_methods", "unregister"]
