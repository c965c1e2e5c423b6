"""The output folder's lock on its own: shared by nested claims of one thread, refused to any other open."""
from __future__ import annotations

import fcntl
import os
import threading

import pytest

from qslm.errors import QslmError
from qslm.folder_lock import LOCK_FILE, FolderLock


def test_nested_claims_in_one_thread_share_the_lock_and_the_last_release_removes_it(tmp_path):
    outer = FolderLock.acquire(tmp_path)
    inner = FolderLock.acquire(tmp_path)
    assert inner is outer and (tmp_path / LOCK_FILE).is_file()
    inner.release()
    assert (tmp_path / LOCK_FILE).is_file()  # the outer claim still holds it
    outer.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_another_thread_or_open_file_is_refused_naming_the_holder(tmp_path):
    lock = FolderLock.acquire(tmp_path)
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(QslmError, FolderLock.acquire, tmp_path)))
    thread.start()
    thread.join()
    assert f"pid {os.getpid()}" in str(errors[0].value) and "in use by another qslm job" in str(errors[0].value)
    lock.release()
    FolderLock.acquire(tmp_path).release()  # free again


def test_a_stale_lock_file_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text('{"pid": 1, "host": "gone"}\n')  # a killed job's file, not locked
    lock = FolderLock.acquire(tmp_path)
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    lock.release()
