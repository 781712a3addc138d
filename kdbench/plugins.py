"""The plugin manager: built-ins, installed entry points and files the user names.

Built-in plugins are registered by the same function as third-party ones; a
plugin that fails to import, or that marks with ``kdbench.hookimpl`` a function
whose name is not a kdbench hook, is reported by name and the others still load
(``KDBENCH_STRICT_PLUGINS=1`` makes that fatal). ``KDBENCH_LOAD_PLUGINS=a,b``
limits which entry-point plugins load.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from kdbench import hookspecs
from kdbench.errors import UserError

ENTRY_POINT_GROUP = "kdbench"

BUILTIN_PLUGINS = (
    "kdbench.tasks.parity",
    "kdbench.tasks.parity_transformer",
    "kdbench.tasks.pcfg",
    "kdbench.tasks.wikipedia",
    "kdbench.tasks.pcfg_lm",
    "kdbench.tasks.lm",
    "kdbench.methods.labels",
    "kdbench.methods.one_shot",
    "kdbench.methods.progressive",
    "kdbench.methods.curriculum_extraction",
    "kdbench.methods.online",
    "kdbench.methods.pro_kd",
    "kdbench.methods.seq_kd",
    "kdbench.methods.gkd",
    "kdbench.methods.minillm",
    "kdbench.launchers.local",
    "kdbench.launchers.slurm",
    "kdbench.loggers.tensorboard",
    "kdbench.loggers.mlflow",
    "kdbench.loggers.wandb",
)


@dataclass
class PluginInfo:
    """One registered implementation: its kind, name, version and where it came from."""

    kind: str
    name: str
    version: str
    source: str
    cls: Any


@dataclass
class Registry:
    """The loaded plugins, by kind and name, plus the ones that failed to load."""

    pm: pluggy.PluginManager
    tasks: dict[str, PluginInfo] = field(default_factory=dict)
    methods: dict[str, PluginInfo] = field(default_factory=dict)
    launchers: dict[str, PluginInfo] = field(default_factory=dict)
    loggers: dict[str, PluginInfo] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def failure_lines(self) -> list[str]:
        """One line per plugin that failed to load: its name, where it came from, and why."""
        lines = []
        for name, error in self.failures.items():
            source = self.sources.get(name, "")
            where = name if source in ("", f"file {name}") else f"{name} ({source})"
            lines.append(f"plugin {where} failed to load: {error}")
        return lines

    def get(self, kind: str, name: str) -> PluginInfo:
        table = getattr(self, kind + "s")
        if name not in table:
            raise KeyError(name)
        return table[name]


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("kdbench")
    pm.add_hookspecs(hookspecs)
    return pm


def _strict() -> bool:
    return os.environ.get("KDBENCH_STRICT_PLUGINS", "") not in ("", "0", "false")


class UnknownHook(Exception):
    """A plugin marked a function with ``kdbench.hookimpl`` whose name is no kdbench hook."""


def hook_names() -> list[str]:
    """The names of every kdbench hook (the functions of :mod:`kdbench.hookspecs`)."""
    return sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "kdbench_spec"))


def check_hook_names(pm: pluggy.PluginManager, plugin: Any) -> None:
    """Raise :class:`UnknownHook` if ``plugin`` marks a function with ``kdbench.hookimpl`` whose name is
    no kdbench hook (a typo would otherwise load silently and register nothing)."""
    unknown = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [] if not caller.has_spec())
    if unknown:
        hooks = hook_names()
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, hooks, n=1)
            lines.append(f"{name} is not a kdbench hook" + (f" (did you mean {close[0]}?)" if close else ""))
        raise UnknownHook("; ".join(lines) + f"; the hooks are {', '.join(hooks)}")


def _register(pm: pluggy.PluginManager, registry: Registry, name: str, load, source: str) -> None:
    """Import a plugin with ``load()`` and register it; record a failure instead of raising."""
    plugin, registry.sources[name] = None, source
    try:
        plugin = load()
        pm.register(plugin, name=name)
        check_hook_names(pm, plugin)
    except Exception as exc:  # a broken plugin must not take the others down
        if plugin is not None and pm.get_name(plugin) == name:
            pm.unregister(plugin)  # none of its hooks count: it is a failed plugin
        message = f"{type(exc).__name__}: {exc}"
        if _strict():
            raise UserError(f"plugin {name!r} ({source}) failed to load: {message}") from exc
        registry.failures[name] = message


def load_module_from_path(path: Path) -> ModuleType:
    """Import a plugin file (``--plugin path.py`` / a suite's ``plugins:``)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no plugin file at {path}")
    # the same name in every process (str hash() is salted per process): a --jobs worker that loads the
    # same file can then unpickle runs whose params are this plugin's classes
    module_name = f"kdbench_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_plugins(paths: tuple[str | Path, ...] = ()) -> Registry:
    """Build a registry from built-ins, entry points in group ``kdbench`` and ``paths``."""
    pm = _new_manager()
    registry = Registry(pm)
    for module in BUILTIN_PLUGINS:
        _register(pm, registry, module, lambda m=module: importlib.import_module(m), "built-in")
    allowed = os.environ.get("KDBENCH_LOAD_PLUGINS")
    allowed_names = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allowed_names is not None and ep.name not in allowed_names:
            continue
        dist = getattr(ep, "dist", None)
        where = f"entry point {ep.name} ({dist.name} {dist.version})" if dist else f"entry point {ep.name}"
        _register(pm, registry, ep.name, ep.load, where)
    for path in paths:
        _register(pm, registry, str(path), lambda p=path: load_module_from_path(Path(p)), f"file {path}")
    _collect(registry)
    return registry


def _collect(registry: Registry) -> None:
    hooks = {
        "task": registry.pm.hook.kdbench_register_tasks,
        "method": registry.pm.hook.kdbench_register_methods,
        "launcher": registry.pm.hook.kdbench_register_launchers,
        "logger": registry.pm.hook.kdbench_register_loggers,
    }
    for kind, hook in hooks.items():
        table = getattr(registry, kind + "s")
        for impl in hook.get_hookimpls():  # registration order: built-ins first, so they win a name clash
            source = registry.sources.get(impl.plugin_name, impl.plugin_name)
            try:
                classes = impl.function() or []
            except Exception as exc:
                if _strict():
                    raise UserError(f"plugin {impl.plugin_name!r} failed in {hook.name}: {exc}") from exc
                registry.failures[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
                continue
            twice = _names_given_twice(classes)
            if twice:  # which of the two would win is an accident of order: neither does
                registry.failures[impl.plugin_name] = "; ".join(
                    f"{kind} {name!r} is registered twice by this plugin ({', '.join(owners)})"
                    for name, owners in twice.items())
            for cls in classes:
                name = getattr(cls, "name", None)
                if not name:
                    registry.failures[impl.plugin_name] = f"{cls!r} has no name"
                    continue
                if name in twice:
                    continue
                if name in table and table[name].source != source:
                    registry.failures[impl.plugin_name] = (
                        f"{kind} {name!r} is already provided by {table[name].source}")
                    continue
                table[name] = PluginInfo(kind, name, str(getattr(cls, "version", "1")), source, cls)


def _names_given_twice(classes) -> dict[str, list[str]]:
    """``{name: [class names]}`` for every name that two different classes of one hook's list give."""
    owners: dict[str, list] = {}
    for cls in classes:
        name = getattr(cls, "name", None)
        if name and cls not in owners.setdefault(name, []):
            owners[name].append(cls)
    return {name: [getattr(c, "__qualname__", repr(c)) for c in found] for name, found in owners.items()
            if len(found) > 1}
