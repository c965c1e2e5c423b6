"""Atomic folders: the committed folder replaces the old one whole and gets ordinary permissions."""
from __future__ import annotations

import os
import stat

from qslm.atomic import atomic_folder, commit_folder


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
