"""``qslm data fetch`` against a local HTTP server: layout, checksum, errors, nothing half-written.

The real network is never used: every fetch names a URL on 127.0.0.1.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import zipfile

import pytest

from qslm.cli import main
from qslm.errors import QslmError
from qslm.tasks.datasets import fetch as fetch_module
from qslm.tasks.datasets.fetch import SOURCES, fetch
from qslm.tasks.datasets.sst2 import load_sst2
from qslm.tasks.datasets.wikitext import load_wikitext, split_path

SST2_FILES = {"SST-2/train.tsv": "sentence\tlabel\na fine film \t1\ndull and long \t0\n",
              "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming journey . \t1\n",
              "SST-2/test.tsv": "index\tsentence\n0\tno labels here\n",
              "SST-2/original/README.txt": "not needed\n"}
WIKITEXT_FILES = {f"wikitext-2/wiki.{split}.tokens": f" \n = {split.title()} = \n \n some {split} text . \n"
                  for split in ("train", "valid", "test")}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_zip(path, files: dict[str, str]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (random port): (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sst2_zip(served):
    folder, base = served
    archive = write_zip(folder / "SST-2.zip", SST2_FILES)
    return f"{base}/SST-2.zip", sha256(archive)


def test_official_sources():
    assert SOURCES["sst2"].url == "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
    assert SOURCES["wikitext2"].url == "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"
    for source in SOURCES.values():
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0


def test_sst2_layout(sst2_zip, tmp_path):
    url, digest = sst2_zip
    data = tmp_path / "data"
    folder = fetch("sst2", data, url=url, sha256=digest, progress=False)
    assert folder == data / "sst2"
    assert [p.name for p in data.iterdir()] == ["sst2"]  # no temporary files left
    assert sorted(p.name for p in folder.iterdir()) == ["dev.tsv", "train.tsv"]
    assert (folder / "train.tsv").read_text() == SST2_FILES["SST-2/train.tsv"]
    assert [ex.label for ex in load_sst2("train", data)] == [1, 0]
    assert len(load_sst2("dev", data)) == 1


def test_wikitext2_layout(served, tmp_path):
    folder, base = served
    archive = write_zip(folder / "wikitext-2-v1.zip", WIKITEXT_FILES)
    data = tmp_path / "data"
    fetch("wikitext2", data, url=f"{base}/wikitext-2-v1.zip", sha256=sha256(archive).upper(), progress=False)
    assert [p.name for p in data.iterdir()] == ["wikitext-2"]
    for split in ("train", "valid", "test"):
        assert split_path(split, data) == data / "wikitext-2" / f"wiki.{split}.tokens"
        assert load_wikitext(split, data) == WIKITEXT_FILES[f"wikitext-2/wiki.{split}.tokens"]


def test_data_dir_from_environment(sst2_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("QSLM_DATA_DIR", str(tmp_path / "env-data"))
    url, digest = sst2_zip
    assert fetch("sst2", url=url, sha256=digest, progress=False) == tmp_path / "env-data" / "sst2"


def test_checksum_mismatch_leaves_nothing(sst2_zip, tmp_path):
    url, digest = sst2_zip
    data = tmp_path / "data"
    data.mkdir()
    (data / "brown").mkdir()
    wrong = "0" * 64
    with pytest.raises(QslmError) as info:
        fetch("sst2", data, url=url, sha256=wrong, progress=False)
    message = str(info.value)
    assert f"expected {wrong}" in message and f"got {digest}" in message and url in message
    assert [p.name for p in data.iterdir()] == ["brown"]


def test_unreachable_url(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "data"
    url = f"http://127.0.0.1:{port}/SST-2.zip"
    with pytest.raises(QslmError, match=f"could not download {url}: .*refused"):
        fetch("sst2", data, url=url, sha256="0" * 64, progress=False, timeout=5)
    assert list(data.iterdir()) == []


def test_missing_file_on_the_server(served, tmp_path):
    _, base = served
    data = tmp_path / "data"
    with pytest.raises(QslmError, match=r"could not download .*/nothing.zip: HTTP 404"):
        fetch("sst2", data, url=f"{base}/nothing.zip", sha256="0" * 64, progress=False)
    assert list(data.iterdir()) == []


def test_archive_without_the_expected_members(served, tmp_path):
    folder, base = served
    archive = write_zip(folder / "other.zip", {"SST-2/train.tsv": "sentence\tlabel\n"})
    data = tmp_path / "data"
    with pytest.raises(QslmError, match=r"lacks \['SST-2/dev.tsv'\]"):
        fetch("sst2", data, url=f"{base}/other.zip", sha256=sha256(archive), progress=False)
    assert list(data.iterdir()) == []


def test_not_a_zip(served, tmp_path):
    folder, base = served
    (folder / "page.zip").write_text("<html>moved</html>")
    data = tmp_path / "data"
    with pytest.raises(QslmError, match="is not a zip archive"):
        fetch("sst2", data, url=f"{base}/page.zip", sha256=sha256(folder / "page.zip"), progress=False)
    assert list(data.iterdir()) == []


def interrupt_download(original):
    def download(url, destination, *args):
        destination.write_bytes(b"PK\x03\x04 the first bytes")
        raise KeyboardInterrupt
    return download


def interrupt_extraction(original):
    def extract_members(archive, members, folder, url):
        first = dict(list(members.items())[:1])
        original(archive, first, folder, url)  # one file fully written, the next one not
        assert any(folder.iterdir())
        raise KeyboardInterrupt
    return extract_members


@pytest.mark.parametrize("stage, interrupt", [("download", interrupt_download),
                                              ("extract_members", interrupt_extraction)])
def test_ctrl_c_leaves_nothing(sst2_zip, tmp_path, monkeypatch, stage, interrupt):
    url, digest = sst2_zip
    data = tmp_path / "data"
    monkeypatch.setattr(fetch_module, stage, interrupt(getattr(fetch_module, stage)))
    with pytest.raises(KeyboardInterrupt):
        fetch("sst2", data, url=url, sha256=digest, progress=False)
    assert list(data.iterdir()) == []


def test_existing_folder_needs_force(sst2_zip, tmp_path):
    url, digest = sst2_zip
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)
    (data / "sst2" / "mine.tsv").write_text("keep me")
    with pytest.raises(QslmError, match="already exists; remove it or pass --force"):
        fetch("sst2", data, url=url, sha256=digest, progress=False)
    assert (data / "sst2" / "mine.tsv").read_text() == "keep me"
    fetch("sst2", data, url=url, sha256=digest, force=True, progress=False)
    assert sorted(p.name for p in (data / "sst2").iterdir()) == ["dev.tsv", "train.tsv"]
    assert [p.name for p in data.iterdir()] == ["sst2"]


def test_unknown_data_set(tmp_path):
    with pytest.raises(QslmError, match=r"unknown data set 'imdb'; expected one of \['sst2', 'wikitext2'\]"):
        fetch("imdb", tmp_path)


def test_command_line(sst2_zip, tmp_path, capsys):
    url, digest = sst2_zip
    data = tmp_path / "data"
    argv = ["data", "fetch", "sst2", "--data-dir", str(data), "--url", url, "--sha256", digest]
    assert main(argv) == 0
    assert f"wrote {data / 'sst2'} (dev.tsv, train.tsv)" in capsys.readouterr().out
    assert main(argv) == 2
    assert "qslm data: error: " in capsys.readouterr().err
    assert main(argv[:-2] + ["--sha256", "f" * 64, "--force"]) == 2
    err = capsys.readouterr().err
    assert f"expected {'f' * 64}, got {digest}" in err
    assert sorted(p.name for p in (data / "sst2").iterdir()) == ["dev.tsv", "train.tsv"]  # left as it was


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "fetch", "--help"])
    assert info.value.code == 0
    assert "{sst2,wikitext2}" in capsys.readouterr().out
