"""Append-only journal of candidate evaluations: a crash or Ctrl-C loses at most the evaluation
in flight, and re-running the same search replays finished evaluations instead of redoing them.
An entry holds the plan's metric and, when the task gives them, its per-example scores (float64,
little-endian, base64), so a rerun with another confidence judges the same measurements anew."""
from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

import numpy as np

from ..errors import QslmError
from ..tasks.scores import Measured


def assignment_key(assignment: dict[str, int]) -> str:
    return json.dumps(sorted(assignment.items()), separators=(",", ":"))


REQUIRED_NUMBERS = ("metric", "latency_s")  # what a resumed evaluation reads back from its entry
TORN = object()  # stands for a line that is not JSON (JSON's null is None)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_line(raw: bytes, path: Path, line_no: int) -> object:
    """The JSON value on one line, or ``TORN`` when it is not JSON (a line torn by a crash)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise QslmError(f"journal {path}:{line_no} is not UTF-8 text; the journal is corrupt, remove it to "
                        f"start over") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # ValueError also covers integers longer than Python converts
        return TORN


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


def check_entry(entry: object, path: Path, line_no: int) -> dict:
    """An evaluation entry as ``add`` writes it: an object with a string ``key`` and numeric results."""
    where = f"journal {path}:{line_no}"
    if not isinstance(entry, dict):
        raise QslmError(f"{where}: expected an evaluation object with 'key', 'metric' and 'latency_s', got "
                        f"{type(entry).__name__}; the journal is corrupt, remove it to start over")
    if not isinstance(entry.get("key"), str):
        raise QslmError(f"{where}: 'key' must be a string, got {entry.get('key')!r:.60}; the journal is corrupt, "
                        f"remove it to start over")
    for name in REQUIRED_NUMBERS:
        if not _is_number(entry.get(name)):
            raise QslmError(f"{where}: {name!r} must be a number, got {entry.get(name)!r:.60}; the journal is "
                            f"corrupt, remove it to start over")
    scores = entry.get("scores")
    if scores is not None:
        try:
            raw = base64.b64decode(scores, validate=True) if isinstance(scores, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None or not raw or len(raw) % 8:
            raise QslmError(f"{where}: 'scores' must be base64 of float64 values, got {str(scores)!r:.60}; the "
                            "journal is corrupt, remove it to start over")
    return entry


class Journal:
    def __init__(self, path: Path, header: dict):
        """``header`` identifies the search (model hash, task, data, constraints...); a journal written
        for a different search is refused rather than silently mixed in."""
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                # A line cut short by a crash: drop it, or the next entry would be appended to it and lost.
                data = data[:data.rfind(b"\n") + 1]
                os.truncate(self.path, len(data))
            lines = data.splitlines()
            if not lines:
                raise QslmError(f"journal {self.path} is empty; remove it to start over")
            first = _parse_line(lines[0], self.path, 1)
            if not isinstance(first, dict) or set(first) != {"header"} or not isinstance(first["header"], dict):
                raise QslmError(f"journal {self.path} is corrupt: line 1 is not a header object "
                                f'{{"header": {{...}}}}; remove it to start over')
            if first["header"] != header:
                raise QslmError(f"journal {self.path} belongs to a different search (other model, data or "
                                f"settings); use another --out or remove it")
            for line_no, line in enumerate(lines[1:], start=2):
                entry = _parse_line(line, self.path, line_no)
                if entry is TORN:
                    break  # a line cut short by a crash: everything before it is intact
                entry = check_entry(entry, self.path, line_no)
                self.entries[entry["key"]] = entry
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"header": header})

    def _append(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def add(self, entry: dict) -> None:
        self.entries[entry["key"]] = entry
        self._append(entry)
