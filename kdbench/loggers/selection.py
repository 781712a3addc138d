"""Which loggers follow a suite's runs: the suite's ``loggers:`` list, with the command line's
``--log`` entries (or ``run_suite(loggers=...)``) on top, validated like every plugin.

``--log NAME`` adds a logger (or keeps the suite's one of that name);
``--log NAME:KEY=VALUE,KEY=VALUE`` sets options on top of the suite's; ``--log
none`` drops every logger named before it, the suite's included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from pydantic import ValidationError

from kdbench.errors import UserError
from kdbench.launchers import parse_option
from kdbench.loggers import Logger, missing_modules
from kdbench.loggers.schema import LoggerEntry
from kdbench.plugins import Registry
from kdbench.suite.schema import format_validation_error, unknown_name, validate_strictly

NO_LOGGERS = "none"
COMMAND_LINE = Path("command line")
LoggerChoice = Union[str, dict, LoggerEntry]  # what --log and run_suite(loggers=...) take


@dataclass(frozen=True)
class LoggerSpec:
    """A chosen logger: its name and validated options as plain data. It travels with the launch
    context to worker processes and Slurm jobs, which rebuild the logger from their own registry."""

    name: str
    options: dict = field(default_factory=dict)

    def build(self, registry: Registry) -> Logger:
        """A fresh instance of the logger, for one run."""
        cls = registry.loggers[self.name].cls
        return cls(cls.Params.model_validate(self.options))


def split_options(text: str) -> list[str]:
    """``a=1,b=[x, y]`` -> ``["a=1", "b=[x, y]"]``: commas inside brackets or braces do not split."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in [*items, current] if item.strip()]


def parse_log_option(text: str) -> LoggerEntry:
    """``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]`` (``--log``); values are read as YAML."""
    name, _, options = text.partition(":")
    if not name.strip():
        raise UserError(f"--log: {text!r} names no logger; write --log NAME or --log NAME:KEY=VALUE,KEY=VALUE")
    return LoggerEntry(name=name.strip(), options=dict(parse_option(item, f"--log {name.strip()}")
                                                       for item in split_options(options)))


def as_entry(choice: LoggerChoice) -> LoggerEntry:
    """A ``--log`` string, a ``{"name", "options"}`` dict or an entry, as an entry."""
    if isinstance(choice, LoggerEntry):
        return choice
    if isinstance(choice, str):
        return parse_log_option(choice)
    try:
        return LoggerEntry.model_validate(choice)
    except ValidationError as err:
        raise UserError(format_validation_error(COMMAND_LINE, err, "loggers", LoggerEntry)) from err


@dataclass(frozen=True)
class Origin:
    """Where a logger was chosen, for error messages: the file (or the command line), and the
    field (or option) of its name and of its options."""

    file: Path
    name: str
    options: str


def _params(registry: Registry, name: str, options: dict, origin: Origin):
    """``name``'s validated Params; a UserError naming the origin's field for an unknown name or a bad option."""
    if name not in registry.loggers:
        raise unknown_name(origin.file, origin.name, "logger", name, list(registry.loggers),
                           registry.failure_lines())
    cls = registry.loggers[name].cls
    try:
        if origin.file == COMMAND_LINE:  # --log values are YAML text: pydantic's usual coercions
            return cls.Params.model_validate(options)
        return validate_strictly(cls.Params, options)
    except ValidationError as err:
        raise UserError(format_validation_error(origin.file, err, origin.options, cls.Params)) from err


def _check_installed(cls: type[Logger], origin: Origin) -> None:
    missing = missing_modules(cls)
    if missing:
        install = cls.install or f"pip install {' '.join(missing)}"
        raise UserError(f"{origin.file}: {origin.name}: the {cls.name} logger needs {', '.join(missing)}, which "
                        f"is not installed; install it with: {install}")


def choose_loggers(loaded, registry: Registry, choices: Sequence[LoggerChoice] = ()) -> tuple[LoggerSpec, ...]:
    """The loggers of a ``kdbench run``: the suite's, then ``choices`` (``--log``) on top, each
    validated (name, options, its library installed); a UserError names the suite field or option."""
    chosen: dict[str, tuple[dict[str, Any], Origin]] = {}
    for i, entry in enumerate(loaded.suite.loggers):
        origin = Origin(loaded.path, f"loggers[{i}].name", f"loggers[{i}].options")
        if entry.name in chosen:
            raise UserError(f"{loaded.path}: {origin.name}: logger {entry.name!r} appears twice; list it once")
        _params(registry, entry.name, entry.options, origin)  # the suite's own options are valid alone
        chosen[entry.name] = (dict(entry.options), origin)
    for choice in choices:
        entry = as_entry(choice)
        if entry.name == NO_LOGGERS:
            chosen.clear()
            continue
        options = {**chosen[entry.name][0], **entry.options} if entry.name in chosen else entry.options
        chosen[entry.name] = (options, Origin(COMMAND_LINE, "--log", f"--log {entry.name} option"))
    specs = []
    for name, (options, origin) in chosen.items():
        params = _params(registry, name, options, origin)
        _check_installed(registry.loggers[name].cls, origin)
        specs.append(LoggerSpec(name, params.model_dump(mode="json")))
    return tuple(specs)
