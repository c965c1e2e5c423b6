"""Converters from other projects' checkpoint formats into qslm model folders."""
from .spikegpt_checkpoint import convert_spikegpt

__all__ = ["convert_spikegpt"]
