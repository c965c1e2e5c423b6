"""Download SST-2 or WikiText-2 into a data folder, in the layout the loaders read.

    qslm data fetch sst2 --data-dir data        # -> data/sst2/{train,dev}.tsv
    qslm data fetch wikitext2 --data-dir data   # -> data/wikitext-2/wiki.{train,valid,test}.tokens

Each archive comes from its official public location and must match a known SHA-256 before
anything is extracted. The digests are the ones other loaders of the same archives publish:
SST-2.zip (7,439,277 bytes) as recorded in the Hugging Face GLUE dataset info, wikitext-2-v1.zip
as registered by several independent dataset packages. Mirrors and tests pass their own URL and
digest. (The SHA-256 list in the shared data README is for files prepared offline, which need
not be byte-identical to the archive members, so it is not used here.)

Nothing half-written is ever left in the data folder: the archive downloads to a hidden temporary
file inside it, the wanted members are extracted into a hidden temporary folder beside the target,
and that folder is moved into place with ``os.replace`` only when everything has succeeded. Any
error, Ctrl-C included, removes the temporaries and leaves the data folder as it was.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ...atomic import atomic_folder, commit_folder
from ...data.paths import DATA_DIR_ENV
from ...errors import QslmError

CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class ArchiveSource:
    url: str
    sha256: str
    folder: str  # created inside the data folder
    members: dict[str, str]  # archive member -> file name in ``folder``


SOURCES = {
    "sst2": ArchiveSource(
        url="https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
        sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
        folder="sst2",
        # test.tsv has no labels, so it is left out.
        members={"SST-2/train.tsv": "train.tsv", "SST-2/dev.tsv": "dev.tsv"},
    ),
    "wikitext2": ArchiveSource(
        url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
        sha256="92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
        folder="wikitext-2",
        members={f"wikitext-2/wiki.{split}.tokens": f"wiki.{split}.tokens" for split in ("train", "valid", "test")},
    ),
}


def target_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data folder to fetch into (created when missing): ``data_dir``, else ``$QSLM_DATA_DIR``."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise QslmError(f"no data folder given: pass --data-dir DIR or set {DATA_DIR_ENV}")
    root = Path(chosen).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise QslmError(f"cannot create data folder {root}: {err}") from None
    return root


def download(url: str, destination: Path, timeout: float = 60.0, progress: bool = True) -> str:
    """Stream ``url`` into ``destination``; returns the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as out:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=url.rsplit("/", 1)[-1], disable=not progress, leave=False) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise QslmError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise QslmError(f"could not download {url}: {err.reason}") from None
    except (OSError, ValueError) as err:  # a timeout, a refused connection, a malformed URL
        raise QslmError(f"could not download {url}: {err}") from None
    return digest.hexdigest()


def extract_members(archive: Path, members: dict[str, str], folder: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            missing = sorted(set(members) - names)
            if missing:
                raise QslmError(f"archive from {url} lacks {missing}; it holds {sorted(names)[:10]}")
            for member, file_name in members.items():
                with zf.open(member) as source, open(folder / file_name, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
    except zipfile.BadZipFile as err:
        raise QslmError(f"download from {url} is not a zip archive: {err}") from None


def fetch(name: str, data_dir: str | os.PathLike | None = None, url: str | None = None,
          sha256: str | None = None, force: bool = False, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download data set ``name`` (``sst2`` or ``wikitext2``), verify and extract it; returns its folder.

    ``url`` and ``sha256`` replace the official location and digest (for mirrors and tests).
    An existing target folder is replaced only when ``force`` is set.
    """
    if name not in SOURCES:
        raise QslmError(f"unknown data set {name!r}; expected one of {sorted(SOURCES)}")
    source = SOURCES[name]
    url = url or source.url
    expected = (sha256 or source.sha256).lower()
    root = target_data_dir(data_dir)
    target = root / source.folder
    if target.exists() and not force:
        raise QslmError(f"{target} already exists; remove it or pass --force to replace it")

    handle, archive_name = tempfile.mkstemp(prefix=f".{source.folder}.", suffix=".download", dir=root)
    os.close(handle)
    archive = Path(archive_name)
    staging = atomic_folder(target)
    try:
        actual = download(url, archive, timeout, progress)
        if actual != expected:
            raise QslmError(f"SHA-256 mismatch for {url}: expected {expected}, got {actual}")
        extract_members(archive, source.members, staging, url)
        commit_folder(staging, target)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # already moved into place on success
    return target
