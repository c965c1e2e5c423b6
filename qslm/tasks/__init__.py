"""Tasks: the user's data and metric (``Task``), built-in task kinds for user files, and presets, with the
metrics of text data (``evaluation``) and the calibration sets they measure on (``calibration``)."""
from .base import Task

__all__ = ["Task"]
