"""A labelled text: what text-classification data sets and users' files are read into."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    sentence: str
    label: int
