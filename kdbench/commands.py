"""The command line as Python functions: the ``kdbench`` CLI is a thin layer over them.

::

    import kdbench
    res = kdbench.run_suite("suites/quickstart.yaml", output="results/qs", jobs=2)
    res.leaderboard()        # a DataFrame: one row per (task, method)
    res.curves()             # long form: run_id, step, flops, phase, metrics...
    kdbench.load_results("results/qs").leaderboard(fmt="md")

Every error a user can cause raises :class:`kdbench.UserError` with the message the
CLI prints (it then exits with code 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from .errors import UserError
from .plugins import Registry, load_plugins
from .progress import Reporter
from .suite import LoadedSuite, load_suite

PathLike = Union[str, Path]


def load(suite: PathLike, plugins: Sequence[PathLike] = (), output: Optional[PathLike] = None
         ) -> tuple[LoadedSuite, Registry]:
    """Parse and validate ``suite`` against the installed plugins (and ``plugins`` files); its runs."""
    loaded, registry = load_suite(Path(suite), load_plugins, tuple(str(p) for p in plugins))
    if output is not None:
        loaded.suite.output = str(output)
    return loaded, registry


def validate_suite(suite: PathLike, plugins: Sequence[PathLike] = ()) -> LoadedSuite:
    """Everything ``kdbench validate`` checks: the schema, every plugin's params (loggers included),
    and one probe step of every (task, method) pair on untrained models. Trains nothing; raises UserError."""
    from .loggers.selection import choose_loggers
    from .validation import check_runs

    loaded, registry = load(suite, plugins)
    choose_loggers(loaded, registry)
    check_runs(loaded, registry)
    return loaded


@dataclass
class SuiteRun:
    """What :func:`run_suite` did, with the results it left: ``leaderboard()``, ``curves()``,
    ``runs()`` and the other methods of :class:`kdbench.results.Results` are available on it."""

    output: Path
    total: int  # runs in the suite
    executed: list[dict] = field(default_factory=list)  # summaries of the runs executed now
    skipped: int = 0  # runs already finished (by an earlier command or another process)
    detached: bool = False  # submitted to a scheduler, not waited for
    leaderboard_path: Optional[Path] = None
    results: Optional[object] = None  # kdbench.results.Results, when the folder has runs to show

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.executed if s.get("status") == "failed"]

    @property
    def diverged(self) -> list[dict]:
        return [s for s in self.executed if s.get("status") == "diverged"]

    def __getattr__(self, name: str):
        results = self.__dict__.get("results")
        if results is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(results, name)


def run_suite(suite: PathLike, output: Optional[PathLike] = None, *, jobs: Optional[int] = None,
              device: str = "auto", launcher: Optional[str] = None, launcher_options: Sequence[str] = (),
              sbatch: Sequence[str] = (), detach: bool = False, precision: str = "fp32", compile: bool = False,
              plugins: Sequence[PathLike] = (), loggers: Sequence[Union[str, dict]] = (),
              reporter: Optional[Reporter] = None, log: Callable[[str], None] = lambda message: None) -> SuiteRun:
    """Do what ``kdbench run`` does: validate, train the teachers and every unfinished run, write
    the leaderboard and figures; return a :class:`SuiteRun`. A KeyboardInterrupt (Ctrl-C) saves
    the runs in progress, writes the leaderboard of what finished and propagates.

    ``launcher_options`` are ``KEY=VALUE`` strings (``-L``); ``loggers`` are ``--log`` strings
    (``"mlflow:tracking_uri=..."``) or ``{"name", "options"}`` dicts, on top of the suite's
    ``loggers:``; ``log`` receives the messages the CLI prints on stderr; ``reporter`` shows
    progress (default: none)."""
    from .device import check_device_spec, effective_precision, resolve_device
    from .launchers import LaunchContext, choose_launcher
    from .loggers.selection import choose_loggers
    from .store import atomic_write_text, run_is_done, write_manifest
    from .validation import check_runs

    loaded, registry = load(suite, plugins, output)
    launcher_cls, params = choose_launcher(loaded, registry, launcher, jobs, tuple(launcher_options), tuple(sbatch),
                                           detach)
    chosen_loggers = choose_loggers(loaded, registry, loggers)
    check_device_spec(device)
    check_runs(loaded, registry)
    dev = None if launcher_cls.runs_elsewhere else resolve_device(device)
    if dev is not None and effective_precision(precision, dev) != precision:
        log(f"--precision {precision}: bf16 autocast runs on CUDA only; training in fp32 on {dev}.")
    out = loaded.output
    todo = [r for r in loaded.runs if not run_is_done(out, r.run_id)]
    result = SuiteRun(output=out, total=len(loaded.runs), skipped=len(loaded.runs) - len(todo))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite.yaml", Path(suite).read_text())
    write_manifest(out, loaded.suite.name, Path(suite), [r.run_id for r in loaded.runs])  # what the leaderboard shows
    if result.skipped:
        log(f"{result.skipped} of {len(loaded.runs)} runs already finished in {out}: skipped.")
    ctx = LaunchContext(out=out, registry=registry, device=dev, reporter=reporter or Reporter(quiet=True),
                        plugin_paths=loaded.plugin_paths, options=params.model_dump(), params=params,
                        device_spec=device, precision=precision, compile=compile, detach=detach,
                        loggers=chosen_loggers)
    try:
        with ctx.reporter:
            summaries = launcher_cls().launch(todo, ctx) if todo else []
    except KeyboardInterrupt:
        write_outputs(out, log)
        raise
    if detach and todo:
        result.detached = True
        return result
    # a run another process finished while this one waited for its lock comes back "skipped"
    result.skipped += sum(1 for s in summaries if s.get("status") == "skipped")
    result.executed = [s for s in summaries if s.get("status") != "skipped"]
    result.leaderboard_path, result.results = write_outputs(out, log)
    return result


def write_outputs(out: Path, log: Callable[[str], None] = lambda message: None):
    """Write ``out``'s leaderboard and figures; return (leaderboard path, results), each None when
    there is nothing to show. A problem with the figures is logged, never raised: the runs are saved."""
    from .leaderboard import build_leaderboard
    from .plots import write_figures
    from .render import write_leaderboard
    from .results import load_results

    if not (out / "runs").is_dir():
        return None, None
    results = load_results(out)
    board = build_leaderboard(results)
    if not board.boards:
        return None, None
    path = write_leaderboard(board, out)
    try:
        write_figures(results)
    except Exception as exc:  # noqa: BLE001 - `kdbench plot` can retry
        log(f"figures not written: {type(exc).__name__}: {exc}")
    return path, results


@dataclass
class PlannedRun:
    """One row of :func:`plan_suite`: a run, its budget, its phases as allotted, whether it is
    done, and its estimated seconds (None without a time probe)."""

    run: object  # kdbench.suite.Run
    budget_flops: float
    phases: list[tuple[str, int, int]]  # (name, steps, FLOPs per step)
    done: bool
    seconds: Optional[float] = None


@dataclass
class Plan:
    """What :func:`plan_suite` found: the runs, the teachers' estimated seconds, where it was measured."""

    suite: LoadedSuite
    device: object  # torch.device
    precision: str
    runs: list[PlannedRun]
    teachers: dict[str, float]  # teacher id -> estimated seconds (teachers to train)
    probe_steps: int

    @property
    def seconds_left(self) -> float:
        """Estimated seconds of the unfinished runs, one after another (teachers not included)."""
        return sum(r.seconds or 0.0 for r in self.runs if not r.done)


def plan_suite(suite: PathLike, output: Optional[PathLike] = None, *, device: str = "auto", probe_steps: int = 10,
               precision: str = "fp32", compile: bool = False, plugins: Sequence[PathLike] = ()) -> Plan:
    """Do what ``kdbench plan`` does: every run's measured FLOPs per step and allotted steps, which
    are done, and (``probe_steps`` > 0) its time estimated from that many timed engine steps."""
    from .device import effective_precision, resolve_device
    from .probe import estimate_job
    from .runner import build_task, prepare
    from .store import run_is_done
    from .suite import short_hash
    from .teachers import ProbeTeacher, teacher_job
    from .validation import check_runs

    loaded, registry = load(suite, plugins, output)
    dev = resolve_device(device)
    precision = effective_precision(precision, dev)
    check_runs(loaded, registry)
    tasks, estimates, teachers, rows = {}, {}, {}, []
    for r in loaded.runs:
        if r.teacher_id not in tasks:
            tasks[r.teacher_id] = build_task(r, registry, dev, None)
        task = tasks[r.teacher_id]
        p = prepare(r, registry, task, ProbeTeacher(task, r.teacher_seed, r.checkpoints), dev, precision=precision,
                    compile=compile)
        row = PlannedRun(r, p.budget_flops, [(x.phase.name, x.steps, x.step_flops) for x in p.job.plan],
                         run_is_done(loaded.output, r.run_id))
        if probe_steps:
            config = r.config()
            same = short_hash([r.teacher_id, r.method, r.method_params, config["student_recipe"], config["budget"],
                               config["eval"]])
            if same not in estimates:  # seeds do not change the speed
                estimates[same] = estimate_job(p.job, probe_steps)
            row.seconds = estimates[same]
            needs = registry.methods[r.method].cls.needs_teacher and not r.teacher_checkpoint
            if needs and r.teacher_id not in teachers:
                job = teacher_job(task, r.teacher_seed, r.teacher_recipe, r.eval.points, precision=precision,
                                  compile=compile)
                teachers[r.teacher_id] = estimate_job(job, probe_steps)
        rows.append(row)
    return Plan(loaded, dev, precision, rows, teachers, probe_steps)


def suite_status(target: PathLike, output: Optional[PathLike] = None, plugins: Sequence[PathLike] = ()):
    """Do what ``kdbench status`` does: ``(out, runs, teachers)``, a row per run and per teacher of
    a results folder, or of a suite's output folder, with where each stands."""
    from .launchers.status import collect

    target = Path(target)
    if target.is_file():
        loaded, registry = load(target, plugins, output)
        out, runs = loaded.output, loaded.runs
    elif target.is_dir():
        out, runs, registry = target, None, load_plugins(tuple(str(p) for p in plugins))
    else:
        raise UserError(f"{target}: no such results folder or suite file")
    rows, teachers = collect(out, registry, runs)
    return out, rows, teachers
