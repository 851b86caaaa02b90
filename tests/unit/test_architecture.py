"""The package's shape, checked: imports go down the stage layers (no loop, lazy and TYPE_CHECKING imports
counted), names come from the module that defines them, one door to docker, modules and functions that
fit on a screen. docs/architecture.md explains the layers."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "multibake"

# Lower layers never import higher ones. Modules at the top of the package are the shared vocabulary,
# except retry and the docker door, which sit between planning and execution.
LAYERS: dict[str, int] = {
    "multibake": 0,
    "multibake.errors": 0,
    "multibake.kinds": 0,
    "multibake.refs": 0,
    "multibake.platforms": 0,
    "multibake.lowgc": 0,
    "multibake.preload": 0,
    "multibake.failures": 0,
    "multibake.config": 1,
    "multibake.plan": 2,
    "multibake.retry": 3,
    "multibake.docker": 3,
    "multibake.dockerfacts": 3,
    "multibake.cosign": 3,
    "multibake.registry": 4,
    "multibake.preflight": 5,
    "multibake.bake": 6,
    "multibake.release": 7,
    "multibake.compare": 8,
    "multibake.maintain": 9,
    "multibake.cli": 10,
    "multibake.__main__": 10,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _imports(module: str) -> Iterator[tuple[str, list[str], int]]:
    """Every import of a multibake module anywhere in ``module``: (target, names, line)."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("multibake"):
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("multibake"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:
                    yield sub, [], node.lineno
                else:
                    yield node.module, [alias.name], node.lineno


def _edges() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in _imports(m)} for m in MODULES}


def test_every_module_has_a_layer() -> None:
    assert all(any(m == p or m.startswith(p + ".") for p in LAYERS) for m in MODULES)


def test_imports_go_down_the_layers() -> None:
    wrong = [
        f"{m}:{line} imports {target}" for m in MODULES for target, _, line in _imports(m) if _layer(target) > _layer(m)
    ]
    assert wrong == []


def test_no_import_loop() -> None:
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert loops == []


def _defined(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_each_name_is_imported_from_the_module_that_defines_it() -> None:
    wrong = [
        f"{m}:{line} takes {name} from {target}"
        for m in MODULES
        for target, names, line in _imports(m)
        for name in names
        if target in MODULES and name != "__version__" and name not in _defined(target)
    ]
    assert wrong == []


def test_package_faces_are_empty() -> None:
    faces = [p for m, p in MODULES.items() if p.name == "__init__.py" and m != "multibake"]
    assert [str(p) for p in faces if p.read_text().strip()] == []


def test_one_door_to_docker() -> None:
    users = sorted(
        m
        for m in MODULES
        if any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and any((getattr(n, "module", None) or a.name).startswith("python_on_whales") for a in n.names)
            for n in ast.walk(ast.parse(MODULES[m].read_text()))
        )
    )
    assert set(users) <= {"multibake.docker"}  # none at all since docker.py runs docker itself


def test_modules_fit_on_a_few_screens() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _only_a_call(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A Typer command whose body is one call: its option declarations may be long, its logic is not."""
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    body = [s for s in body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    return len(body) == 1 and fn.body[-1].lineno - fn.body[0].lineno < MAX_FUNCTION_LINES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_fit_on_a_screen(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    long = [
        f"{fn.name} ({(fn.end_lineno or fn.lineno) - fn.lineno + 1} lines)"
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (fn.end_lineno or fn.lineno) - fn.lineno + 1 > MAX_FUNCTION_LINES
        and not _only_a_call(fn)
    ]
    assert long == []
