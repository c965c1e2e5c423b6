"""Append-only journal of candidate evaluations: a crash or Ctrl-C loses at most the evaluation
in flight, and re-running the same search replays finished evaluations instead of redoing them.
An entry holds the plan's metric and, when the task gives them, its per-example scores (float64,
little-endian, base64), so a rerun with another confidence judges the same measurements anew.

Each entry line carries a digest of its content and the journal's header (``qslm.digest_lines``): a line
that was edited, copied from another search's journal, damaged, or written before lines had digests is
dropped, not trusted, and its plan is measured again; ``Journal.note`` says how many were."""
from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

import numpy as np

from ..digest_lines import (
    Damaged,
    NotJson,
    digested_line,
    dropped_note,
    lines_measured_again,
    parse_strict,
    read_digested,
)
from ..errors import QslmError
from ..tasks.scores import Measured


def assignment_key(assignment: dict[str, int]) -> str:
    return json.dumps(sorted(assignment.items()), separators=(",", ":"))


REQUIRED_NUMBERS = ("metric", "latency_s")  # what a resumed evaluation reads back from its entry


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decoded(raw: bytes, path: Path, line_no: int) -> str:
    """One line's text; qslm writes only ASCII, so bytes that are not UTF-8 mean the file is not a journal."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise QslmError(f"journal {path}:{line_no} is not UTF-8 text; the journal is corrupt, remove it to "
                        f"start over") from None


def entry_of(key: str, measured: Measured, seconds: float) -> dict:
    entry = {"key": key, "metric": measured.metric, "latency_s": seconds}
    if measured.scores is not None:
        entry["scores"] = base64.b64encode(measured.scores.astype("<f8").tobytes()).decode("ascii")
    return entry


def measured_of(entry: dict) -> Measured:
    """The measurement an entry (checked by ``check_entry``) records."""
    scores = entry.get("scores")
    return Measured(entry["metric"], None if scores is None else np.frombuffer(
        base64.b64decode(scores), dtype="<f8").astype(np.float64))


def is_entry(entry: dict) -> bool:
    """Whether ``entry`` is an evaluation as ``add`` writes it: a string ``key``, numeric results and, if
    any, per-example scores as base64 of float64 values. (A line with a matching digest always is; this
    keeps a malformed line from a raw error however it got there.)"""
    if not isinstance(entry.get("key"), str) or not all(_is_number(entry.get(n)) for n in REQUIRED_NUMBERS):
        return False
    scores = entry.get("scores")
    if scores is None:
        return True
    try:
        raw = base64.b64decode(scores, validate=True) if isinstance(scores, str) else b""
    except (binascii.Error, ValueError):
        return False
    return bool(raw) and len(raw) % 8 == 0


class Journal:
    def __init__(self, path: Path, header: dict):
        """``header`` identifies the search (model hash, task, data, constraints...); a journal written
        for a different search is refused rather than silently mixed in. A damaged entry line is dropped;
        ``dropped_lines`` lists those whose plan no valid line holds (their plans are measured again)."""
        self.path = Path(path)
        self.header = header
        self.entries: dict[str, dict] = {}
        self.dropped_lines: list[int] = []
        if self.path.is_file():
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                # A line cut short by a crash: drop it, or the next entry would be appended to it and lost.
                data = data[:data.rfind(b"\n") + 1]
                os.truncate(self.path, len(data))
            lines = data.splitlines()
            if not lines:
                raise QslmError(f"journal {self.path} is empty; remove it to start over")
            first = parse_strict(_decoded(lines[0], self.path, 1))
            if not isinstance(first, dict) or set(first) != {"header"} or not isinstance(first["header"], dict):
                raise QslmError(f"journal {self.path} is corrupt: line 1 is not a header object "
                                f'{{"header": {{...}}}}; remove it to start over')
            if first["header"] != header:
                raise QslmError(f"journal {self.path} belongs to a different search (other model, data or "
                                f"settings); use another --out or remove it")
            damaged: list[tuple[int, str | None]] = []
            for line_no, line in enumerate(lines[1:], start=2):
                entry = read_digested(_decoded(line, self.path, line_no), header)
                # Not JSON is damage too: the torn last line a crash leaves was cut off above.
                if isinstance(entry, (Damaged, NotJson)) or not is_entry(entry):
                    damaged.append((line_no, entry.key if isinstance(entry, Damaged) else None))
                    continue
                self.entries[entry["key"]] = entry  # a later valid line for a key is the newer measurement
            self.dropped_lines = lines_measured_again(damaged, self.entries)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append(json.dumps({"header": header}) + "\n")

    @property
    def dropped(self) -> int:
        """Damaged lines dropped whose plans are measured again."""
        return len(self.dropped_lines)

    def note(self) -> str | None:
        """One line for the user when damaged lines were dropped, else None."""
        return dropped_note(self.path, "journal", self.dropped_lines, "those plans are measured again")

    def _append(self, line: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def add(self, entry: dict) -> None:
        self.entries[entry["key"]] = entry
        self._append(digested_line(entry, self.header))
