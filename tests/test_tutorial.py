"""docs/writing-plugins.md's tutorial runs as written: its files are written from the guide's code
blocks into an empty folder and its commands run there; the quick start's names are the scaffold's."""

import re
import shlex
import sys
from pathlib import Path

import pytest

from conftest import kdbench

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"


def marked_blocks(marker: str) -> list[tuple[str, str]]:
    """(what follows ``marker``, the code) of every fenced block right after ``<!-- MARKER ... -->``."""
    return re.findall(rf"<!-- {marker}:? ?(.*?) -->\n```[a-z]*\n(.*?)```", GUIDE.read_text(), flags=re.S)


def commands(block: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block.splitlines() if shlex.split(line, comments=True)]


def run_pytest(args: list[str], capsys) -> str:
    """``python -m pytest ARGS`` in this process; its output. The modules it imported are dropped after."""
    before = set(sys.modules)
    try:
        code = pytest.main(["-p", "no:cacheprovider", *args])
        out = capsys.readouterr().out
    finally:
        for name in set(sys.modules) - before:
            if name.startswith(("layerwise", "test_layerwise", "kdbench_plugin_layerwise")):
                del sys.modules[name]
    assert code == 0, out
    return out


def test_the_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    files = marked_blocks("file")
    assert [name for name, _ in files] == ["layerwise.py", "layerwise.yaml", "test_layerwise.py"]
    for name, code in files:
        (tmp_path / name).write_text(code)
    (_, block), = marked_blocks("commands")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", sys.path[:])  # the inner pytest session prepends the folder
    ran = []
    for argv in commands(block):
        if argv[0] == "kdbench":
            out = kdbench(*argv[1:]).output
        else:  # the tests, as the reader runs them (in this process: torch is imported already)
            assert argv[:3] == ["python", "-m", "pytest"], argv
            out = run_pytest(argv[3:], capsys)
        ran.append((argv, out))
    validate, describe, run, tests = (out for _, out in ran)
    assert "valid: 1 task(s) x 2 method(s)" in validate
    assert re.search(r"^hint_share\s+float\s+> 0; < 1\s+0\.4\s+share of the FLOP budget", describe, flags=re.M)
    board = (tmp_path / "out" / "layerwise-tutorial" / "leaderboard.md").read_text()
    assert re.search(r"^\| layerwise +\|", board, flags=re.M) and re.search(r"^\| one-shot +\|", board, flags=re.M)
    assert "2 passed" in tests


def test_the_quick_start_names_what_new_method_writes(tmp_path, monkeypatch):
    (_, block), = marked_blocks("quick start")
    lines = commands(block)
    assert lines[0][:2] == ["kdbench", "new-method"]
    monkeypatch.chdir(tmp_path)
    # built-ins only: a reader who followed this tutorial has the method installed already
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "")
    kdbench(*lines[0][1:])
    name = lines[0][2]
    folders = {arg.split("/")[0] for argv in lines[1:] for arg in argv if arg.startswith("kdbench-")}
    assert folders == {f"kdbench-{name}"} and (tmp_path / f"kdbench-{name}" / "pyproject.toml").is_file()
    assert (tmp_path / f"kdbench-{name}" / "tests").is_dir()
    assert ["kdbench", "describe", name] in lines
