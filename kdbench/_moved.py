"""Old import paths of kdbench 0.1, kept working for one minor version behind a DeprecationWarning.

kdbench 0.2 moved its flat modules into stage subpackages (``kdbench.engine`` is
now ``kdbench.run.engine``, ...). ``import kdbench.engine`` still works and gives
the new module, with a warning naming it; so does ``from kdbench.suite import Run``
for a name the old module defined. Both go away in kdbench 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

REMOVED_IN = "0.3"

# old module -> new module (the old module's path no longer exists)
MODULES = {
    "kdbench.conformance": "kdbench.testing.conformance",
    "kdbench.tiny_bert": "kdbench.testing.tiny_bert",
    "kdbench.console": "kdbench.progress",
    "kdbench.catalog": "kdbench.cli.catalog",
    "kdbench.scaffold": "kdbench.cli.scaffold",
    "kdbench.schema": "kdbench.suite.schema",
    "kdbench.suitefile": "kdbench.suite.file",
    "kdbench.tune_spec": "kdbench.suite.tune",
    "kdbench.runner": "kdbench.run.runner",
    "kdbench.engine": "kdbench.run.engine",
    "kdbench.teachers": "kdbench.run.teachers",
    "kdbench.budget": "kdbench.run.budget",
    "kdbench.store": "kdbench.run.store",
    "kdbench.students": "kdbench.run.students",
    "kdbench.cotrain": "kdbench.run.cotrain",
    "kdbench.optim": "kdbench.run.optim",
    "kdbench.stop": "kdbench.run.stop",
    "kdbench.device": "kdbench.run.options",
    "kdbench.probe": "kdbench.run.probe",
    "kdbench.validation": "kdbench.run.validation",
    "kdbench.leaderboard": "kdbench.results.leaderboard",
    "kdbench.render": "kdbench.results.render",
    "kdbench.plots": "kdbench.results.plots",
    "kdbench.probe_plots": "kdbench.results.probe_plots",
    "kdbench.report": "kdbench.results.report",
    "kdbench.export": "kdbench.results.export",
    "kdbench.tune_records": "kdbench.tuning.records",
    "kdbench.tune_report": "kdbench.tuning.report",
}

# old modules that are packages now: where the names they defined live (searched in order)
PACKAGES = {
    "kdbench.suite": ("kdbench.suite.model", "kdbench.suite.identity", "kdbench.run.pricing", "kdbench.suite.expand",
                      "kdbench.suite.tune"),
    "kdbench.results": ("kdbench.results.folder", "kdbench.run.curves", "kdbench.suite.identity"),
    "kdbench.tuning": ("kdbench.tuning.sweep", "kdbench.tuning.records"),
    "kdbench.cli": ("kdbench.cli.app",),
}


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn (DeprecationWarning, at the caller's caller by default) that ``old`` is now ``new``."""
    warnings.warn(f"{old} has moved to {new}; the old name works until kdbench {REMOVED_IN}",
                  DeprecationWarning, stacklevel=stacklevel)


def package_attribute(package: str, name: str):
    """A name the 0.1 module ``package`` defined, from where it lives now, with a warning;
    AttributeError for any other name (a package's ``__getattr__`` calls this)."""
    for module in PACKAGES[package]:
        value = getattr(importlib.import_module(module), name, None)
        if value is not None and not name.startswith("_"):
            home = getattr(value, "__module__", None) or module
            warn_moved(f"{package}.{name}", f"{home if home.startswith('kdbench') else module}.{name}", stacklevel=4)
            return value
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warn_moved(spec.name, self.new)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:
        pass


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the old module paths in :data:`MODULES` and gives the new modules."""

    def find_spec(self, fullname, path=None, target=None):
        new = MODULES.get(fullname)
        return importlib.machinery.ModuleSpec(fullname, _Alias(new)) if new else None


def install() -> None:
    """Add the finder to ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
