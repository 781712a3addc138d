"""The code stays easy to read: the training loop reads in one sitting and no function sprawls."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdbench"


def function_lengths() -> dict[str, int]:
    """``module:function`` -> its lines, from ``def`` to its last line (docstring included)."""
    lengths = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.relative_to(PACKAGE.parent)}:{node.name}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_the_training_loop_reads_in_one_sitting():
    assert function_lengths()["kdbench/run/engine.py:train"] <= 60


def test_no_function_sprawls():
    long = {name: n for name, n in function_lengths().items() if n > 80}
    assert not long, f"functions over 80 lines: {long}"


def test_few_modules_sit_at_the_top():
    """The folder list shows the pipeline: the stages are subpackages, the top holds the plugin API."""
    assert len(list(PACKAGE.glob("*.py"))) <= 15
