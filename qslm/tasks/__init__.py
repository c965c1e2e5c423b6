"""Tasks: the user's data and metric (``Task``), built-in task kinds for user files, and presets."""
from .base import Task

__all__ = ["Task"]
