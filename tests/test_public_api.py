"""The public surface does not move under a plugin: every exported name imports, and what kdbench 0.1
offered (flat module paths, recipes read as dicts) still works, with a DeprecationWarning naming the
replacement."""

import importlib
import sys
import warnings

import pytest

import kdbench
import kdbench.testing
from kdbench._moved import MODULES, PACKAGES


@pytest.mark.parametrize("module", [kdbench, kdbench.testing], ids=lambda m: m.__name__)
def test_every_exported_name_imports(module):
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{module.__name__}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("old", sorted(MODULES))
def test_old_module_paths_import_with_a_warning(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)  # a first import warns; a cached one is the module
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to {MODULES[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MODULES[old])


def test_a_launcher_plugin_still_finds_execute_run(monkeypatch):
    """docs/writing-plugins.md of kdbench 0.1 told launcher authors to call kdbench.runner.execute_run."""
    monkeypatch.delitem(sys.modules, "kdbench.runner", raising=False)
    with pytest.warns(DeprecationWarning, match="kdbench.run.runner"):
        from kdbench.runner import execute_run
    from kdbench.run.runner import execute_run as now
    assert execute_run is now


@pytest.mark.parametrize("package, name", [("kdbench.suite", "Run"), ("kdbench.suite", "load_suite"),
                                           ("kdbench.results", "curve_auc"), ("kdbench.tuning", "Sweep"),
                                           ("kdbench.cli", "run")])
def test_names_of_modules_that_became_packages_still_import(package, name):
    module = importlib.import_module(package)
    with pytest.warns(DeprecationWarning, match=f"{package}.{name} has moved to kdbench"):
        value = getattr(module, name)
    assert value is not None
    assert any(getattr(importlib.import_module(m), name, None) is value for m in PACKAGES[package])


def test_an_unknown_name_of_a_package_is_still_an_attribute_error():
    with pytest.raises(AttributeError):
        kdbench.suite.no_such_name  # noqa: B018


def test_recipe_read_as_a_mapping_warns_and_answers(run_method, tiny_budget):
    """A plugin's test written for kdbench 0.1: ``result.run.student_recipe["batch_size"]`` (issue 27)."""
    result = run_method("labels", budget_flops=tiny_budget)
    with pytest.warns(DeprecationWarning, match=r"use recipe.batch_size"):
        batch_size = result.run.student_recipe["batch_size"]
    assert batch_size == result.run.student_recipe.batch_size == 16
    with pytest.warns(DeprecationWarning):
        assert result.run.student_recipe.get("lr") == result.run.student_recipe.lr
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        result.run.student_recipe["no_such_field"]


def test_the_new_paths_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from kdbench.run.engine import train  # noqa: F401
        from kdbench.suite.identity import Run  # noqa: F401
        from kdbench.results import Results, load_results  # noqa: F401
        from kdbench.cli import app, main  # noqa: F401


def test_execute_run_takes_run_options_and_still_its_old_keywords(tmp_path):
    """kdbench 0.1's launcher plugins passed precision= and compile= to execute_run: they still work, warned."""
    import torch

    from kdbench.run.options import RunOptions
    from kdbench.run.runner import execute_run
    from kdbench.testing import resolve_run

    registry, run = resolve_run("labels")
    with pytest.warns(DeprecationWarning, match=r"pass RunOptions \(ctx.run_options\)"):
        old = execute_run(run, registry, tmp_path / "old", torch.device("cpu"), precision="fp32", compile=False)
    new = execute_run(run, registry, tmp_path / "new", RunOptions.resolve("cpu"))
    assert old.summary["status"] == new.summary["status"] == "finished"
    assert old.summary["flops"] == new.summary["flops"] and old.summary["precision"] == "fp32"
    with pytest.raises(TypeError, match="unexpected keyword"):
        execute_run(run, registry, tmp_path / "bad", torch.device("cpu"), precison="fp32")


def test_the_attention_extension_is_public():
    """The model-interface extension the zoo's transformer methods use (issue 31) is exported from kdbench."""
    for name in ("LayerInternals", "InternalOutputs", "require_internals"):
        assert name in kdbench.__all__ and getattr(kdbench, name).__module__ == "kdbench.api"
