"""The package's layering, read from its import statements: arrows point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "piagent"
# The core knows nothing of the web framework or of the layers above it.
CORE = ("piagent.chat", "piagent.memory", "piagent.providers", "piagent.ops", "piagent.errors")
CORE += ("piagent.messages", "piagent.settings", "piagent.agents", "piagent.urls")
ABOVE_CORE = ("piagent.http", "piagent.routes", "piagent.openai_api", "piagent.web", "piagent.docs")
WEB_FRAMEWORK = ("flask", "werkzeug")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, with relative imports made absolute."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    # Imports only for type checkers never run, so they cannot make a cycle.
    for guard in ast.walk(tree):
        if isinstance(guard, ast.If) and ast.unparse(guard.test).endswith("TYPE_CHECKING"):
            guard.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, CORE)))
def test_core_modules_import_neither_flask_nor_the_http_layer(module):
    wrong = {i for i in MODULES[module] if _within(i, WEB_FRAMEWORK + ABOVE_CORE)}
    assert not wrong, f"{module} imports {sorted(wrong)}"


def test_the_package_itself_imports_nothing():
    assert MODULES["piagent"] == set()


def test_there_are_no_import_cycles():
    graph = {m: {i for i in imports if i in MODULES and i != m} for m, imports in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


# The sizes a newcomer can take in: a folder of modules is read at a glance, a module in
# one sitting. Past these, split by subject rather than raise them.
MOST_MODULES_IN_A_FOLDER = 10
MOST_LINES_IN_A_MODULE = 260


@pytest.mark.parametrize(
    "folder", sorted({p.parent for p in PACKAGE.rglob("*.py")}), ids=lambda p: p.name
)
def test_no_folder_holds_more_modules_than_can_be_read_at_a_glance(folder):
    modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MOST_MODULES_IN_A_FOLDER, f"{folder.name}/ has {len(modules)}"


@pytest.mark.parametrize("module", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.stem)
def test_no_module_is_longer_than_a_sitting(module):
    lines = len(module.read_text().splitlines())
    assert lines <= MOST_LINES_IN_A_MODULE, f"{module.name} has {lines} lines"
