"""kdbench's imports run one way, down the stages a suite passes through: no import circles
(counting imports written inside functions), no stage importing a later one, and plugin families
(methods, tasks, models) importing only the plugin API.

The graph is read from the source with ``ast``, so an import hidden in a function body or an
``if TYPE_CHECKING:`` block counts like any other.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdbench"

# the pipeline, first to last: a module may import from its own stage and earlier ones only
STAGES = ["suite", "run", "tuning", "results", "commands", "cli"]
# what the plugin families may import: the plugin API (top-level modules) and the models
PLUGIN_API = {"api", "errors", "hookspecs", "losses", "distill_options", "plateau", "streams", "inputs", "files",
              "models"}


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its own name)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict) -> set[str]:
    """The kdbench modules ``name`` imports anywhere in its source (module level, functions, blocks)."""
    out = set()
    package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from kdbench.x import name`: the module kdbench.x
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


@functools.lru_cache(maxsize=None)
def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the kdbench modules it imports."""
    known = modules(root)
    return {name: imported(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def stage(module: str):
    """The pipeline stage of a module (an index into STAGES), or None outside the pipeline."""
    part = module.split(".")[1] if "." in module else None
    return STAGES.index(part) if part in STAGES else None


def test_no_import_circles():
    found = circles(graph())
    assert not found, "import circles (module and function-level imports): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "kdbench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from kdbench.b import x\n")
    (pkg / "b.py").write_text("x = 1\n\ndef later():\n    from .a import x\n    return x\n")
    assert circles(graph(pkg)) == [["kdbench.a", "kdbench.b"]]


def test_stages_import_only_earlier_stages():
    bad = [f"{m} -> {t}" for m, targets in graph().items() for t in targets
           if stage(m) is not None and stage(t) is not None and stage(t) > stage(m)]
    assert not bad, "a stage imports a later one: " + ", ".join(sorted(bad))


def test_the_plugin_api_imports_no_stage():
    top = {m for m in graph() if m.count(".") == 1 and m.split(".")[1] in PLUGIN_API}
    bad = [f"{m} -> {t}" for m in top for t in graph()[m] if stage(t) is not None]
    assert not bad, "the plugin API imports the pipeline: " + ", ".join(sorted(bad))


@pytest.mark.parametrize("family", ["methods", "tasks", "models"])
def test_plugin_families_import_only_the_plugin_api(family):
    edges = graph()
    bad = [f"{m} -> {t}" for m, targets in edges.items() if m.startswith(f"kdbench.{family}")
           for t in targets if t != "kdbench" and t.split(".")[1] not in PLUGIN_API | {family}]
    assert not bad, f"kdbench.{family} imports beyond the plugin API: " + ", ".join(sorted(bad))


def function_level_imports(root: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(file, line, whether a comment says why) for every import written inside a function: the
    comment is on the import's line or on a line of the import block just above it."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    above = node.lineno - 2
                    said = "#" in lines[node.lineno - 1]
                    while not said and above >= 0 and lines[above].strip().startswith(("from ", "import ", "#")):
                        said = lines[above].strip().startswith("#")
                        above -= 1
                    found.append((str(path.relative_to(root.parent)), node.lineno, said))
    return found


def test_an_import_inside_a_function_says_why():
    """Only an optional dependency or a measured start-up cost justifies it, and a comment says which."""
    silent = [f"{file}:{line}" for file, line, said in function_level_imports() if not said]
    assert not silent, "imports inside functions without a comment saying why: " + ", ".join(silent)
