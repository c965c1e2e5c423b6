"""The README's "Your own model" example runs as written, on a spiking classifier written outside qslm
(tests/handwritten.py), with the names the example assumes (model, MyModel, accuracy and the batches)
given to it, in a scratch working folder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.handwritten import HandwrittenSpikingClassifier, make_data, train

README = Path(__file__).resolve().parent.parent / "README.md"


def example(section: str) -> str:
    text = README.read_text()
    parts = text.split(f"\n## {section}\n", 1)
    assert len(parts) == 2, f"README.md has no '## {section}' section"
    blocks = re.findall(r"```python\n(.*?)```", parts[1].split("\n## ", 1)[0], flags=re.S)
    assert len(blocks) == 1, f"the '## {section}' section should hold one python code block"
    return blocks[0]


def accuracy(model, batches) -> float:
    with torch.no_grad():
        correct = sum(int((model(ids).argmax(-1) == labels).sum()) for ids, labels in batches)
    return 100.0 * correct / sum(len(labels) for _, labels in batches)


@pytest.mark.slow
def test_your_own_model_example_runs(tmp_path, monkeypatch, capsys):
    code = example("Your own model")
    assert "qslm.Task(" in code and "qslm.search(" in code and "qslm.load_quantized(" in code
    torch.manual_seed(0)
    ids, labels = make_data(n=1920)
    model = train(HandwrittenSpikingClassifier(), ids[:160], labels[:160], steps=120)
    batches = [(ids[i:i + 32], labels[i:i + 32]) for i in range(0, 1920, 32)]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QSLM_CACHE_DIR", str(tmp_path / "cache"))
    namespace = {"model": model, "MyModel": HandwrittenSpikingClassifier,
                 "train_batches": batches[:5], "val_batches": batches[5:35], "test_batches": batches[35:]}
    exec(compile(code, str(README), "exec"), namespace)
    result, packed = namespace["result"], namespace["packed"]
    assert result.report["status"] == "feasible"
    assert result.out == Path("out/mine") and (tmp_path / "out" / "mine" / "model.safetensors").is_file()
    assert result.report["headline"][0] in capsys.readouterr().out
    assert result.report["final"]["memory_bytes"] <= 0.25 * result.report["baseline"]["memory_bytes"]
    assert result.report["quality"]["bounded"] and result.report["quality"]["confidence"] == 0.9
    assert accuracy(packed, batches[35:]) == pytest.approx(result.report["final"]["metric"])
