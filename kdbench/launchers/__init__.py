"""Launchers execute the unfinished runs of a suite. Built-ins: ``local`` and ``slurm``.

A launcher is chosen by ``kdbench run --launcher NAME`` or a suite's
``launcher: {name: ..., options: {...}}``; its options are validated by its
``Params`` model (suite options, then ``--launcher-option key=value`` and the
shortcuts ``--jobs`` / ``--sbatch`` on top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import yaml
from pydantic import ValidationError

from kdbench.api import Params
from kdbench.errors import UserError
from kdbench.plugins import Registry
from kdbench.progress import Reporter
from kdbench.run.options import RunOptions
from kdbench.suite.identity import Run
from kdbench.suite.schema import format_validation_error, unknown_name, validate_strictly


@dataclass
class LaunchContext:
    """What every launcher gets besides the runs.

    ``run_options`` say where and how runs train: their ``device`` is resolved on
    this machine (None for a launcher that runs elsewhere: it resolves
    ``device_spec`` where the run executes, with ``run_options.on(device)``); pass
    them to ``execute_run``. ``device``, ``device_spec``, ``precision`` and
    ``compile`` read them. ``params``
    is the launcher's validated ``Params``. ``plugin_paths`` are every plugin
    file the suite and the command line named, so a worker process or a job on
    another machine can rebuild the same registry. ``teacher_checkpoints`` adds
    checkpoints a teacher stores beyond those the runs read (a tuning sweep's
    later trials may read them: see ``common.teacher_groups``). ``loggers``
    (plain data) are the experiment trackers that follow every run: pass them
    to ``execute_run``.
    """

    out: Path
    registry: Registry
    run_options: RunOptions  # device (None: resolved where the runs execute), precision, compile
    reporter: Reporter
    plugin_paths: tuple = ()
    options: dict = field(default_factory=dict)
    params: Optional[Params] = None
    detach: bool = False
    loggers: tuple = ()  # kdbench.loggers.selection.LoggerSpec
    teacher_checkpoints: dict = field(default_factory=dict)  # teacher id -> checkpoints to store beside the runs'
    threads: dict = field(default_factory=dict)  # the local launcher's choice per share of the cores (see .threads)
    free_cores: Any = None  # the local launcher's reading of the free cores, once per suite (local.FreeCores)
    jobs_logged: Optional[int] = None  # the default jobs the local launcher last logged

    @property
    def device(self) -> Optional[torch.device]:
        """``run_options.device``: resolved on this machine (None for a launcher that runs elsewhere)."""
        return self.run_options.device

    @property
    def device_spec(self) -> str:
        """``run_options.device_spec``: the device as asked for (auto, cpu, cuda, cuda:N)."""
        return self.run_options.device_spec

    @property
    def precision(self) -> str:
        """``run_options.precision``: fp32, or bf16 (autocast on CUDA only)."""
        return self.run_options.precision

    @property
    def compile(self) -> bool:
        """``run_options.compile``: torch.compile student and teacher after their FLOPs are measured."""
        return self.run_options.compile


@dataclass
class JobState:
    """A job a launcher holds for a run or a teacher, as ``kdbench status`` shows it: ``state`` is
    ``pending``, ``running`` or ``lost`` (the job ended without a result); ``labels`` holds the
    task, method, seed and teacher_id where the launcher recorded them (for a run with no folder yet)."""

    state: str
    detail: str = ""
    job: str = ""
    labels: dict = field(default_factory=dict)


class Launcher:
    """A launcher plugin: ``launch(runs, ctx)`` executes ``runs`` and returns their summaries.

    ``jobs_option`` names the field of ``Params`` that ``kdbench run --jobs N``
    sets (how many runs execute at once); ``runs_elsewhere`` says the runs do not
    execute on this machine (so ``--device`` is resolved where they do);
    ``detachable`` says ``--detach`` is meaningful (submit and return).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[Params]] = Params
    description: ClassVar[str] = ""
    jobs_option: ClassVar[Optional[str]] = None
    runs_elsewhere: ClassVar[bool] = False
    detachable: ClassVar[bool] = False

    def launch(self, runs: list[Run], ctx: LaunchContext) -> list[dict]:
        raise NotImplementedError

    def job_states(self, out: Path, run_ids: list[str], teacher_ids: list[str]) -> dict[str, JobState]:
        """Where this launcher's jobs for these runs and teachers of results folder ``out`` stand,
        for ``kdbench status``: by id, only the ids it holds a job for (they have no result yet).
        A launcher that runs everything while ``kdbench run`` waits holds none: the default."""
        return {}


def parse_option(text: str, flag: str = "--launcher-option") -> tuple[str, Any]:
    """``key=value`` from the command line option ``flag``; the value is read as a YAML scalar or list."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{flag}: {text!r} is not KEY=VALUE")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def launcher_params(cls: type[Launcher], suite_options: dict, cli_options: dict, where: Path) -> Params:
    """``cls.Params`` from the suite's options with the command line's on top; a bad key or
    value is a UserError naming the suite's ``launcher.options`` or the command-line option."""
    try:
        validate_strictly(cls.Params, suite_options)  # the suite's own: strictly; -L values are YAML text
    except ValidationError as err:
        raise UserError(format_validation_error(where, err, "launcher.options", cls.Params)) from err
    try:
        return cls.Params.model_validate({**suite_options, **cli_options})
    except ValidationError as err:
        raise UserError(format_validation_error(Path("command line"), err, f"--launcher {cls.name} option",
                                                cls.Params)) from err


def choose_launcher(loaded, registry: Registry, name: Optional[str] = None, jobs: Optional[int] = None,
                    options: tuple = (), sbatch: tuple = (), detach: bool = False) -> tuple[type[Launcher], Params]:
    """The launcher class and its validated params for ``kdbench run``: the command line's
    ``--launcher`` (else the suite's ``launcher.name``), the suite's options when it names
    the same launcher, then ``--launcher-option KEY=VALUE``, ``--jobs`` and ``--sbatch``."""
    entry = loaded.suite.launcher
    name = name or entry.name
    if name not in registry.launchers:
        raise unknown_name(Path("--launcher"), "launcher", "launcher", name, list(registry.launchers),
                           registry.failure_lines())
    cls = registry.launchers[name].cls
    suite_options = dict(entry.options) if entry.name == name else {}
    cli = dict(parse_option(o) for o in options)
    if jobs is not None:
        if cls.jobs_option is None:
            raise UserError(f"--jobs: the {name!r} launcher does not run jobs at once")
        cli[cls.jobs_option] = jobs
    if sbatch:
        if "sbatch" not in cls.Params.model_fields:
            raise UserError(f"--sbatch: only for a launcher that submits sbatch jobs (slurm), not {name!r}")
        cli["sbatch"] = list(cli.get("sbatch", suite_options.get("sbatch", []))) + list(sbatch)
    if detach and not cls.detachable:
        raise UserError(f"--detach: the {name!r} launcher runs here and cannot detach; use --launcher slurm")
    return cls, launcher_params(cls, suite_options, cli, loaded.path)
