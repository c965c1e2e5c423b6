"""Readers of users' files: labelled examples from ``.tsv``, ``.csv`` or ``.jsonl``, text from plain files.

A table (TSV, CSV) has a header row; a JSON-lines file holds one object a line. The text is read from
``text_column`` (default: ``sentence``, else ``text``) and the label from ``label_column`` (default
``label``): an integer ``0..K-1``, or a name when ``labels`` lists the names in class order
(``["neg", "pos"]``: neg is 0, pos is 1). Every error names the file, the line and what was expected.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data.examples import Example
from ..data.paths import require_file
from ..errors import QslmError
from ..jsonfile import parse_json

TABLE_DELIMITERS = {".tsv": "\t", ".csv": ","}
EXAMPLE_SUFFIXES = (*TABLE_DELIMITERS, ".jsonl")
DEFAULT_TEXT_COLUMNS = ("sentence", "text")
DEFAULT_LABEL_COLUMN = "label"


def read_text_file(path: str | Path) -> str:
    """A UTF-8 file's text (for a language model: one paragraph or sentence a line); an undecodable byte
    is reported with its line."""
    path = require_file(Path(path), "a UTF-8 text file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not part of the text
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise QslmError(f"{path}:{line}: byte {raw[err.start]:#04x} is not UTF-8; expected UTF-8 text") from None
    if not text.strip():
        raise QslmError(f"{path} is empty; expected UTF-8 text")
    return text


def read_examples(path: str | Path, text_column: str | None = None, label_column: str | None = None,
                  labels: Sequence[str] | None = None) -> list[Example]:
    """Labelled examples of a ``.tsv``, ``.csv`` or ``.jsonl`` file, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXAMPLE_SUFFIXES:
        raise QslmError(f"{path}: unknown file type {path.suffix or '(none)'!r}; expected one of "
                        f"{', '.join(EXAMPLE_SUFFIXES)}")
    if labels is not None:
        labels = _label_names(labels)
    text = read_text_file(path)
    label_column = label_column or DEFAULT_LABEL_COLUMN
    if suffix == ".jsonl":
        records = _json_records(path, text)
    else:
        header, records = _table_records(path, text, TABLE_DELIMITERS[suffix])
        columns = dict.fromkeys(header)
        _text_key(path, 1, columns, text_column)  # a table's columns are its header's: report them there
        _check_label_column(path, 1, columns, label_column)
    examples = []
    for line, fields in records:
        text_key = _text_key(path, line, fields, text_column)
        _check_label_column(path, line, fields, label_column)
        sentence = fields[text_key]
        if not isinstance(sentence, str):
            raise QslmError(f"{path}:{line}: {text_key!r} is {sentence!r}; expected a string")
        examples.append(Example(sentence, _label(path, line, fields[label_column], labels)))
    if not examples:
        raise QslmError(f"{path}: no examples after the header; expected one example a line")
    return examples


def _label_names(labels: Sequence[str]) -> list[str]:
    names = [str(name).strip() for name in labels]
    if not names or any(not name for name in names):
        raise QslmError(f"label names {list(labels)!r}: expected non-empty names in class order, e.g. neg,pos")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise QslmError(f"label names {names}: {', '.join(repeated)} named more than once")
    return names


def _found(fields: dict) -> str:
    return f"columns found: {', '.join(map(str, fields)) or '(none)'}"


def _text_key(path: Path, line: int, fields: dict, text_column: str | None) -> str:
    if text_column is not None:
        if text_column not in fields:
            raise QslmError(f"{path}:{line}: no text column {text_column!r}; {_found(fields)}")
        return text_column
    for name in DEFAULT_TEXT_COLUMNS:
        if name in fields:
            return name
    raise QslmError(f"{path}:{line}: no text column ({' or '.join(DEFAULT_TEXT_COLUMNS)}); {_found(fields)}; "
                    "name it with --text-column")


def _check_label_column(path: Path, line: int, fields: dict, label_column: str) -> None:
    if label_column not in fields:
        raise QslmError(f"{path}:{line}: no label column {label_column!r}; {_found(fields)}")


def _label(path: Path, line: int, value, labels: list[str] | None) -> int:
    if labels is not None:
        name = str(value).strip()
        if name not in labels:
            raise QslmError(f"{path}:{line}: unknown label {value!r}; known labels: {', '.join(labels)}")
        return labels.index(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise QslmError(f"{path}:{line}: label {value!r} is not an integer 0..K-1; for named labels give the "
                    "names in class order with --labels (e.g. --labels neg,pos)")


def _table_records(path: Path, text: str, delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """(header, rows): the header's column names and (line, column -> value) of each non-blank row. TSV
    is read unquoted (a quote is part of the text, as in GLUE files); CSV follows the usual quoting rules."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, quoting=quoting, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"

    def next_row() -> list[str] | None:
        try:
            return next(reader, None)
        except csv.Error as err:
            raise QslmError(f"{path}:{reader.line_num}: {err}; expected a {kind} row") from None

    header = next_row() or []
    if len(set(header)) != len(header):
        raise QslmError(f"{path}:1: header {header} names a column twice; expected distinct column names")

    def rows() -> Iterator[tuple[int, dict]]:
        while (row := next_row()) is not None:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise QslmError(f"{path}:{reader.line_num}: expected {len(header)} columns "
                                f"({', '.join(header)}), got {len(row)}")
            yield reader.line_num, dict(zip(header, row))
    return header, rows()


def _json_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    for line, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        record = parse_json(row, f"{path}:{line}")
        if not isinstance(record, dict):
            raise QslmError(f"{path}:{line}: a JSON {type(record).__name__}; expected one JSON object a line")
        yield line, record
