"""The evaluation journal: append, reload, refuse another search's journal, survive a torn last line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

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
                                        '{"model": "abc"}', '{"header": {}, "extra": 1}'])
def test_header_that_is_not_a_header_object(tmp_path, first_line):
    path = tmp_path / "journal.jsonl"
    path.write_text(first_line + "\n")
    with pytest.raises(QslmError, match=f"journal {path} is corrupt: line 1 is not a header object"):
        Journal(path, HEADER)


@pytest.mark.parametrize("line, message", [
    ('[1, 2]', "expected an evaluation object .* got list"),
    ('"key"', "expected an evaluation object .* got str"),
    ('null', "expected an evaluation object .* got NoneType"),
    ('{"metric": 0.5, "latency_s": 0.1}', "'key' must be a string, got None"),
    ('{"key": 3, "metric": 0.5, "latency_s": 0.1}', "'key' must be a string, got 3"),
    ('{"key": "[]", "latency_s": 0.1}', "'metric' must be a number, got None"),
    ('{"key": "[]", "metric": "0.5", "latency_s": 0.1}', "'metric' must be a number, got '0.5'"),
    ('{"key": "[]", "metric": true, "latency_s": 0.1}', "'metric' must be a number, got True"),
    ('{"key": "[]", "metric": 0.5}', "'latency_s' must be a number, got None"),
    ('{"key": "[]", "metric": 0.5, "latency_s": 0.1, "scores": "not base64!"}', "'scores' must be base64 of float64"),
    ('{"key": "[]", "metric": 0.5, "latency_s": 0.1, "scores": "AAAA"}', "'scores' must be base64 of float64"),
    ('{"key": "[]", "metric": 0.5, "latency_s": 0.1, "scores": [1.0]}', "'scores' must be base64 of float64"),
])
def test_entries_of_the_wrong_shape_name_the_line(tmp_path, line, message):
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).add(entry({"a": 2}, 0.5))
    with open(path, "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(QslmError, match=f"journal {path}:3: {message}"):
        Journal(path, HEADER)


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
