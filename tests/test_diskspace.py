"""Write failures of native writers (safetensors, tokenizers) as OSErrors naming the file, and the free-space
check made before long work."""
from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from qslm.diskspace import native_write, os_error_of, require_free_space
from qslm.errors import QslmError

DiskUsage = namedtuple("DiskUsage", "total used free")
FULL = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors 0.8's words


def fake_free_space(monkeypatch, free: int) -> list:
    """``shutil.disk_usage`` of a tiny file system with ``free`` bytes left; returns the paths asked about."""
    asked = []

    def usage(path):
        asked.append(path)
        return DiskUsage(10 * 2 ** 20, 10 * 2 ** 20 - free, free)
    monkeypatch.setattr(shutil, "disk_usage", usage)
    return asked


@pytest.mark.parametrize("message, code", [
    (FULL, errno.ENOSPC),
    ("No space left on device", errno.ENOSPC),  # no errno in the message: the words say it
    ('Error while serializing: I/O error: Permission denied (os error 13) at path "x/.tmpA1"', errno.EACCES),
    ("Error while serializing: I/O error: Read-only file system (os error 30)", errno.EROFS),
])
def test_native_errors_stand_for_os_errors(message, code, tmp_path):
    err = os_error_of(SafetensorError(message), tmp_path / "model.safetensors")
    assert isinstance(err, OSError) and err.errno == code
    assert err.filename == str(tmp_path / "model.safetensors")


def test_safetensors_disk_full_is_an_os_error_naming_the_file(tmp_path):
    with pytest.raises(OSError) as raised, native_write(tmp_path / "model.safetensors"):
        raise SafetensorError(FULL)
    assert raised.value.errno == errno.ENOSPC and raised.value.strerror == "No space left on device"
    assert raised.value.filename == str(tmp_path / "model.safetensors")


def test_tokenizers_disk_full_is_an_os_error(tmp_path):
    with pytest.raises(OSError) as raised, native_write(tmp_path / "tokenizer.json"):
        raise Exception("No space left on device (os error 28)")  # tokenizers raises a bare Exception
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "tokenizer.json")


def test_a_real_safetensors_failure_is_converted(tmp_path):
    missing = tmp_path / "gone" / "model.safetensors"  # its folder does not exist: ENOENT from safetensors
    with pytest.raises(OSError) as raised, native_write(missing):
        save_file({"w": torch.zeros(3)}, str(missing))
    assert raised.value.errno == errno.ENOENT and raised.value.filename == str(missing)


def test_other_safetensors_errors_name_the_file(tmp_path):
    with pytest.raises(QslmError, match=f"cannot write {tmp_path}/model.safetensors: bad dtype"), \
            native_write(tmp_path / "model.safetensors"):
        raise SafetensorError("bad dtype")


@pytest.mark.parametrize("raised", [ValueError("No space left on device (os error 28)"), Exception("a bug"),
                                    OSError(errno.EIO, "Input/output error", "x")])
def test_other_errors_pass_unchanged(raised, tmp_path):
    with pytest.raises(type(raised)) as caught, native_write(tmp_path / "x"):
        raise raised
    assert caught.value is raised


def test_free_space_check(monkeypatch, tmp_path):
    asked = fake_free_space(monkeypatch, 1000)
    require_free_space(tmp_path, 1000, "the model")  # exactly enough
    with pytest.raises(QslmError) as refused:
        require_free_space(tmp_path, 2_500_000, "the model")
    assert str(refused.value) == (f"not enough free space in {tmp_path} for the model: 2,500,000 bytes (2.5 MB) "
                                  "needed, 1,000 bytes (1.0 kB) free; free some space or choose another output folder")
    assert asked == [tmp_path, tmp_path]
    with pytest.raises(QslmError, match="free; rerun later$"):
        require_free_space(tmp_path, 2000, "the model", then="rerun later")
