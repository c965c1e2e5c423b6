"""The built-in quantizer methods, registered once (on the first import of this module), in the order a
search lists them by default: rtn, gptq, codebook; then the opt-in ternary storage, one-bit signs and
learned rounding."""
from .binary import Binary
from .codebook import Codebook
from .gptq import Gptq
from .learned import LearnedRounding
from .registry import QuantMethod, register
from .rtn import RoundToNearest
from .ternary import Ternary

BUILTIN: tuple[QuantMethod, ...] = (register(RoundToNearest()), register(Gptq()), register(Codebook()),
                                    register(Ternary()), register(Binary()), register(LearnedRounding()))
