"""How the package is layered: core code never imports the command-line layer, model folders build on
quantization (not the other way round), and importing qslm leaves the user's matplotlib backend alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "qslm"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the qslm modules a file imports anywhere in it (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_core_never_imports_the_cli_layer():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "commands" or relative.name in ("cli.py", "__main__.py"):
            continue
        bad = sorted(n for n in imported_modules(path) if n.startswith(("qslm.commands", "qslm.cli")))
        if bad:
            offenders[str(relative)] = bad
    assert offenders == {}


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_quantization_and_model_folders_import_one_way():
    """Packing never reaches for model folders, and the architectures never reach for quantization:
    ``qslm.checkpoint`` (model folders) builds on both."""
    for name in ("pack.py", "memory.py", "apply.py", "units.py", "quantizer.py", "plan.py"):
        imports = imported_modules(PACKAGE / "quant" / name)
        assert not {n for n in imports if n.startswith(("qslm.checkpoint", "qslm.models.zoo"))}, name
    for name in ("zoo.py", "shapes.py", "weights.py", "spikegpt.py", "spiking_encoder.py"):
        imports = imported_modules(PACKAGE / "models" / name)
        assert not {n for n in imports if n.startswith(("qslm.quant", "qslm.checkpoint"))}, name


def test_import_and_reports_leave_the_matplotlib_backend_alone(tmp_path):
    code = ("import matplotlib; matplotlib.use('svg'); import qslm; from qslm.report import plot_bitwidths; "
            "plot_bitwidths({'chosen': {'assignment': {'a': 4, 'b': 8}}}, __import__('pathlib').Path(%r)); "
            "print(matplotlib.get_backend())" % str(tmp_path / "bits.png"))
    assert run_python(code) == "svg"
    assert (tmp_path / "bits.png").stat().st_size > 0


def test_the_command_line_starts_before_torch_is_imported():
    """So a Ctrl-C in the first seconds is one line and exit 130 (torch takes seconds to import)."""
    assert run_python("import sys, qslm.cli; print('torch' in sys.modules)") == "False"


def test_qslm_search_is_callable_however_it_was_reached():
    assert run_python("import qslm.search.run, qslm; print(callable(qslm.search), qslm.Task.__name__)") == "True Task"


def test_quantization_never_imports_the_analysis_layer():
    offenders = {path.name: sorted(n for n in imported_modules(path) if n.startswith("qslm.analysis"))
                 for path in (PACKAGE / "quant").glob("*.py")}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_every_module_imports_on_its_own():
    """No import cycle bites whichever module a user or script imports first: each is imported first in a
    clean set of qslm modules (torch and the rest stay loaded, so this is quick)."""
    modules = sorted(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                     if p.name != "__main__.py")
    code = ("import importlib, sys, torch\n"
            f"for name in {modules!r}:\n"
            "    for loaded in [m for m in sys.modules if m == 'qslm' or m.startswith('qslm.')]:\n"
            "        del sys.modules[loaded]\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError as error:\n"
            "        print(name, error)\n")
    assert run_python(code) == ""


def test_only_the_tasks_package_names_a_data_set():
    """The engine, analysis, quantization, models, model folders and evaluation know no data set: no string
    "sst2" / "wikitext2" (a data set's name used as a value) outside qslm/tasks. The trainer of the bundled
    models and the command line, which offer the presets by name, are the consumers of those names."""
    consumers = {"train.py", "train_options.py", "train_state.py"}
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("tasks", "commands") or relative.name in consumers | {"cli.py"}:
            continue
        names = {node.value for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and node.value in ("sst2", "wikitext2", "wikitext-2")}
        if names:
            offenders[str(relative)] = sorted(names)
    assert offenders == {}
