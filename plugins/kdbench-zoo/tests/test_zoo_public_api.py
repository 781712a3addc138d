"""The zoo is a third-party plugin like any other: its modules import only kdbench's public names
(``from kdbench import X`` with X in ``kdbench.__all__``), never a private name or a kdbench submodule."""

import ast
from pathlib import Path

import kdbench

ZOO = Path(__file__).resolve().parents[1] / "kdbench_zoo"


def kdbench_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of kdbench in the module: ``kdbench`` itself or ``kdbench.X`` names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "kdbench"]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "kdbench":
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_the_zoo_has_modules_to_check():
    assert len(list(ZOO.rglob("*.py"))) >= 4


def test_no_zoo_module_imports_a_private_name_or_a_kdbench_submodule():
    public = {f"kdbench.{name}" for name in kdbench.__all__ if not name.startswith("_")} | {"kdbench"}
    bad = [f"{path.relative_to(ZOO.parent)}:{line}: {what}" for path in sorted(ZOO.rglob("*.py"))
           for line, what in kdbench_imports(path) if what not in public]
    assert not bad, "kdbench_zoo reaches past kdbench's public API: " + ", ".join(bad)


def test_the_checker_catches_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from kdbench.losses import teacher_loss\nfrom kdbench import _moved, Phase\nimport kdbench.run\n")
    assert [what for _, what in kdbench_imports(module)] == ["kdbench.losses.teacher_loss", "kdbench._moved",
                                                             "kdbench.Phase", "kdbench.run"]
