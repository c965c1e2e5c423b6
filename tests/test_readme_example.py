"""The README's Python API example runs as written: the code block under '## Python API' is executed on
the tiny classifier, with the model, output folder and data named by the environment variables the
example reads, and smaller search sizes than the defaults."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from qslm.search import run as run_module

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_example() -> str:
    text = README.read_text()
    section = text.split("\n## Python API\n", 1)
    assert len(section) == 2, "README.md has no '## Python API' section"
    body = section[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert len(blocks) == 1, "the '## Python API' section should hold one python code block"
    return blocks[0]


def test_python_api_example_runs(tiny_classifier, small_data_dir, tmp_path, tmp_path_factory, monkeypatch, capsys):
    code = python_api_example()
    assert "qslm.search(" in code and "qslm.load(" in code
    out = tmp_path / "example-out"
    monkeypatch.setenv("QSLM_EXAMPLE_MODEL", str(tiny_classifier))
    monkeypatch.setenv("QSLM_EXAMPLE_OUT", str(out))
    monkeypatch.setenv("QSLM_DATA_DIR", str(small_data_dir))
    monkeypatch.setenv("QSLM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "sensitivity-cache"))
    monkeypatch.setitem(run_module.DEFAULTS, "sst2", {"calibration": 32, "validation": 64})
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    result, model = namespace["result"], namespace["model"]
    assert result.out == out and result.report["status"] == "feasible"
    assert str(result.report["final"]["memory_bytes"]) in capsys.readouterr().out
    assert result.report["final"]["memory_bytes"] <= 0.125 * result.report["baseline"]["memory_bytes"]
    assert result.report["calibration_size"] == 32 and result.report["validation_size"] == 64
    assert isinstance(model, torch.nn.Module)
