"""Digested JSON lines: what is read back is exactly what was written for the same context; anything else
is damaged (with the key it names) or not JSON."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qslm.digest_lines import (
    NOT_JSON,
    Damaged,
    digest_of,
    digested_line,
    dropped_note,
    parse_strict,
    read_digested,
)

CONTEXT = {"model": "abc", "task": "sst2"}
CONTENT = {"key": "[[\"a\",4]]", "metric": 0.1 + 0.2, "latency_s": 1e-300, "nested": {"b": [1, -0.0], "a": None}}


def test_a_written_line_reads_back_exactly():
    line = digested_line(CONTENT, CONTEXT)
    assert line.endswith("\n") and line.count("\n") == 1
    assert read_digested(line.rstrip("\n"), CONTEXT) == CONTENT
    assert read_digested(line, dict(reversed(list(CONTEXT.items())))) == CONTENT  # key order is not identity


def test_a_nan_value_reads_back():
    read = read_digested(digested_line({"key": "k", "metric": math.nan}, CONTEXT), CONTEXT)
    assert read["key"] == "k" and math.isnan(read["metric"])


def test_the_digest_covers_content_and_context():
    digest = digest_of(CONTENT, CONTEXT)
    assert len(digest) == 64 and digest == digest_of(dict(reversed(list(CONTENT.items()))), CONTEXT)
    assert digest != digest_of({**CONTENT, "metric": 99.0}, CONTEXT)
    assert digest != digest_of(CONTENT, {**CONTEXT, "task": "wikitext2"})


@pytest.mark.parametrize("edit", [
    lambda line: line.replace('"metric": 0.30000000000000004', '"metric": 99.0'),  # an edited value
    lambda line: line.replace('"digest": "', '"digest": "0'),  # an edited digest
    lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != "digest"}),  # no digest
    lambda line: line.replace('"metric"', '"metric": 99.0, "metric"'),  # a field twice
])
def test_an_edited_line_is_damaged_and_names_its_key(edit):
    line = digested_line(CONTENT, CONTEXT).rstrip("\n")
    edited = edit(line)
    assert edited != line
    assert read_digested(edited, CONTEXT) == Damaged(CONTENT["key"])


def test_a_line_for_another_context_is_damaged():
    assert read_digested(digested_line(CONTENT, CONTEXT), {**CONTEXT, "task": "wikitext2"}) == Damaged(CONTENT["key"])


@pytest.mark.parametrize("text", ["null", "5", "[1, 2]", '"key"', '{"digest": 5}', '{"key": 3}'])
def test_json_that_is_not_a_digested_object_is_damaged_without_a_key(text):
    assert read_digested(text, CONTEXT) == Damaged(None)


@pytest.mark.parametrize("text", ["", "garbage", '{"key": "k", "met', "{"])
def test_text_that_is_not_json_is_told_apart(text):
    assert read_digested(text, CONTEXT) is NOT_JSON


def test_parse_strict_refuses_a_repeated_key_at_any_depth():
    assert parse_strict('{"a": {"b": 1, "b": 2}}') == Damaged(None)
    assert parse_strict('{"key": "k", "x": {"b": 1, "b": 2}}') == Damaged("k")
    assert parse_strict("[" * 100_000 + "]" * 100_000) == Damaged(None)  # deeper than the parser goes
    assert parse_strict("1" * 5000) == Damaged(None)  # longer than Python converts
    assert parse_strict('{"a": 1}') == {"a": 1} and parse_strict("null") is None


def test_content_with_a_digest_field_is_refused():
    with pytest.raises(ValueError, match="digest"):
        digested_line({"key": "k", "digest": "x"}, CONTEXT)


def test_dropped_note():
    path = Path("out/journal.jsonl")
    assert dropped_note(path, "journal", [], "those plans are measured again") is None
    assert dropped_note(path, "journal", [4], "again") == (
        "journal out/journal.jsonl: 1 damaged line dropped (line 4: edited, corrupt, or written before qslm gave "
        "each line a digest); again")
    many = dropped_note(path, "journal", list(range(2, 10)), "again")
    assert many.startswith("journal out/journal.jsonl: 8 damaged lines dropped (lines 2, 3, 4, 5, 6, ...: ")
