"""The command line as Python functions: the ``kdbench`` CLI is a thin layer over them.

::

    import kdbench
    res = kdbench.run_suite("suites/quickstart.yaml", output="out/qs", jobs=2)
    res.leaderboard()        # a DataFrame: one row per (task, method)
    res.curves()             # long form: run_id, task, method, seed, teacher_seed, step, flops, phase, metrics
    kdbench.load_results("out/qs").leaderboard(fmt="md")

Every error a user can cause raises :class:`kdbench.UserError` with the message the
CLI prints (it then exits with code 2).
"""

from __future__ import annotations

import contextlib
import operator
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from kdbench import __version__
from kdbench.errors import UserError
from kdbench.files import atomic_write_json
from kdbench.launchers import LaunchContext, choose_launcher, local
from kdbench.launchers.common import interrupted_lines
from kdbench.launchers.threads import ThreadChoice, choose_threads, torch_threads
from kdbench.loggers.selection import choose_loggers
from kdbench.plugins import Registry, load_plugins
from kdbench.progress import ProgressEvent, Reporter, os_error
from kdbench.run.options import RunOptions, resolve_device
from kdbench.run.pricing import load_suite
from kdbench.run.probe import estimate_job
from kdbench.run.runner import build_task, prepare
from kdbench.run.seed_groups import plan_group, seed_groups, static_reason
from kdbench.run.store import make_results_folder, outputs_up_to_date, record_outputs, run_is_done, write_manifest
from kdbench.run.teachers import ProbeTeacher, teacher_job
from kdbench.run.trust import code_changes, repair_teachers, set_aside_changed
from kdbench.run.validation import check_runs
from kdbench.suite.expand import LoadedSuite
from kdbench.suite.identity import short_hash

PathLike = Union[str, Path]
CLAIMS_FILE = "claims.json"  # OUT/claims.json: the suite's claims judged, written with the leaderboard
HTML_REPORT = "report.html"  # OUT/report.html: the self-contained HTML report, written with the leaderboard


def load(suite: PathLike, plugins: Sequence[PathLike] = (), output: Optional[PathLike] = None
         ) -> tuple[LoadedSuite, Registry]:
    """Parse and validate ``suite`` against the installed plugins (and ``plugins`` files); its runs."""
    try:
        loaded, registry = load_suite(Path(suite), load_plugins, tuple(str(p) for p in plugins))
    except SystemExit as exc:  # a plugin file that calls sys.exit() when imported
        raise UserError(f"{suite}: plugins: a plugin called sys.exit({exc.code!r}) while loading") from exc
    if output is not None:
        loaded.suite.output = str(output)
    return loaded, registry


def validate_suite(suite: PathLike, plugins: Sequence[PathLike] = ()) -> LoadedSuite:
    """Everything ``kdbench validate`` checks: the schema, every plugin's params (loggers included),
    and one probe step of every (task, method) pair on untrained models. Trains nothing; raises UserError."""
    loaded, registry = load(suite, plugins)
    choose_loggers(loaded, registry)
    check_runs(loaded, registry, target=resolve_device("auto"))  # sizes bounded by the device run would pick
    return loaded


class SkippedRuns(list):
    """The run ids a :func:`run_suite` call found finished and skipped. Until kdbench 0.3 ``skipped``
    was their count: compared with (or added to) an int it still acts as the count, with a
    DeprecationWarning (removed in 0.4)."""

    def _as_count(self, other, op):
        warnings.warn("SuiteRun.skipped is a list of run ids since kdbench 0.3; use len(skipped) for the count",
                      DeprecationWarning, stacklevel=3)
        return op(len(self), other)

    def __eq__(self, other):
        return self._as_count(other, operator.eq) if isinstance(other, int) else list.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self._as_count(other, operator.lt) if isinstance(other, int) else list.__lt__(self, other)

    def __gt__(self, other):
        return self._as_count(other, operator.gt) if isinstance(other, int) else list.__gt__(self, other)

    def __le__(self, other):
        return self < other or self == other

    def __ge__(self, other):
        return self > other or self == other

    def __add__(self, other):
        return self._as_count(other, operator.add) if isinstance(other, int) else SkippedRuns(list.__add__(self, other))

    def __radd__(self, other):
        return self._as_count(other, lambda n, o: o + n)

    def __int__(self):
        return self._as_count(0, operator.add)

    __hash__ = None


@dataclass
class SuiteRun:
    """What :func:`run_suite` did, with the results it left: ``leaderboard()``, ``curves()``,
    ``runs()`` and the other methods of :class:`kdbench.results.Results` are available on it."""

    output: Path
    total: int  # runs in the suite
    executed: list[dict] = field(default_factory=list)  # summaries of the runs executed now
    skipped: SkippedRuns = field(default_factory=SkippedRuns)  # run ids already finished (earlier, or elsewhere)
    detached: bool = False  # submitted to a scheduler, not waited for
    leaderboard_path: Optional[Path] = None
    leaderboard_error: Optional[str] = None  # why the leaderboard could not be written (a full disk)
    loaded_results: Optional[object] = field(default=None, repr=False)  # read by write_outputs, if it did
    code_changed: list[str] = field(default_factory=list)  # finished runs produced by other plugin code

    @property
    def results(self) -> Optional[object]:
        """The :class:`kdbench.results.Results` of the output folder (None when it has no runs to show)."""
        if self.loaded_results is None and self.leaderboard_path is not None:
            from kdbench.results.folder import load_results  # the outputs were up to date: nothing had read the runs

            self.loaded_results = load_results(self.output)
        return self.loaded_results

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.executed if s.get("status") == "failed"]

    @property
    def diverged(self) -> list[dict]:
        return [s for s in self.executed if s.get("status") == "diverged"]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        results = self.results
        if results is None:
            raise AttributeError(name)
        return getattr(results, name)


def run_suite(suite: PathLike, output: Optional[PathLike] = None, *, jobs: Optional[int] = None,
              device: str = "auto", launcher: Optional[str] = None, launcher_options: Sequence[str] = (),
              sbatch: Sequence[str] = (), detach: bool = False, precision: str = "fp32", compile: bool = False,
              plugins: Sequence[PathLike] = (), loggers: Sequence[Union[str, dict]] = (),
              reporter: Optional[Reporter] = None, log: Callable[[str], None] = lambda message: None,
              keep_students: Optional[bool] = None,
              progress: Optional[Callable[[ProgressEvent], None]] = None, rerun_changed: bool = False,
              batch_seeds: bool = False) -> SuiteRun:
    """Do what ``kdbench run`` does: validate, train the teachers and every unfinished run, write
    the leaderboard and figures; return a :class:`SuiteRun`. A KeyboardInterrupt (Ctrl-C) saves
    the runs in progress, writes the leaderboard of what finished and propagates (SIGTERM too, as
    :class:`kdbench.run.stop.Interrupted` with ``exit_code`` 143). An output folder that cannot be
    written is a UserError before anything trains; a leaderboard that cannot be written after the
    runs (a full disk) is logged and kept in ``leaderboard_error``.

    ``launcher_options`` are ``KEY=VALUE`` strings (``-L``); ``loggers`` are ``--log`` strings
    (``"mlflow:tracking_uri=..."``) or ``{"name", "options"}`` dicts, on top of the suite's
    ``loggers:``; ``log`` receives the messages the CLI prints on stderr; ``reporter`` shows
    progress (default: none); ``keep_students``, if given, overrides the suite's ``keep_students``;
    ``progress`` receives a :class:`kdbench.progress.ProgressEvent` as each run and teacher starts,
    steps, evaluates and ends (a job estimated over an hour is warned about through ``log``);
    ``rerun_changed`` redoes the finished runs made by other method or task code than installed now
    (:mod:`kdbench.run.trust`; else they are kept and named in ``log``); ``batch_seeds`` stacks seeds
    (:mod:`kdbench.run.seed_groups`). It takes the command's flags one for one, hence their number."""
    loaded, registry = load(suite, plugins, output)
    if keep_students is not None:
        loaded.runs = [replace(r, keep_students=keep_students) for r in loaded.runs]
    launcher_cls, params = choose_launcher(loaded, registry, launcher, jobs, tuple(launcher_options), tuple(sbatch),
                                           detach)
    chosen_loggers = choose_loggers(loaded, registry, loggers)
    if detach and loaded.tune is not None:
        raise UserError(f"{suite}: tune: a sweep reads each round's results before asking the next; "
                        "run it without --detach")
    options = RunOptions.resolve(device, precision, compile, here=not launcher_cls.runs_elsewhere,
                                 batch_seeds=batch_seeds)
    tasks = check_runs(loaded, registry, target=options.device)  # None where the runs train elsewhere
    if options.device is not None and options.effective_precision != precision:
        log(f"--precision {precision}: bf16 autocast runs on CUDA only; training in fp32 on {options.device}.")
    out = _results_folder(loaded.output, Path(suite))
    result = SuiteRun(output=out, total=len(loaded.runs))
    reporter = _suite_reporter(reporter, progress, log, str(options.device or device), suite)
    ctx = LaunchContext(out=out, registry=registry, run_options=options, reporter=reporter,
                        plugin_paths=loaded.plugin_paths, options=params.model_dump(), params=params, detach=detach,
                        loggers=chosen_loggers)
    launched = []

    def launch(runs: list) -> list[dict]:
        """Launch the unfinished ``runs``; count what ran and what was found done."""
        todo = [r for r in runs if not run_is_done(out, r.run_id)]
        result.skipped.extend(r.run_id for r in runs if r.run_id not in {t.run_id for t in todo})
        launched.extend(todo)
        summaries = launcher_cls().launch(todo, ctx) if todo else []
        # a run another process finished while this one waited for its lock comes back "skipped"
        result.skipped.extend(s["run_id"] for s in summaries if s.get("status") == "skipped")
        result.executed += [s for s in summaries if s.get("status") != "skipped"]
        return summaries

    try:
        runs, trials = loaded.runs, []
        if loaded.tune is not None:
            with ctx.reporter:
                runs, trials = _tune(loaded, registry, tasks, params, launcher_cls, ctx, launch, Path(suite))
            result.total += len(trials)
        write_manifest(out, loaded.suite.name, Path(suite), [r.run_id for r in runs], [r.run_id for r in trials],
                       [*runs, *trials])
        _check_done_work(out, runs, registry, options, rerun_changed, result, log,
                         here=not launcher_cls.runs_elsewhere)
        done = sum(run_is_done(out, r.run_id) for r in runs)
        if done:
            log(f"{done} of {len(runs)} runs already finished in {out}: skipped.")
        with ctx.reporter:
            launch(runs)
    except KeyboardInterrupt:
        for line in interrupted_lines(out, launched):
            log(line)
        with contextlib.suppress(OSError):
            write_outputs(out, log)
        raise
    result.detached = bool(detach and launched)
    return result if result.detached else _with_outputs(result, log)


def _suite_reporter(reporter: Optional[Reporter], progress, log: Callable[[str], None], device: str,
                    suite: PathLike) -> Reporter:
    """The run's progress display (none by default) with the ``progress`` callback listening to it."""
    reporter = reporter or Reporter(quiet=True, warn=log)
    if progress is not None:
        reporter.listeners.append(progress)
    reporter.device, reporter.suite = device, str(suite)
    return reporter


def _check_done_work(out: Path, runs: list, registry, options: RunOptions, rerun_changed: bool, result: SuiteRun,
                     log: Callable[[str], None], here: bool) -> None:
    """Before the launch: name the finished runs produced by other plugin code than installed now
    (set aside to be redone with ``rerun_changed``, recorded in ``result.code_changed``), and, when the
    runs execute ``here``, mend cached teachers whose records do not verify (:mod:`kdbench.run.trust`).
    Eight arguments: the folder, its runs and plugins, how they run, the flag, and where to report."""
    changes = code_changes(out, runs, registry)
    for change in changes:
        log(change.line(rerun_changed))
        result.code_changed.extend(change.run_ids)
    if rerun_changed:
        set_aside_changed(out, changes)
    if here:
        repair_teachers(out, runs, registry, options)


def _with_outputs(result: SuiteRun, log: Callable[[str], None]) -> SuiteRun:
    """``result`` with the leaderboard and figures of its folder written; a leaderboard that cannot be
    written (a full disk) is logged and kept in ``leaderboard_error``: the runs are stored."""
    out = result.output
    try:
        result.leaderboard_path, result.loaded_results = write_outputs(out, log)
    except OSError as exc:
        result.leaderboard_error = os_error(exc)
        log(f"leaderboard not written: {result.leaderboard_error}; `kdbench leaderboard {out}` writes it "
            "from the stored runs")
    return result


def _results_folder(out: Path, suite: Path) -> Path:
    """``out``, made a results folder holding ``suite``'s text; a UserError if it cannot be written."""
    try:
        make_results_folder(out, suite.read_text())
    except OSError as exc:
        raise UserError(f"--output {out}: the results folder cannot be written: {os_error(exc)}") from exc
    return out


def _tune(loaded, registry, tasks, params, launcher_cls, ctx, launch, suite: Path):
    """The sweep of a tuned suite (:mod:`kdbench.tuning`): (its test runs, the trial runs). Eight
    arguments: the suite, its plugins and tasks, the launcher (class, params, context, launch) and the file."""
    # start-up cost: the sweep imports optuna and pandas (0.5 s together), paid only by a tuned suite
    from kdbench.tuning.sweep import Sweep

    jobs = (getattr(params, launcher_cls.jobs_option, 1) if launcher_cls.jobs_option else 1) or 1
    sweep = Sweep(loaded, registry, ctx.out, tasks, jobs, ctx.reporter.log)
    ctx.teacher_checkpoints = sweep.teacher_checkpoints()
    untuned = [r for r in loaded.runs if r.method_label not in loaded.tune.spaces]

    def on_round(trials: list) -> None:
        """Before each round: its trial runs are the suite's, not "other runs", should it be interrupted."""
        ctx.reporter.trial_ids.update(r.run_id for r in trials)  # their progress reads "trial", not "run"
        write_manifest(ctx.out, loaded.suite.name, suite, [r.run_id for r in untuned], [r.run_id for r in trials],
                       [*untuned, *trials])

    return sweep.run(launch, on_round=on_round), sweep.trial_runs()


def write_outputs(out: Path, log: Callable[[str], None] = lambda message: None):
    """Write ``out``'s leaderboard, figures and ``report.html``; return (leaderboard path, results), each
    None when there is nothing to show. A problem with the figures or the HTML is logged, never raised:
    the runs are saved.
    When no file of ``out`` changed since they were last written
    (:func:`kdbench.run.store.outputs_up_to_date`), they are left as they are and results is None
    (:class:`SuiteRun` reads them when asked)."""
    if not (out / "runs").is_dir():
        return None, None
    leaderboard = out / "leaderboard.md"
    if leaderboard.is_file() and (out / HTML_REPORT).is_file() and outputs_up_to_date(out, __version__):
        return leaderboard, None

    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), not paid when nothing changed
    from kdbench.results.folder import load_results
    from kdbench.results.leaderboard import build_leaderboard
    from kdbench.results.render import write_leaderboard

    results = load_results(out)
    board = build_leaderboard(results)
    if not board.boards:
        return None, None
    path = write_leaderboard(board, out)
    write_claims(out, board.claims)
    if _write_views(results, out, log):
        record_outputs(out, __version__)
    return path, results


def _write_views(results, out: Path, log: Callable[[str], None]) -> bool:
    """Write ``out``'s figures and ``out/report.html``; a problem with either is logged, never
    raised (the runs are saved; ``kdbench plot`` and ``kdbench html`` can retry). Whether both were written."""
    # start-up cost: matplotlib (0.5 s) and plotly's bundle, not paid when nothing changed
    from kdbench.results.html import write_html_report
    from kdbench.results.plots import write_figures

    written = True
    for what, write in (("figures", lambda: write_figures(results)),
                        (HTML_REPORT, lambda: write_html_report(results, out / HTML_REPORT))):
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - a view of the results, never fatal to the runs
            log(f"{what} not written: {type(exc).__name__}: {exc}")
            written = False
    return written


def write_claims(out: Path, report: Optional[object]) -> Optional[Path]:
    """Write ``report`` (a :class:`kdbench.results.claims.ClaimsReport`) to ``out/claims.json``
    atomically and return its path; when the suite states no claims, remove an earlier file."""
    path = Path(out) / CLAIMS_FILE
    if report is None or not report.claims:
        path.unlink(missing_ok=True)
        return None
    atomic_write_json(path, report.to_json())
    return path


def check_claims(results: PathLike):
    """Do what ``kdbench check`` does: the claims of the suite last run into results folder
    ``results`` judged on its runs, a :class:`kdbench.results.claims.ClaimsReport`; a UserError
    when the suite states no claims."""
    # start-up cost: pandas (0.4 s), paid only by the commands that read results
    from kdbench.results.folder import load_results

    report = load_results(results).claims()
    if not report.claims:
        raise UserError(f"{Path(results) / 'suite.yaml'}: claims: the suite states no claims to check; add a "
                        "claims: block (see docs/suite-format.md) and run it again")
    return report


@dataclass
class PlannedRun:
    """One row of :func:`plan_suite`: a run, its budget, its phases as allotted, whether it is
    done, and its estimated seconds (None without a time probe)."""

    run: object  # kdbench.suite.Run
    budget_flops: float
    phases: list[tuple[str, int, int]]  # (name, steps, FLOPs per step)
    done: bool
    estimate: Optional[object] = None  # kdbench.run.probe.Estimate (None without a time probe)

    @property
    def seconds(self) -> Optional[float]:
        """The estimate's median seconds, or None."""
        return None if self.estimate is None else self.estimate.mid


@dataclass
class Plan:
    """What :func:`plan_suite` found: the runs, the teachers' estimated seconds, where it was measured."""

    suite: LoadedSuite
    device: object  # torch.device
    precision: str
    runs: list[PlannedRun]
    teachers: dict[str, float]  # teacher id -> estimated seconds (teachers to train)
    probe_steps: int
    tuning_runs: int = 0  # trial runs a tuned suite's sweep adds (the runs listed are its test runs)
    tuning_seconds: float = 0.0  # their estimated seconds, one after another (0 without a time probe)
    dev_teachers: dict[str, float] = field(default_factory=dict)  # the sweep's dev teachers to train -> est. seconds
    threads: int = 1  # torch threads the estimates were measured with: those `kdbench run` would use
    threads_reason: str = ""
    load: tuple = (0.0, 1)  # (1-minute load average before measuring, CPU cores available)
    # --batch-seeds: (run ids of a group of seeds, why it runs one by one or None when it stacks)
    seed_groups: list[tuple[list[str], Optional[str]]] = field(default_factory=list)
    jobs: int = 1  # runs at once `kdbench run` would choose with the local launcher
    jobs_reason: str = ""  # why: the suite's launcher options, or the cores free

    @property
    def busy(self) -> bool:
        """Whether other work was using most of the cores when the estimates were measured."""
        load, cores = self.load
        return load >= 0.75 * cores

    @property
    def seconds_left(self) -> float:
        """Estimated seconds of the unfinished runs, one after another (teachers not included)."""
        return sum(r.seconds or 0.0 for r in self.runs if not r.done)

    @property
    def spread_left(self) -> tuple[float, float]:
        """The same sum from the step times' first and third quartiles."""
        left = [r.estimate for r in self.runs if not r.done and r.estimate is not None]
        return sum(e.low for e in left), sum(e.high for e in left)


def plan_suite(suite: PathLike, output: Optional[PathLike] = None, *, device: str = "auto", probe_steps: int = 10,
               precision: str = "fp32", compile: bool = False, plugins: Sequence[PathLike] = (),
               batch_seeds: bool = False) -> Plan:
    """Do what ``kdbench plan`` does: every run's measured FLOPs per step and allotted steps, which
    are done, and (``probe_steps`` > 0) its time estimated from that many timed engine steps;
    with ``batch_seeds``, which groups of seeds ``kdbench run --batch-seeds`` stacks (and why not)."""

    loaded, registry = load(suite, plugins, output)
    options = RunOptions.resolve(device, precision, compile)
    options = replace(options, precision=options.effective_precision)
    check_runs(loaded, registry, target=options.device)
    machine = local.free_cores()  # before this process adds its own work
    jobs, jobs_reason = _default_jobs(loaded, machine)
    threads = ThreadChoice(torch.get_num_threads(), "")
    if probe_steps:  # time steps as `kdbench run` would run them: with a job's share of the cores
        ctx = LaunchContext(out=loaded.output, registry=registry, run_options=replace(options, compile=False),
                            reporter=Reporter(quiet=True))
        threads = choose_threads(loaded.runs, ctx, local.threads_per_job(jobs))
    with torch_threads(threads.threads):
        plan = _estimate(loaded, registry, options, probe_steps)
    plan.threads, plan.threads_reason = threads.threads, threads.reason
    plan.load, plan.jobs, plan.jobs_reason = (machine.load or 0.0, machine.cores), jobs, jobs_reason
    if batch_seeds:
        plan.seed_groups = _plan_seed_groups(loaded, registry, options)
    return plan


def _plan_seed_groups(loaded: LoadedSuite, registry, options: RunOptions) -> list[tuple[list[str], Optional[str]]]:
    """Each group of seeds of the suite: its run ids and why it would run one by one (None: stacked)."""
    groups, tasks = [], {}
    for group in seed_groups(loaded.runs):
        first, reason = group[0], "a single seed"
        if len(group) > 1:
            reason = static_reason(first, options)
        if reason is None:
            task = tasks.setdefault(first.teacher_id, build_task(first, registry, options.device, None))
            reason = plan_group(group, registry, task, ProbeTeacher(task, first.teacher_seed, first.checkpoints),
                                options, None)[1]
        groups.append(([r.run_id for r in group], reason))
    return groups


def _default_jobs(loaded: LoadedSuite, machine) -> tuple[int, str]:
    """The jobs `kdbench run` (local launcher, no --jobs) would run ``loaded``'s unfinished runs with, and why."""
    given = loaded.suite.launcher.options.get("jobs") if loaded.suite.launcher.name == "local" else None
    if isinstance(given, int) and given >= 1:
        return given, "the suite's launcher options"
    left = sum(not run_is_done(loaded.output, r.run_id) for r in loaded.runs)
    return machine.jobs(max(1, left))


def _estimate(loaded: LoadedSuite, registry, options, probe_steps: int) -> Plan:
    """The rows of :func:`plan_suite`, their estimates timed with the threads already set."""

    tasks, estimates, teachers, rows = {}, {}, {}, []
    for r in loaded.runs:
        if r.teacher_id not in tasks:
            tasks[r.teacher_id] = build_task(r, registry, options.device, None)
        task = tasks[r.teacher_id]
        p = prepare(r, registry, task, ProbeTeacher(task, r.teacher_seed, r.checkpoints), options)
        row = PlannedRun(r, p.budget_flops, [(x.phase.name, x.steps, x.step_flops) for x in p.job.plan],
                         run_is_done(loaded.output, r.run_id))
        if probe_steps:
            config = r.config()
            same = short_hash([r.teacher_id, r.method, config["method_params"], config["student_recipe"],
                               config["budget"], config["eval"]])
            if same not in estimates:  # seeds do not change the speed
                estimates[same] = estimate_job(p.job, probe_steps)
            row.estimate = estimates[same]
            given = r.teacher_checkpoint or task.teacher_source()
            needs = registry.methods[r.method].cls.needs_teacher and not given
            if needs and r.teacher_id not in teachers:
                job = teacher_job(task, r.teacher_seed, r.teacher_recipe, r.eval.points, options=options)
                teachers[r.teacher_id] = estimate_job(job, probe_steps).mid
        rows.append(row)
    plan = Plan(loaded, options.device, options.precision, rows, teachers, probe_steps)
    if loaded.tune is not None:
        _plan_tuning(plan, tasks, registry)
    return plan


def _plan_tuning(plan: Plan, tasks: dict, registry) -> None:
    """Add a tuned suite's sweep to ``plan``: per tuned (task, method), ``trials`` x dev seeds x dev
    teacher seeds trial runs, timed as the method's first test run; and the dev teachers they read,
    timed as the test teacher of the same recipe (a given teacher is not trained)."""
    loaded = plan.suite
    tune, first = loaded.tune, (loaded.suite.seeds[0], loaded.suite.teacher_seeds[0])
    for row in plan.runs:
        run = row.run
        if run.method_label not in tune.spaces or (run.seed, run.teacher_seed) != first:
            continue
        plan.tuning_runs += tune.spec.trials * tune.runs_per_trial
        plan.tuning_seconds += tune.spec.trials * tune.runs_per_trial * (row.seconds or 0.0)
        given = run.teacher_checkpoint or tasks[run.teacher_id].teacher_source()
        if registry.methods[run.method].cls.needs_teacher and not given:
            for dev in tune.dev_templates(run).values():
                plan.dev_teachers[dev.teacher_id] = plan.teachers.get(run.teacher_id, 0.0)


def suite_status(target: PathLike, output: Optional[PathLike] = None, plugins: Sequence[PathLike] = ()):
    """Do what ``kdbench status`` does: ``(out, runs, teachers)``, a row per run and per teacher of
    a results folder, or of a suite's output folder, with where each stands."""
    # start-up cost: pandas (0.4 s), paid only by `kdbench status`
    from kdbench.launchers.status import collect

    target = Path(target)
    if target.is_file():
        loaded, registry = load(target, plugins, output)
        # a tuned suite's runs are known once its sweep has chosen: show every run of its folder
        out, runs = loaded.output, (loaded.runs if loaded.tune is None else None)
    elif target.is_dir():
        out, runs, registry = target, None, load_plugins(tuple(str(p) for p in plugins))
    else:
        raise UserError(f"{target}: no such results folder or suite file")
    rows, teachers = collect(out, registry, runs)
    return out, rows, teachers


def tune_report(results: PathLike, fmt: str = "md", all_runs: bool = False) -> str:
    """Do what ``kdbench tune-report`` does: every trial of the tuning sweeps in results folder
    ``results`` and each method's sensitivity to its settings, as ``md``, ``csv``, ``json`` or
    ``latex`` text (see :mod:`kdbench.tuning.report`); a UserError when it holds no sweep."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.folder import load_results
    from kdbench.tuning.report import render_tuning

    return render_tuning(load_results(results, all_runs), fmt)
