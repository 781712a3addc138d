"""What is installed, and what each plugin accepts: the data behind ``kdbench list`` and ``kdbench describe``.

Both commands print tables: on a terminal as a rich table wide enough that no
name or version is cut, elsewhere (a pipe, a CI log) as plain aligned text, so
``kdbench list | grep NAME`` always finds the whole name. ``--format json``
gives the same data for programs.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, is_dataclass
from enum import Enum
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kdbench.errors import UserError
from kdbench.plugins import PluginInfo, Registry
from kdbench.suite.schema import params_of, unknown_name

KINDS = ("task", "method", "launcher", "logger")
LIST_COLUMNS = ("kind", "name", "version", "from", "description")
PARAM_COLUMNS = ("param", "type", "allowed", "default", "description")
FOLDED_MIN_WIDTH = 24  # a column that may fold is never narrower (unless its text is shorter)


class Format(str, Enum):
    """What ``--format`` of ``kdbench list`` and ``kdbench describe`` takes."""

    text = "text"
    json = "json"


def plugin_rows(registry: Registry) -> list[dict[str, str]]:
    """One row per installed task, method, launcher and logger: kind, name, version, source, description."""
    return [{"kind": kind, "name": info.name, "version": info.version, "source": info.source,
             "description": str(getattr(info.cls, "description", "") or "")}
            for kind in KINDS for info in getattr(registry, kind + "s").values()]


def listing(registry: Registry) -> dict[str, Any]:
    """``kdbench list --format json``: the plugins, and the ones that failed to load and why."""
    return {"plugins": plugin_rows(registry),
            "failures": [{"plugin": name, "source": registry.sources.get(name, ""), "error": error}
                         for name, error in registry.failures.items()]}


def find(registry: Registry, name: str, kind: Optional[str] = None) -> list[PluginInfo]:
    """The plugins called ``name`` (of ``kind``, if given; a name may be a task and a method)."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind: {kind!r} is not a plugin kind; allowed: {', '.join(KINDS)}")
    kinds = [kind] if kind else KINDS
    found = [getattr(registry, k + "s")[name] for k in kinds if name in getattr(registry, k + "s")]
    if not found:
        names = sorted({row["name"] for row in plugin_rows(registry) if kind in (None, row["kind"])})
        raise unknown_name("describe", "NAME", kind or "plugin", name, names, registry.failure_lines())
    return found


def _recipes(info: PluginInfo) -> dict[str, Any]:
    """A task's default teacher and student recipes for its default params (when it has defaults)."""
    try:
        task, params = info.cls(), info.cls.Params()
        return {"teacher_recipe": task.teacher_recipe(params).model_dump(mode="json"),
                "student_recipe": task.student_recipe(params).model_dump(
                    mode="json", exclude={"steps", "checkpoint_every"})}  # students: the budget decides
    except Exception:  # noqa: BLE001 - a required param (a corpus path): recipes depend on it
        return {}


def description(info: PluginInfo) -> dict[str, Any]:
    """Everything ``kdbench describe`` shows about one plugin, as plain data."""
    cls = info.cls
    out = {"kind": info.kind, "name": info.name, "version": info.version, "source": info.source,
           "description": str(getattr(cls, "description", "") or ""), "doc": inspect.cleandoc(cls.__doc__ or ""),
           "params": params_of(cls.Params)}
    if info.kind == "method":
        out["needs_teacher"] = bool(getattr(cls, "needs_teacher", True))
    elif info.kind == "task":
        out.update(_recipes(info))
        out["presets"] = dict(getattr(cls, "presets", {}) or {})
    elif info.kind == "logger":
        out["install"] = str(getattr(cls, "install", "") or "")
    elif getattr(cls, "jobs_option", None):
        out["jobs_option"] = cls.jobs_option
    return out


def aligned_text(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    """Rows as plain text in aligned columns (the last one unpadded): nothing is ever cut."""
    table = [list(columns), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
                     for row in table)


def print_table(console: Console, title: str, columns: tuple[str, ...], rows: list[list[str]],
                keep: tuple[str, ...], folded_min: int = FOLDED_MIN_WIDTH) -> None:
    """A rich table on a terminal, never narrower than the ``keep`` columns need (they are not
    wrapped or cut; the others fold, down to ``folded_min`` characters); plain aligned text when
    the output is not a terminal."""
    if not console.is_terminal:
        console.out(aligned_text(columns, rows), highlight=False)  # as is: no markup, wrapping or emoji
        return
    widths = [max(len(cell) for cell in cells) for cells in zip(columns, *rows)]
    widths = [w if col in keep else min(w, folded_min) for col, w in zip(columns, widths)]
    table = Table(title=title)
    for col, width in zip(columns, widths):
        table.add_column(col, no_wrap=col in keep, overflow="fold", min_width=width)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # as written: "[batch, hidden]" is no markup
    needed = sum(widths) + 3 * len(columns) + 1  # each cell padded by one space a side, one border per column + 1
    if needed > console.width:  # rather wider than the terminal than a cut name
        console = Console(file=console.file, width=needed, force_terminal=True, color_system=console.color_system)
    console.print(table, highlight=False)


def print_listing(console: Console, err_console: Console, registry: Registry, fmt: Format = Format.text) -> None:
    """``kdbench list``: every plugin with whole names and versions, then the ones that failed (in red,
    on ``err_console``); or all of it as JSON."""
    if fmt == Format.json:
        console.out(to_json(listing(registry)), highlight=False)
        return
    rows = [[r["kind"], r["name"], r["version"], r["source"], r["description"]] for r in plugin_rows(registry)]
    print_table(console, "kdbench plugins", LIST_COLUMNS, rows, keep=("kind", "name", "version"))
    for line in registry.failure_lines():
        err_console.print(f"[red]{escape(line)}[/red]", highlight=False)


def print_descriptions(console: Console, registry: Registry, name: str, kind: Optional[str] = None,
                       fmt: Format = Format.text) -> None:
    """``kdbench describe NAME``: every plugin called ``name`` (of ``kind``), as text or JSON."""
    infos = [description(info) for info in find(registry, name, kind)]
    if fmt == Format.json:
        console.out(to_json(infos), highlight=False)
        return
    for i, info in enumerate(infos):
        if i:
            console.print()
        print_description(console, info)


def print_description(console: Console, info: dict[str, Any]) -> None:
    """``kdbench describe NAME`` as text: the plugin, then one row per param."""
    lines = [f"{info['kind']} {info['name']} {info['version']} ({info['source']})"]
    lines += [f"  {text}" for text in (info["description"], info["doc"]) if text]
    if "needs_teacher" in info:
        lines.append("  teacher: " + ("trained once per task and seed, cached" if info["needs_teacher"]
                                      else "none from the cache (trains its own, or uses none)"))
    for who in ("teacher", "student"):
        if f"{who}_recipe" in info:
            recipe = ", ".join(f"{k} {v}" for k, v in info[f"{who}_recipe"].items())
            lines.append(f"  {who} recipe (a suite's tasks[i].{who} overrides any field): {recipe}")
    for name, preset in info.get("presets", {}).items():
        parts = "; ".join(f"{part}: " + ", ".join(f"{k} {v}" for k, v in values.items())
                          for part, values in preset.items())
        lines.append(f"  preset {name} (tasks[i].params.preset: {name}; given params win): {parts}")
    if info.get("jobs_option"):
        lines.append(f"  --jobs sets {info['jobs_option']}")
    if info.get("install"):
        lines.append(f"  needs: {info['install']}")
    where = {"task": "tasks[i].params", "method": "methods[i].params", "launcher": "launcher.options",
             "logger": "loggers[i].options, or --log NAME:KEY=VALUE"}[info["kind"]]
    lines.append(f"  params ({where}):" if info["params"] else "  params: none")
    console.out("\n".join(lines), highlight=False)
    if info["params"]:
        rows = [[p.name, p.type, p.allowed, p.default_text, p.description] for p in info["params"]]
        print_table(console, f"{info['name']} params", PARAM_COLUMNS, rows, keep=("param", "type", "default"))


def to_json(data: Any) -> str:
    """``--format json`` output (params as objects; anything else JSON cannot hold as text)."""
    return json.dumps(data, indent=1, default=lambda o: asdict(o) if is_dataclass(o) else str(o))
