"""Atomic folders and files: the committed one replaces the old one whole and gets ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from qslm.atomic import atomic_folder, commit_folder, write_text_atomically


def test_commit_replaces_the_old_folder_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    tmp = atomic_folder(out)
    (tmp / "new.txt").write_text("new")
    commit_folder(tmp, out)
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_committed_folder_follows_the_umask_not_the_private_temporary_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        tmp = atomic_folder(tmp_path / "model")
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o700  # temporary folders are private
        (tmp / "weights").write_text("w")
        os.chmod(tmp / "weights", 0o600)  # as a writer staging through a temporary file leaves it
        commit_folder(tmp, tmp_path / "model")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "weights").stat().st_mode) == 0o644


def test_text_written_atomically_replaces_the_file_whole(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_text_atomically(target, b"not text")  # fails while writing the temporary file
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_an_atomically_written_file_follows_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_text_atomically(tmp_path / "f", "x")  # mkstemp alone would give 0o600
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640
