"""The evaluation journal: append, reload, refuse another search's journal, survive a torn last line, drop
(and count) lines that were edited, damaged or written without a digest."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qslm.digest_lines import digested_line
from qslm.errors import QslmError
from qslm.search.journal import Journal, assignment_key, entry_of, measured_of
from qslm.tasks.scores import Measured

HEADER = {"model": "abc", "task": "sst2", "bits": [2, 4, 8]}


def entry(assignment: dict[str, int], metric: float) -> dict:
    return {"key": assignment_key(assignment), "metric": metric, "latency_s": 0.1}


def test_assignment_key_ignores_order():
    assert assignment_key({"a": 2, "b": 4}) == assignment_key({"b": 4, "a": 2})
    assert assignment_key({"a": 2, "b": 4}) != assignment_key({"a": 4, "b": 2})


def test_append_and_reload(tmp_path):
    path = tmp_path / "out" / "journal.jsonl"
    journal = Journal(path, HEADER)
    first, second = entry({"a": 2}, 0.5), entry({"a": 4}, 0.75)
    journal.add(first)
    journal.add(second)
    assert json.loads(path.read_text().splitlines()[0]) == {"header": HEADER}
    reloaded = Journal(path, dict(HEADER))
    assert reloaded.entries == {first["key"]: first, second["key"]: second}
    assert reloaded.get(first["key"]) == first and reloaded.get(assignment_key({"a": 8})) is None
    assert len(path.read_text().splitlines()) == 3  # reloading writes nothing


def test_different_header_is_refused(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, 0.5))
    with pytest.raises(QslmError, match="different search"):
        Journal(path, {**HEADER, "task": "wikitext2"})


@pytest.mark.parametrize("text, message", [("", "empty"), ("not json\n", "corrupt")])
def test_empty_or_corrupt_journal_is_an_error(tmp_path, text, message):
    path = tmp_path / "journal.jsonl"
    path.write_text(text)
    with pytest.raises(QslmError, match=message):
        Journal(path, HEADER)


def test_line_cut_short_is_ignored(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    kept = entry({"a": 2}, 0.5)
    journal.add(kept)
    with open(path, "a") as handle:  # a crash in the middle of writing the next entry
        handle.write(json.dumps(entry({"a": 4}, 0.75))[:20])
    assert Journal(path, HEADER).entries == {kept["key"]: kept}


def test_entries_added_after_a_torn_line_survive(tmp_path):
    """Crash, resume (which appends), crash again: what the resumed run wrote must still be read."""
    path = tmp_path / "journal.jsonl"
    first = entry({"a": 2}, 0.5)
    Journal(path, HEADER).add(first)
    with open(path, "a") as handle:
        handle.write('{"key": "[[\\"a\\",4]]", "met')
    resumed = Journal(path, HEADER)
    later = [entry({"a": 4}, 0.75), entry({"a": 8}, 0.8)]
    for item in later:
        resumed.add(item)
    assert Journal(path, HEADER).entries == {e["key"]: e for e in [first, *later]}


@pytest.mark.parametrize("first_line", ['[1, 2]', '"header"', '5', 'null', '{"header": 5}', '{"header": [1]}',
                                        '{"model": "abc"}', '{"header": {}, "extra": 1}',
                                        '{"header": {}, "header": {}}'])
def test_header_that_is_not_a_header_object(tmp_path, first_line):
    path = tmp_path / "journal.jsonl"
    path.write_text(first_line + "\n")
    with pytest.raises(QslmError, match=f"journal {path} is corrupt: line 1 is not a header object"):
        Journal(path, HEADER)


WRONG_SHAPES = [
    {"metric": 0.5, "latency_s": 0.1},
    {"key": 3, "metric": 0.5, "latency_s": 0.1},
    {"key": "[]", "latency_s": 0.1},
    {"key": "[]", "metric": "0.5", "latency_s": 0.1},
    {"key": "[]", "metric": True, "latency_s": 0.1},
    {"key": "[]", "metric": 0.5},
    {"key": "[]", "metric": 0.5, "latency_s": 0.1, "scores": "not base64!"},
    {"key": "[]", "metric": 0.5, "latency_s": 0.1, "scores": "AAAA"},
    {"key": "[]", "metric": 0.5, "latency_s": 0.1, "scores": [1.0]},
]


@pytest.mark.parametrize("line", ['[1, 2]', '"key"', 'null', '{"key": "[]"', 'not json']
                         + [json.dumps(shape) for shape in WRONG_SHAPES]  # without a digest
                         + [digested_line(shape, HEADER).rstrip("\n") for shape in WRONG_SHAPES])
def test_lines_that_are_not_entries_are_dropped_and_counted(tmp_path, line):
    """Whatever is on a line, a journal loads (no raw error) and the line is neither trusted nor lost count of,
    a digest that matches a malformed entry included."""
    path = tmp_path / "journal.jsonl"
    kept, later = entry({"a": 2}, 0.5), entry({"a": 8}, 0.8)
    Journal(path, HEADER).add(kept)
    with open(path, "a") as handle:
        handle.write(line + "\n")
    Journal(path, HEADER).add(later)
    loaded = Journal(path, HEADER)
    assert loaded.entries == {kept["key"]: kept, later["key"]: later}  # what follows the line is still read
    assert loaded.dropped == 1 and loaded.dropped_lines == [3]


def test_an_edited_metric_is_dropped_and_counted(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    kept, edited = entry({"a": 2}, 0.5), entry({"a": 4}, 0.75)
    journal.add(kept)
    journal.add(edited)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"metric": 0.75', '"metric": 99.0')
    assert lines[2] != path.read_text().splitlines()[2]
    path.write_text("\n".join(lines) + "\n")
    loaded = Journal(path, HEADER)
    assert loaded.entries == {kept["key"]: kept} and loaded.get(edited["key"]) is None  # measured again
    assert loaded.dropped == 1
    assert loaded.note() == (f"journal {path}: 1 damaged line dropped (line 3: edited, corrupt, or written before "
                             "qslm gave each line a digest); those plans are measured again")


def test_a_line_without_a_digest_is_dropped(tmp_path):
    """A journal written before lines carried digests: its entries are measured again, with a note."""
    path = tmp_path / "journal.jsonl"
    old = [entry({"a": bits}, 0.5) for bits in (2, 4, 8)]
    path.write_text("".join(json.dumps(line) + "\n" for line in [{"header": HEADER}, *old]))
    loaded = Journal(path, HEADER)
    assert loaded.entries == {} and loaded.dropped_lines == [2, 3, 4]
    assert loaded.note().startswith(f"journal {path}: 3 damaged lines dropped (lines 2, 3, 4: ")


def test_a_repeated_field_is_dropped(tmp_path):
    """Plain JSON would read the last ``metric``; a line holding one twice is not what qslm writes."""
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, 0.5))
    line = path.read_text().splitlines()[1]
    with open(path, "a") as handle:
        handle.write(line.replace('"metric": 0.5', '"metric": 0.5, "metric": 99.0') + "\n")
    loaded = Journal(path, HEADER)
    assert loaded.get(assignment_key({"a": 2}))["metric"] == 0.5
    assert loaded.dropped == 0 and loaded.dropped_lines == []  # line 2 still holds that plan: nothing measured again
    path.write_text(path.read_text().replace(line + "\n", "", 1))  # only the repeated-field line left
    assert Journal(path, HEADER).dropped_lines == [2]


def test_a_line_from_another_search_is_dropped(tmp_path):
    """The digest covers the header: another search's measurement of the same plan is not trusted here."""
    other, path = tmp_path / "other.jsonl", tmp_path / "journal.jsonl"
    Journal(other, {**HEADER, "task": "wikitext2"}).add(entry({"a": 2}, 0.5))
    Journal(path, HEADER)
    with open(path, "a") as handle:
        handle.write(other.read_text().splitlines()[1] + "\n")
    loaded = Journal(path, HEADER)
    assert loaded.entries == {} and loaded.dropped == 1


def test_measured_again_after_a_dropped_line(tmp_path):
    """The new measurement is appended after the damaged line, a later load takes it, and reports nothing:
    no plan is measured again a second time."""
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, 0.5))
    path.write_text(path.read_text().replace('"metric": 0.5', '"metric": 99.0'))
    resumed = Journal(path, HEADER)
    assert resumed.dropped == 1 and resumed.get(assignment_key({"a": 2})) is None
    measured = entry({"a": 2}, 0.5)
    resumed.add(measured)
    again = Journal(path, HEADER)
    assert again.entries == {measured["key"]: measured}
    assert again.dropped == 0 and again.note() is None
    assert len(path.read_text().splitlines()) == 3  # the damaged line stays: the file is only appended to


def test_the_newest_valid_line_for_a_key_wins(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    journal.add(entry({"a": 2}, 0.5))
    journal.add(entry({"a": 2}, 0.6))
    assert Journal(path, HEADER).get(assignment_key({"a": 2}))["metric"] == 0.6


def test_entry_lines_carry_a_digest_and_the_header_none(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, 0.5))
    header, line = (json.loads(text) for text in path.read_text().splitlines())
    assert header == {"header": HEADER}
    assert set(line) == {"key", "metric", "latency_s", "digest"} and len(line["digest"]) == 64


def test_a_nan_metric_is_read_back(tmp_path):
    """``json.dumps`` writes a NaN metric (a diverged candidate) as NaN; reading it back is no error."""
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, float("nan")))
    metric = Journal(path, HEADER).get(assignment_key({"a": 2}))["metric"]
    assert math.isnan(metric)


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, 0.5))
    with open(path, "ab") as handle:
        handle.write(b'{"key": "\xff"}\n')
    with pytest.raises(QslmError, match=f"journal {path}:3 is not UTF-8 text"):
        Journal(path, HEADER)


def test_per_example_scores_round_trip_exactly(tmp_path):
    path = tmp_path / "journal.jsonl"
    scores = np.array([100.0, 0.0, 1 / 3, -2.5e-300])
    Journal(path, HEADER).add(entry_of(assignment_key({"a": 2}), Measured(25.0, scores), 0.1))
    read = measured_of(Journal(path, HEADER).get(assignment_key({"a": 2})))
    assert read.metric == 25.0 and read.scores.dtype == np.float64 and np.array_equal(read.scores, scores)
    assert measured_of(entry({"a": 4}, 0.5)).scores is None
