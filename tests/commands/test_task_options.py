"""Task options shared by eval, profile and search: parsing and the task they build."""
from __future__ import annotations

import argparse

import pytest

from qslm.checkpoint import load_model
from qslm.commands.task_options import add_task_arguments, parse_data_files, task_from_args
from qslm.errors import QslmError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_task_arguments(parser)
    return parser.parse_args(list(argv))


def test_data_files_by_role():
    assert parse_data_files(" validation = a.csv,test=b.csv ,calibration=c.csv") == {
        "validation": "a.csv", "test": "b.csv", "calibration": "c.csv"}
    assert parse_data_files(None) is None


@pytest.mark.parametrize("text, message", [
    ("a.csv", "--data-files item 'a.csv': expected ROLE=FILE"),
    ("test=", "--data-files item 'test=': expected ROLE=FILE"),
    ("test=a,test=b", "--data-files names the test file twice"),
])
def test_bad_data_files(text, message):
    with pytest.raises(QslmError, match=message):
        parse_data_files(text)


def test_task_from_the_options(tiny_classifier, tmp_path):
    path = tmp_path / "val.csv"
    path.write_text("body,y\none two,good\nthree,bad\n")
    args = parse("--task", "text-classification", "--data-files", f"validation={path}", "--text-column", "body",
                 "--label-column", "y", "--labels", "bad,good")
    task = task_from_args(args, load_model(tiny_classifier), profile_size=1)
    assert task.name == "text-classification" and len(task.profiling) == 1
    assert sum(ids.shape[0] for ids, _ in task.calibration) == 2


def test_a_task_must_be_named(tiny_classifier):
    with pytest.raises(QslmError, match="no task: give --task"):
        task_from_args(parse(), load_model(tiny_classifier))
    with pytest.raises(SystemExit):
        parse("--task", "imdb")
