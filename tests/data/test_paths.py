"""Data folder resolution: --data-dir wins over $QSLM_DATA_DIR; errors say what to do."""
from __future__ import annotations

import os

import pytest

from qslm.data.paths import DATA_DIR_ENV, require_file, resolve_data_dir
from qslm.errors import QslmError


def test_explicit_folder_wins_over_environment(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "b"))
    assert resolve_data_dir(tmp_path / "a") == tmp_path / "a"
    assert resolve_data_dir(str(tmp_path / "a")) == tmp_path / "a"
    assert resolve_data_dir() == tmp_path / "b"


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    assert resolve_data_dir("~/data") == tmp_path / "data"


def test_no_folder_given(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(QslmError, match=f"--data-dir DIR or set {DATA_DIR_ENV}"):
        resolve_data_dir()
    monkeypatch.setenv(DATA_DIR_ENV, "")
    with pytest.raises(QslmError, match="no data folder given"):
        resolve_data_dir()


def test_missing_folder_or_a_file(tmp_path):
    with pytest.raises(QslmError, match=f"{tmp_path / 'nowhere'} does not exist"):
        resolve_data_dir(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(QslmError, match="is not a folder"):
        resolve_data_dir(tmp_path / "file")


def test_require_file(tmp_path):
    (tmp_path / "here.txt").write_text("x")
    assert require_file(tmp_path / "here.txt", "text") == tmp_path / "here.txt"
    with pytest.raises(QslmError, match=f"missing data file {tmp_path / 'gone.txt'}: expected a thing"):
        require_file(tmp_path / "gone.txt", "a thing")
    with pytest.raises(QslmError, match=f"^{tmp_path} is a folder, expected a data file: a file, not a folder$"):
        require_file(tmp_path, "a file, not a folder")


def test_a_fifo_is_named_and_never_opened(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it to read would wait for a writer: the test would hang
    with pytest.raises(QslmError, match=f"^{fifo} is not a regular file \\(a FIFO\\), expected a text corpus: text$"):
        require_file(fifo, "text", "text corpus")
