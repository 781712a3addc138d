"""``kdbench new-method``: the package it writes installs, registers its method and passes its own tests."""

import importlib.util
import os
import subprocess
import sys
import tomllib

import pytest

from kdbench.plugins import load_plugins
from kdbench.cli.scaffold import new_method_package, package_names

from conftest import kdbench

# a name no reader's environment has: README's tutorial installs `my-kd`, and these tests must pass after it
NAME, PACKAGE = "scaffold-probe", "kdbench_scaffold_probe"


@pytest.fixture(autouse=True)
def no_entry_points(monkeypatch):
    """Only built-in methods: what the user installed must not change what new-method refuses."""
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "")


def test_names():
    assert package_names("my-kd") == {"name": "my-kd", "dist": "kdbench-my-kd", "package": "kdbench_my_kd",
                                      "cls": "MyKd"}


@pytest.mark.parametrize("bad", ["My-KD", "1kd", "my_kd", "my--kd", "kd-", "", "a b"])
def test_bad_names_are_user_errors(bad, tmp_path):
    result = kdbench("new-method", bad, "--output", tmp_path, expect=2)
    assert "not a valid method name" in result.output


def test_refuses_an_installed_name_and_an_existing_folder(tmp_path):
    assert "already installed" in kdbench("new-method", "one-shot", "--output", tmp_path, expect=2).output
    kdbench("new-method", NAME, "--output", tmp_path)
    assert "already exists" in kdbench("new-method", NAME, "--output", tmp_path, expect=2).output


def test_layout_and_entry_point(tmp_path):
    root = new_method_package(NAME, tmp_path)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", f"{PACKAGE}/__init__.py", f"{PACKAGE}/method.py", "pyproject.toml",
                     f"tests/test_{PACKAGE}.py"]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == f"kdbench-{NAME}"
    assert project["project"]["entry-points"]["kdbench"] == {NAME: PACKAGE}


def test_generated_package_installs_registers_and_passes_its_tests(tmp_path, monkeypatch):
    root = new_method_package(NAME, tmp_path)
    site = tmp_path / "site"
    # a real install (wheel built by setuptools, metadata and entry point included), into a folder of its own;
    # offline when this environment has setuptools (Python >= 3.12 venvs do not: pip then fetches it)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation,
                    "--target", str(site), str(root)], check=True, capture_output=True)

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", NAME)
    try:
        info = load_plugins().methods[NAME]
        assert (info.version, info.source) == ("1", f"entry point {NAME} (kdbench-{NAME} 0.1.0)")
    finally:
        for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
            del sys.modules[name]

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout and "skipped" not in done.stdout
