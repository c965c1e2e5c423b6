"""Strict JSON for the files qslm reads (configs, plans): duplicate keys, bad UTF-8 and numbers that
cannot be parsed are errors naming the file, never a silent "last one wins" or a raw traceback."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import QslmError


class DuplicateKey(QslmError):
    """A key given twice in one JSON object; ``key`` is that key."""

    def __init__(self, source: str, key: str):
        super().__init__(f"{source}: key {key!r} appears more than once in one object; expected each key once")
        self.key = key


def unique_keys(source: str):
    """An ``object_pairs_hook`` for ``json.loads`` that raises ``DuplicateKey`` (naming ``source``) for a
    key given twice, where plain JSON would keep the last."""
    def build(pairs: list[tuple[str, object]]) -> dict:
        result: dict = {}
        for key, value in pairs:
            if key in result:
                raise DuplicateKey(source, key)
            result[key] = value
        return result
    return build


def parse_json(text: str | bytes, source: str) -> object:
    """``text`` parsed as JSON; ``source`` names it in errors."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys(source))
    # ValueError covers JSONDecodeError and integers longer than Python converts; RecursionError, nesting
    # deeper than the parser goes.
    except (ValueError, RecursionError) as err:
        raise QslmError(f"{source} is not valid JSON: {err}") from None


def read_json_file(path: Path) -> object:
    """The JSON value in UTF-8 file ``path``."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise QslmError(f"{path} is not UTF-8 text ({err}); expected a JSON file") from None
    return parse_json(text, str(path))
