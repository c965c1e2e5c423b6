"""No module of the package can unpickle a file: loading a pickle runs whatever code it names."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import qslm

PACKAGE = Path(qslm.__file__).parent
UNSAFE_LOAD = re.compile(r"weights_only\s*=\s*False")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}


def package_sources() -> list[Path]:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20 and PACKAGE / "train.py" in sources  # the scan sees the whole package
    return sources


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_loads_with_weights_only_false():
    offenders = [f"{path.relative_to(PACKAGE)}:{number}" for path in package_sources()
                 for number, line in enumerate(path.read_text().splitlines(), 1) if UNSAFE_LOAD.search(line)]
    assert offenders == []


def test_no_module_imports_pickle():
    offenders = {str(path.relative_to(PACKAGE)): sorted(imported_modules(ast.parse(path.read_text())) & PICKLE_MODULES)
                 for path in package_sources()}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_scan_finds_what_it_looks_for():
    assert imported_modules(ast.parse("import pickle as p\nfrom pickle import loads\n")) == {"pickle"}
    assert UNSAFE_LOAD.search("torch.load(path, weights_only = False)")
