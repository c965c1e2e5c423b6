"""Room on disk for what qslm writes, and write failures as errors that name the file.

safetensors and tokenizers write through native code and raise their own exception types when the write
fails (``SafetensorError: Error while serializing: I/O error: No space left on device (os error 28)``),
which no ``except OSError`` catches. ``native_write(path)`` turns them into the ``OSError`` they stand
for, naming ``path`` (ENOSPC when the message says the disk is full), so a command prints one line.

``require_free_space(folder, needed, what)`` refuses before long work whose files would not fit: a full
disk found before a search starts costs nothing, found at its end costs the whole search.

    require_free_space(out, bound, "the search's model and report")
    with native_write(path):
        save_file(tensors, str(path))
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from safetensors import SafetensorError

from .errors import QslmError

OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how native code's I/O errors end their message
DISK_FULL = "no space left on device"
FILE_SLACK = 4096  # a file's last block, partly filled, still takes a whole block of the disk


def os_error_of(err: BaseException, path: str | os.PathLike) -> OSError | None:
    """The ``OSError`` a native writer's exception stands for, naming ``path``; None when its message
    names no OS error."""
    message = str(err)
    found = OS_ERROR.search(message)
    if found is not None:
        code = int(found.group(1))
    elif DISK_FULL in message.lower():
        code = errno.ENOSPC
    else:
        return None
    return OSError(code, os.strerror(code), os.fspath(path))


@contextmanager
def native_write(path: str | os.PathLike) -> Iterator[None]:
    """Run a safetensors or tokenizers write of ``path``; its failure is raised as an ``OSError`` naming
    ``path`` (a safetensors failure that is no OS error: a ``QslmError`` naming it)."""
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        # tokenizers raises a bare Exception; anything else (a bug) keeps its traceback
        if not isinstance(err, SafetensorError) and type(err) is not Exception:
            raise
        converted = os_error_of(err, path)
        if converted is not None:
            raise converted from None
        if isinstance(err, SafetensorError):
            raise QslmError(f"cannot write {os.fspath(path)}: {err}") from None
        raise


def size_text(count: int) -> str:
    """``14,004,744 bytes (14.0 MB)``: exact, and readable at a glance."""
    unit, scale = next(((u, s) for u, s in (("GB", 1e9), ("MB", 1e6)) if count >= s), ("kB", 1e3))
    return f"{count:,} bytes ({count / scale:.1f} {unit})"


def require_free_space(folder: str | os.PathLike, needed: int, what: str, then: str | None = None) -> None:
    """A ``QslmError`` naming ``folder`` when its file system has fewer than ``needed`` bytes free for
    ``what``; ``then`` ends the message (what the user may do), default: free space or choose another
    folder."""
    free = shutil.disk_usage(folder).free
    if free >= needed:
        return
    then = then or "free some space or choose another output folder"
    raise QslmError(f"not enough free space in {os.fspath(folder)} for {what}: {size_text(needed)} needed, "
                    f"{size_text(free)} free; {then}")
