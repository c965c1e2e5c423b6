"""Append-only journal of candidate evaluations: a crash or Ctrl-C loses at most the evaluation
in flight, and re-running the same search replays finished evaluations instead of redoing them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import QslmError


def assignment_key(assignment: dict[str, int]) -> str:
    return json.dumps(sorted(assignment.items()), separators=(",", ":"))


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
            lines = data.decode().splitlines()
            if not lines:
                raise QslmError(f"journal {self.path} is empty; remove it to start over")
            try:
                first = json.loads(lines[0])
            except json.JSONDecodeError:
                raise QslmError(f"journal {self.path} is corrupt; remove it to start over") from None
            if first.get("header") != header:
                raise QslmError(f"journal {self.path} belongs to a different search (other model, data or "
                                f"settings); use another --out or remove it")
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a crash: everything before it is intact
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
