"""How the package is layered: no import circle anywhere; from the bottom up, the model-input code (on
errors only), the models, quantization and the analysis, then the tasks and the search, and the
command-line layer on top, which no core code imports; model folders build on quantization (not the
other way round); and importing qslm leaves the user's matplotlib backend alone.

Imports are read from the source with ast, wherever they are: inside functions and under
``TYPE_CHECKING`` too, since a late import is still a dependency and a circle through it still ties
the layers together."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def module_files() -> dict[str, Path]:
    """Every module of qslm by its dotted name (a package by its own name, for its __init__.py)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """Module -> the qslm modules it imports. A package's __init__ importing its own modules is left out:
    importing any module of a package runs its __init__ first anyway, so that is no circle."""
    files = module_files()
    graph = {}
    for name, path in files.items():
        own = name + "." if path.name == "__init__.py" else None
        graph[name] = {n for n in imported_modules(path)
                       if n in files and n != name and not (own and n.startswith(own))}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_the_circle_finder_finds_circles_and_only_those():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circle():
    assert import_circles(import_graph()) == []


def layer_offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The files of qslm/<folder> that import any module under ``forbidden``, with those imports."""
    offenders = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        bad = sorted(n for n in imported_modules(path)
                     if n in forbidden or n.startswith(tuple(f + "." for f in forbidden)))
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    return offenders


def test_quantization_and_the_analysis_know_no_task_and_no_search():
    for folder in ("quant", "analysis"):
        assert layer_offenders(folder, ("qslm.tasks", "qslm.search")) == {}, folder


def test_the_models_know_no_quantization_model_folder_search_or_task():
    assert layer_offenders("models", ("qslm.quant", "qslm.checkpoint", "qslm.search", "qslm.tasks")) == {}


def test_the_model_input_code_builds_on_errors_only():
    imports = {n for n in imported_modules(PACKAGE / "model_inputs.py") if n == "qslm" or n.startswith("qslm.")}
    assert imports <= {"qslm.errors", "qslm.errors.QslmError"}


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


@pytest.mark.slow
def test_import_and_reports_leave_the_matplotlib_backend_alone(tmp_path):
    code = ("import matplotlib; matplotlib.use('svg'); import qslm; from qslm.report import plot_bitwidths; "
            "plot_bitwidths({'chosen': {'assignment': {'a': 4, 'b': 8}}}, __import__('pathlib').Path(%r)); "
            "print(matplotlib.get_backend())" % str(tmp_path / "bits.png"))
    assert run_python(code) == "svg"
    assert (tmp_path / "bits.png").stat().st_size > 0


def test_the_command_line_starts_before_torch_is_imported():
    """So a Ctrl-C in the first seconds is one line and exit 130 (torch takes seconds to import)."""
    assert run_python("import sys, qslm.cli; print('torch' in sys.modules)") == "False"


@pytest.mark.slow
def test_qslm_search_is_callable_however_it_was_reached():
    assert run_python("import qslm.search.run, qslm; print(callable(qslm.search), qslm.Task.__name__)") == "True Task"


def test_quantization_never_imports_the_analysis_layer():
    offenders = {path.name: sorted(n for n in imported_modules(path) if n.startswith("qslm.analysis"))
                 for path in (PACKAGE / "quant").glob("*.py")}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


@pytest.mark.slow
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
