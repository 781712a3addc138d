"""The zoo is a third-party plugin: its modules import kdbench's public names only."""

import ast
from pathlib import Path

import kdbench
import kdbench_zoo

PACKAGE = Path(kdbench_zoo.__file__).parent
ALLOWED_SUBMODULES = {"kdbench.testing"}  # the test helpers, public for plugin tests


def imports(path: Path):
    """(module, name) of every import in ``path``; name is None for ``import module``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from ((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)


def test_every_zoo_module_imports_only_kdbench_public_names():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, name in imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}: {module}{'.' + name if name else ''}"
            if module == "kdbench" and name is not None and (name.startswith("_") or name not in kdbench.__all__):
                bad.append(where)
            elif module.startswith("kdbench.") and module not in ALLOWED_SUBMODULES:
                bad.append(where)
    assert not bad, "private or non-public kdbench imports:\n" + "\n".join(bad)


def test_the_check_sees_the_zoo_modules():
    assert len(list(PACKAGE.rglob("*.py"))) >= 4
