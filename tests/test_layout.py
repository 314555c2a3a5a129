"""The project's layout rules: no module over 500 lines and no import cycle between modules, in robustart/ and the
pillars (noise/, model_zoo/, training/, evaluation/, installed as robustart.<pillar>).

Imports are read with ast, module-level and function-level alike (a function-level import closes a cycle as
soon as the function runs). ``from package import name`` counts as importing the submodule ``package.name`` when
there is one, else the package; importing a submodule does not count as importing its parent package.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from tests.conftest import REPO

PILLARS = {
    "robustart": "robustart",
    "noise": "robustart.noise",
    "model_zoo": "robustart.model_zoo",
    "training": "robustart.training",
    "evaluation": "robustart.evaluation",
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = [PILLARS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = (p for folder in PILLARS for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return {_module_name(p): p for p in files}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` (at ``path``) imports anywhere in its code."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(next(([".".join(parts[:k])] for k in range(len(parts), 0, -1)
                                   if ".".join(parts[:k]) in modules), []))  # fmt: skip
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    return found - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``None``."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_cycle_finder():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    assert "robustart.noise.natural.perturbations" in modules and "robustart.compare" in modules
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, f"import cycle between modules: {' -> '.join(cycle)}"


def _pillar(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PILLARS else "robustart"


def test_imports_run_down_the_pillars():
    """noise and model_zoo import no other pillar; training and evaluation use them but not the pipeline."""
    allowed = {"noise": {"noise"}, "model_zoo": {"model_zoo"}, "evaluation": {"evaluation", "noise", "model_zoo"},
               "training": {"training", "evaluation", "noise", "model_zoo"}}  # fmt: skip
    wrong = [f"{name} imports {other}" for name, imports in sorted(_graph().items()) if _pillar(name) in allowed
             for other in sorted(imports) if _pillar(other) not in allowed[_pillar(name)]]  # fmt: skip
    assert not wrong, wrong


def test_no_module_over_500_lines():
    lines = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in _modules().values()}
    over = {path: n for path, n in sorted(lines.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them): {over}"


def test_tests_mirror_the_packages_and_share_helpers_through_conftest():
    """Test files sit in the folder of the package they test; what two of them share lives in tests/conftest.py."""
    tests = REPO / "tests"
    folders = {p.parent.name for p in tests.rglob("test_*.py") if p.parent != tests}
    assert folders <= {"robustart", *PILLARS}, folders
    assert sorted(p.name for p in tests.glob("test_*.py")) == ["test_layout.py"]  # the repository as a whole
    imports = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_"):
                imports.append(f"{path.relative_to(tests)} imports {module}")
    assert not imports, imports
