"""JSON lines that carry a SHA-256 digest of their content, for the append-only files a rerun trusts
(the search journal, the sensitivity cache).

The digest covers the line's content together with a context (what the file belongs to, e.g. the
journal's header), so an edited value, a line copied in from another search's file, damage on disk or
a line written before lines carried digests no longer matches. Such a line, or one that holds a key
twice, is *damaged*: readers drop it, so what it held is measured again, and count it. The digest has
no secret: it catches edits and damage, not someone who recomputes it on purpose.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .jsonfile import DuplicateKey, unique_keys

DIGEST_FIELD = "digest"
SHOWN_LINES = 5  # line numbers a note names before "..."


@dataclass(frozen=True)
class Damaged:
    """A line that must not be trusted. ``key`` is the key it names, when it names one: a valid line for
    that key elsewhere in the file still holds the measurement, so nothing is measured again for it."""
    key: str | None


class NotJson:
    """Text that is not JSON, as a line cut short by a crash always is (JSON's null is None)."""


NOT_JSON = NotJson()


def digest_of(content: Mapping[str, object], context: object) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``[context, content]``."""
    canonical = json.dumps([context, content], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def digested_line(content: Mapping[str, object], context: object) -> str:
    """``content`` as one JSON line (newline included) with its digest under ``DIGEST_FIELD``."""
    if DIGEST_FIELD in content:
        raise ValueError(f"content already holds a {DIGEST_FIELD!r} field")
    return json.dumps({**content, DIGEST_FIELD: digest_of(content, context)}) + "\n"


def parse_strict(text: str) -> object:
    """The JSON value of ``text``; ``Damaged`` for a key repeated in one object, or nesting deeper than
    the parser goes; ``NOT_JSON`` when ``text`` is not JSON."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys("line"))
    except DuplicateKey:
        return Damaged(_named_key(text))
    except json.JSONDecodeError:
        return NOT_JSON
    except (ValueError, RecursionError):  # integers longer than Python converts; nesting too deep
        return Damaged(None)


def _named_key(text: str) -> str | None:
    """The ``key`` a line with a repeated field names (the last one, as plain JSON reads it), if any."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value.get("key") if isinstance(value, dict) and isinstance(value.get("key"), str) else None


def read_digested(text: str, context: object) -> dict | Damaged | NotJson:
    """The content of a line ``digested_line`` wrote for ``context`` (digest removed); ``Damaged`` for a
    line that is JSON but not such a line; ``NOT_JSON`` for text that is not JSON."""
    value = parse_strict(text)
    if isinstance(value, (Damaged, NotJson)):
        return value
    if not isinstance(value, dict):
        return Damaged(None)
    content = {name: item for name, item in value.items() if name != DIGEST_FIELD}
    if value.get(DIGEST_FIELD) != digest_of(content, context):
        return Damaged(content["key"] if isinstance(content.get("key"), str) else None)
    return content


def lines_measured_again(damaged: list[tuple[int, str | None]], valid_keys) -> list[int]:
    """Of the ``damaged`` lines (line number, the key it names or None), those whose measurement no valid
    line holds: a damaged line whose key a valid line has (measured again by an earlier run) costs nothing."""
    return [line for line, key in damaged if key is None or key not in valid_keys]


def dropped_note(path: Path, what: str, lines: list[int], again: str) -> str | None:
    """One line telling the user that ``lines`` of ``what`` at ``path`` were dropped, and what follows
    (``again``); None when no line was."""
    if not lines:
        return None
    shown = ", ".join(str(n) for n in lines[:SHOWN_LINES]) + (", ..." if len(lines) > SHOWN_LINES else "")
    plural = "s" if len(lines) != 1 else ""
    return (f"{what} {path}: {len(lines)} damaged line{plural} dropped (line{plural} {shown}: edited, corrupt, "
            f"or written before qslm gave each line a digest); {again}")
