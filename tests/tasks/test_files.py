"""Readers of users' files: tables and JSON lines with their own column names, and every bad-file error."""
from __future__ import annotations

import os

import pytest

from qslm.data.examples import Example
from qslm.errors import QslmError
from qslm.tasks.files import read_examples, read_text_file


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_other_columns_and_named_labels(tmp_path):
    path = write(tmp_path / "reviews.csv", 'id,review,sentiment\n1,"good, really",pos\n2,bad,neg\n\n3,"a ""fine"" one",pos\n')
    examples = read_examples(path, text_column="review", label_column="sentiment", labels=["neg", "pos"])
    assert examples == [Example("good, really", 1), Example("bad", 0), Example('a "fine" one', 1)]


def test_tsv_keeps_quotes_as_text(tmp_path):
    path = write(tmp_path / "dev.tsv", 'sentence\tlabel\nit \'s " quoted\t1\nplain\t0\n')
    assert read_examples(path) == [Example('it \'s " quoted', 1), Example("plain", 0)]


def test_jsonl_with_text_key_and_integer_labels(tmp_path):
    path = write(tmp_path / "val.jsonl", '{"text": "one", "label": 2}\n\n{"text": "two", "label": "0", "extra": 1}\n')
    assert read_examples(path) == [Example("one", 2), Example("two", 0)]


def test_plain_text(tmp_path):
    assert read_text_file(write(tmp_path / "corpus.txt", "a line\nanother\n")) == "a line\nanother\n"


@pytest.mark.parametrize("name, content, options, message", [
    ("a.csv", "review,label\nx,0\n", {"text_column": "body"},
     "a.csv:1: no text column 'body'; columns found: review, label"),
    ("a.csv", "review,label\nx,0\n", {}, "a.csv:1: no text column (sentence or text); columns found: review, label"),
    ("a.tsv", "sentence\tstars\nx\t0\n", {}, "a.tsv:1: no label column 'label'; columns found: sentence, stars"),
    ("a.jsonl", '{"text": "x", "label": 0}\n{"text": "y"}\n', {},
     "a.jsonl:2: no label column 'label'; columns found: text"),
    ("a.csv", "text,label\nx,neg\ny,meh\n", {"labels": ["neg", "pos"]}, "a.csv:3: unknown label 'meh'; known labels: neg, pos"),
    ("a.csv", "text,label\nx,pos\n", {}, "a.csv:2: label 'pos' is not an integer 0..K-1; for named labels give the "
                                         "names in class order with --labels"),
    ("a.jsonl", '{"text": "x", "label": -1}\n', {}, "a.jsonl:1: label -1 is not an integer"),
    ("a.tsv", "sentence\tlabel\nx\t0\ny\t1\textra\n", {}, "a.tsv:3: expected 2 columns (sentence, label), got 3"),
    ("a.csv", 'text,label\n"x"y,0\n', {}, "a.csv:2: ',' expected after '\"'; expected a CSV row"),
    ("a.csv", "", {}, "a.csv is empty"),
    ("a.tsv", "sentence\tlabel\n", {}, "a.tsv: no examples after the header"),
    ("a.jsonl", '{"text": "x", "label": 0}\n{"text": "y", label: 1}\n', {}, "a.jsonl:2 is not valid JSON"),
    ("a.jsonl", '["x", 0]\n', {}, "a.jsonl:1: a JSON list; expected one JSON object a line"),
    ("a.jsonl", '{"text": "x", "label": 0}\n{"text": "y", "label": 0, "label": 1}\n', {},
     "a.jsonl:2: key 'label' appears more than once in one object"),
    ("a.jsonl", '{"text": 5, "label": 0}\n', {}, "a.jsonl:1: 'text' is 5; expected a string"),
    ("a.xlsx", "text,label\n", {}, "a.xlsx: unknown file type '.xlsx'; expected one of .tsv, .csv, .jsonl"),
    ("a.csv", "text,label\nx,0\n", {"labels": ["neg", "neg"]}, "neg named more than once"),
])
def test_bad_example_files(tmp_path, name, content, options, message):
    path = write(tmp_path / name, content)
    with pytest.raises(QslmError) as info:
        read_examples(path, **options)
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value) or "named more than once" in message


def test_undecodable_byte_names_its_line(tmp_path):
    path = write(tmp_path / "a.tsv", b"sentence\tlabel\nfine\t0\nbad \xff byte\t1\n")
    with pytest.raises(QslmError, match=r"a\.tsv:3: byte 0xff is not UTF-8"):
        read_examples(path)
    with pytest.raises(QslmError, match=r"a\.tsv:3: byte 0xff is not UTF-8"):
        read_text_file(path)


@pytest.mark.parametrize("content, message", [(" \n\n", "is empty"), (None, "missing data file")])
def test_bad_text_files(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        write(path, content)
    with pytest.raises(QslmError, match=message):
        read_text_file(path)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    from qslm.tasks.files import read_examples

    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\ngood film,1\nbad film,0\n".encode("utf-8"))
    assert [(e.sentence, e.label) for e in read_examples(path)] == [("good film", 1), ("bad film", 0)]


def test_a_folder_or_a_fifo_is_not_called_missing(tmp_path):
    folder = tmp_path / "valid.txt"
    folder.mkdir()
    with pytest.raises(QslmError, match=f"^{folder} is a folder, expected a data file: a UTF-8 text file$"):
        read_text_file(folder)
    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)  # opening it to read would wait for a writer: the test would hang
    with pytest.raises(QslmError, match=f"^{fifo} is not a regular file \\(a FIFO\\), expected a data file"):
        read_examples(fifo)
