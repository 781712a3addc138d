"""The ``local`` launcher: on this machine, in-process or in N worker processes.

In-process (``jobs: 1``) it trains each needed teacher once, then every run, one
after another. With ``--jobs N`` it runs N jobs at once in a pool of
``spawn``-ed worker processes (``fork`` after torch has started its
thread pool can hang the child; the workers' side is :mod:`.workers`). The CPU
cores are divided between the workers: each gets ``cores // N`` torch and OpenMP
threads, since oversubscribed threads ran 15-45x slower here. Teachers are jobs
of the same pool, each trained once; a run starts when its teacher is in the
cache. Workers rebuild the plugin registry from built-ins, entry points and the
plugin files the suite named.

When neither ``--jobs``, ``-L jobs=N`` nor the suite's launcher options say, it
runs as many jobs as cores are free: the cores it may use less those busy
now, rounded (:class:`FreeCores`, read once per suite: a tuning sweep launches
every round), at least 1 and at most the runs to do; 1 is in-process. The
choice is logged (``jobs: 2 (2 of 2 cores free, 0.1 busy; --jobs N sets it)``).

Nothing one job does stops the others: a teacher that fails fails only the runs
that need it (recorded in their folders), and a worker that dies (killed, out of
memory) fails the jobs it was running while a fresh pool runs the rest. Ctrl-C
and SIGTERM stop every job at the end of its step with its state saved.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Optional

import torch
from pydantic import Field

from kdbench.api import Params
from kdbench.errors import UserError
from kdbench.hookspecs import hookimpl
from kdbench.launchers import LaunchContext, Launcher
from kdbench.launchers.common import MALLOC_ENV, describe, describe_teacher, teacher_groups
from kdbench.launchers.threads import choose_threads, torch_threads
from kdbench.launchers.workers import init_worker, worker_group, worker_run, worker_teacher
from kdbench.run.runner import execute_run, fail_without_running, train_teacher
from kdbench.run.seed_groups import execute_group, seed_groups
from kdbench.run.stop import StopRequested, graceful_interrupt, interrupt_at_once, interrupted, stop_requested
from kdbench.run.store import teacher_dir
from kdbench.run.teachers import TeacherFailed, teacher_is_ready

WORKER_DIED = ("its worker process died (killed, out of memory, or a plugin ended the process); "
               "the next `kdbench run` retries it from its saved state")


class LocalParams(Params):
    """Options of the ``local`` launcher."""

    jobs: Optional[int] = Field(None, ge=1, description="runs at once; above 1 they run in that many worker processes "
                                                     "(default: the cores free, at most the runs to do)")
    threads: Optional[int] = Field(None, ge=1, description="torch/OpenMP threads per job (default: 1 or cores // jobs, "
                                                        "whichever a timed probe of the first job finds faster)")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, which a container or Slurm may restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class FreeCores:
    """The cores this process may use and how many cores other work keeps busy (``load``: measured
    now, see :func:`busy_cores`; None where the system says neither): what the default ``jobs`` is
    chosen from."""

    cores: int
    load: Optional[float]

    @property
    def free(self) -> int:
        """The cores no other work is using: ``cores`` less the busy ones, rounded (0 when it is busy)."""
        return max(0, self.cores - round(self.load or 0.0))

    def jobs(self, runs: int) -> tuple[int, str]:
        """The default jobs for ``runs`` runs to do, and why (for the log line)."""
        jobs = max(1, min(self.free, runs))
        load = "" if self.load is None else f", {self.load:.1f} busy"
        capped = f", {runs} run{'s' if runs != 1 else ''} to do" if runs < self.free else ""
        return jobs, f"{self.free} of {self.cores} cores free{load}{capped}; --jobs N sets it"


def cpu_times() -> Optional[tuple[int, int]]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(sample_s: float = 0.25) -> Optional[float]:
    """How many cores other work uses now: the machine's busy share of CPU time over ``sample_s``
    seconds (/proc/stat) times its cores; where that cannot be read, the 1-minute load average
    (which still counts a run that ended seconds ago: back to back, a second `kdbench run` would
    see a busy core); None where neither exists."""
    before = cpu_times()
    if before is not None:
        time.sleep(sample_s)
        after = cpu_times()
        if after is not None and after[1] > before[1]:
            return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not Unix, or unreadable
        return None


def free_cores() -> FreeCores:
    """The cores usable now and how many of the machine's are busy (before this process adds its own work)."""
    return FreeCores(available_cores(), busy_cores())


def job_units(runs, ctx: LaunchContext) -> list[list]:
    """What one job executes: each run alone, or with ``--batch-seeds`` each group of seeds
    (:func:`kdbench.run.seed_groups.seed_groups`)."""
    return seed_groups(runs) if ctx.run_options.batch_seeds else [[run] for run in runs]


def threads_per_job(jobs: int) -> int:
    """The cores divided evenly between ``jobs`` (at least 1)."""
    return max(1, available_cores() // jobs)


def worker_environment(threads: int) -> dict[str, str]:
    """Environment a worker must start with: thread counts and malloc tuning are read at start-up."""
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    # OpenMP threads waiting for work sleep instead of spinning against other processes
    env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    for name, value in MALLOC_ENV.items():
        env[name] = os.environ.get(name, value)
    return env


@contextlib.contextmanager
def environment(updates: dict[str, str]):
    """Set environment variables for the duration (spawned children inherit them), then restore."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_teachers(runs, ctx: LaunchContext) -> dict[str, str]:
    """Make sure every teacher these runs need is in the cache, training each once (in this process);
    return ``{teacher id: error}`` for those that failed (recorded in their folders)."""
    failed = {}
    for tid, group in teacher_groups(runs, ctx.registry, ctx.teacher_checkpoints).items():
        try:
            with ctx.reporter.teacher(group["run"], group["run"].teacher_recipe.steps) as update:
                try:
                    summary = train_teacher(group["run"], group["checkpoints"], ctx.registry, ctx.out,
                                            ctx.run_options, update)
                except TeacherFailed:
                    update.status = "failed"
                    raise
                update.status = "finished"
        except TeacherFailed as exc:
            failed[tid] = str(exc)
            ctx.reporter.log(f"  {exc}")
            continue
        ctx.reporter.log(describe_teacher(tid, summary))
    return failed


class LocalLauncher(Launcher):
    """Runs everything on this machine: in this process, or ``jobs`` worker processes."""

    name = "local"
    version = "2"
    Params = LocalParams
    description = "this machine: in-process, or --jobs N worker processes"
    jobs_option = "jobs"

    def launch(self, runs, ctx):
        params = ctx.params or LocalParams()
        units = job_units(runs, ctx)
        jobs = min(params.jobs or self.default_jobs(units, ctx), len(units))  # no idle workers holding cores
        threads = params.threads or self.default_threads(runs, ctx, jobs)
        if jobs > 1:
            return launch_pool(runs, ctx, jobs, threads, units)
        with torch_threads(threads):
            return self.launch_here(runs, ctx, units)

    @staticmethod
    def default_jobs(runs, ctx: LaunchContext) -> int:
        """Jobs when ``jobs`` is not given: the cores free when the suite started, at most one per run
        (``runs`` are the units a job executes: runs, or groups of seeds with ``--batch-seeds``);
        the choice is logged (each new one: a tuning round may have fewer runs)."""
        if ctx.free_cores is None:  # once per suite, not once per tuning round
            ctx.free_cores = free_cores()
        jobs, reason = ctx.free_cores.jobs(len(runs))
        if ctx.free_cores.cores > 1 and ctx.jobs_logged != jobs:
            ctx.reporter.log(f"jobs: {jobs} ({reason})")
            ctx.jobs_logged = jobs
        return jobs

    @staticmethod
    def default_threads(runs, ctx: LaunchContext, jobs: int) -> int:
        """Threads per job when ``threads`` is not given: 1 or the job's share of the cores,
        whichever a timed probe finds faster (:mod:`.threads`); the choice is logged."""
        most = threads_per_job(jobs)
        if most not in ctx.threads:  # once per suite, not once per tuning round
            choice = choose_threads(runs, ctx, most)
            if most > 1:
                ctx.reporter.log(f"threads: {choice.threads} per job ({choice.reason}; -L threads=T sets it)")
            ctx.threads[most] = choice.threads
        return ctx.threads[most]

    @staticmethod
    def launch_here(runs, ctx: LaunchContext, units: Optional[list[list]] = None) -> list[dict]:
        """Train the teachers, then every run (each of ``units``: see :func:`job_units`), one after another
        in this process."""
        summaries = []
        with graceful_interrupt():
            failed = train_teachers(runs, ctx)
            for group in units or job_units(runs, ctx):
                if stop_requested():  # Ctrl-C between two runs
                    raise interrupted()
                run = group[0]
                if ctx.registry.methods[run.method].cls.needs_teacher and run.teacher_id in failed:
                    done = [fail_without_running(r, ctx.out, failed[run.teacher_id]) for r in group]
                else:
                    with ctx.reporter.run(run) as update:
                        if len(group) > 1:
                            done = [o.summary for o in execute_group(group, ctx.registry, ctx.out, ctx.run_options,
                                                                     update, ctx.loggers, ctx.reporter.log)]
                        else:
                            done = [execute_run(run, ctx.registry, ctx.out, ctx.run_options, progress=update,
                                                loggers=ctx.loggers).summary]
                        update.status = done[0].get("status")
                for r, summary in zip(group, done):
                    summaries.append(summary)
                    ctx.reporter.log(describe(r, summary))
        return summaries


# ---- worker processes -------------------------------------------------------------------------

class _Bars:
    """The progress of the jobs running in workers (:meth:`Reporter.run`, :meth:`Reporter.teacher`),
    opened on their first report."""

    def __init__(self, reporter):
        self.reporter, self.open, self.jobs = reporter, {}, {}

    def name(self, key: str, kind: str, run) -> None:
        self.jobs[key] = (kind, run)

    def update(self, key: str, done, total) -> None:
        if key not in self.open:
            kind, run = self.jobs[key]
            stack = contextlib.ExitStack()
            teacher = kind == "teacher"
            opened = self.reporter.teacher(run, run.teacher_recipe.steps) if teacher else self.reporter.run(run)
            self.open[key] = (stack, stack.enter_context(opened))
        if done == "record":  # a curve point: (point, metric)
            self.open[key][1].record(*total)
        else:
            self.open[key][1](done, total)

    def close(self, key: str, status: Optional[str] = None) -> None:
        if key in self.open:
            stack, job = self.open.pop(key)
            job.status = status
            stack.close()

    def close_all(self) -> None:
        for key in list(self.open):
            self.close(key, "interrupted")


class _Pool:
    """The worker pool of one launch, and its jobs in flight. When a worker dies the pool breaks;
    :meth:`restart` starts a fresh one, resubmits the jobs that had not started, and returns
    those whose worker died under them (a job caught in two breaks counts as one of them)."""

    def __init__(self, jobs: int, initargs: tuple):
        self.jobs, self.initargs = jobs, initargs
        self.mp = multiprocessing.get_context("spawn")
        self.executor = self._start()
        self.pending: dict[Future, tuple] = {}  # future -> (key, kind, item, fn, args)
        self.started: set[str] = set()  # keys of the jobs a worker announced it started
        self.strikes: dict[str, int] = {}

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.jobs, mp_context=self.mp, initializer=init_worker, initargs=self.initargs)

    def submit(self, key: str, kind: str, item, fn, *args) -> None:
        self.pending[self.executor.submit(fn, *args)] = (key, kind, item, fn, args)

    def restart(self, broken: list[tuple]) -> list[tuple]:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._start()
        died = []
        for key, kind, item, fn, args in broken:
            self.strikes[key] = self.strikes.get(key, 0) + 1
            if key in self.started or self.strikes[key] > 1:
                died.append((key, kind, item, fn, args))
            else:
                self.submit(key, kind, item, fn, *args)
        return died

    def interrupt(self) -> None:
        """Ask every worker to save its state at the end of its step and stop, and wait for them."""
        for process in list((getattr(self.executor, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGINT)
        self.executor.shutdown(wait=True, cancel_futures=True)


def launch_pool(runs, ctx: LaunchContext, jobs: int, threads: int, units: Optional[list[list]] = None) -> list[dict]:
    """Run teachers and runs in ``jobs`` spawned worker processes with ``threads`` threads each;
    ``units`` (default: each run alone) are what a job executes: with ``--batch-seeds``, a group of
    seeds (:func:`kdbench.run.seed_groups.seed_groups`) is one job."""
    unit_of = {u[0].run_id: u for u in (units or job_units(runs, ctx))}
    groups = teacher_groups(runs, ctx.registry, ctx.teacher_checkpoints)
    ctx.reporter.log(f"{jobs} worker processes x {threads} thread(s) ({available_cores()} cores)")
    bars, summaries = _Bars(ctx.reporter), {}
    progress_queue = multiprocessing.get_context("spawn").Queue()
    initargs = (tuple(ctx.plugin_paths), ctx.run_options, threads, progress_queue, os.getpid(), tuple(ctx.loggers))
    with environment(worker_environment(threads)), interrupt_at_once():
        pool = _Pool(jobs, initargs)

        def start_run(run):
            unit = unit_of.get(run.run_id)
            if unit is None:  # a later seed of a group: its first run's job executes it
                return
            bars.name(run.run_id, "run", run)
            if len(unit) > 1:
                pool.submit(run.run_id, "group", unit, worker_group, unit, ctx.out)
            else:
                pool.submit(run.run_id, "run", run, worker_run, run, ctx.out)

        def fail_teacher(tid: str, message: str) -> None:
            ctx.reporter.log(f"  {message}")
            for run in groups[tid]["runs"]:
                summaries[run.run_id] = fail_without_running(run, ctx.out, message)
                ctx.reporter.log(describe(run, summaries[run.run_id]))
            for run in groups[tid]["followers"]:
                start_run(run)

        ready = lambda tid, g: teacher_is_ready(teacher_dir(ctx.out, tid), g["checkpoints"])  # noqa: E731
        waiting = {tid: g for tid, g in groups.items() if not ready(tid, g)}
        for tid, group in waiting.items():  # teachers first: they are on the critical path
            bars.name(f"teacher {tid}", "teacher", group["run"])
            pool.submit(f"teacher {tid}", "teacher", tid, worker_teacher, group["run"], group["checkpoints"], ctx.out)
        for run in runs:
            if run.teacher_id not in waiting:  # the others start when their teacher is ready (or failed)
                start_run(run)
        try:
            while pool.pending:
                done, _ = wait(list(pool.pending), timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, bars, pool.started)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done = wait(list(pool.pending)).done  # every job of a broken pool ends at once
                    _drain(progress_queue, bars, pool.started)
                    broken = [pool.pending.pop(f) for f in done if isinstance(f.exception(), BrokenProcessPool)]
                    for key, kind, item, _, _ in pool.restart(broken):
                        bars.close(key, "failed")
                        if kind == "teacher":
                            fail_teacher(item, f"teacher {item} failed: {WORKER_DIED}")
                        else:
                            for run in item if kind == "group" else [item]:
                                summaries[run.run_id] = fail_without_running(run, ctx.out, WORKER_DIED)
                                ctx.reporter.log(describe(run, summaries[run.run_id]))
                    done = [f for f in done if f in pool.pending]
                for future in done:
                    key, kind, item, _, _ = pool.pending.pop(future)
                    bars.close(key, _status(future))
                    if kind == "teacher":
                        error = _worker_error(future)
                        if error is None:
                            ctx.reporter.log(describe_teacher(item, future.result()))
                            for run in groups[item]["runs"] + groups[item]["followers"]:
                                start_run(run)
                        else:
                            fail_teacher(item, _teacher_message(item, error))
                    elif kind == "group":
                        summaries.update(_group_done(future, item, ctx))
                    else:
                        summaries[item.run_id] = _run_done(future, item, ctx)
        except BaseException:
            pool.interrupt()  # they save their state (as on Ctrl-C) instead of finishing
            raise
        finally:
            bars.close_all()
        pool.executor.shutdown(wait=True)
    return [summaries[r.run_id] for r in runs if r.run_id in summaries]


def _drain(progress_queue, bars: _Bars, started: set) -> None:
    while True:
        try:
            key, done, total = progress_queue.get_nowait()  # done "record": total is (curve point, metric)
        except queue_module.Empty:
            return
        if key == "started":
            started.add(done)
        else:
            bars.update(key, done, total)


def _status(future: Future) -> str:
    """A finished job's status for its progress events."""
    error = future.exception()
    if error is None:
        result = future.result()  # a group of seeds' job: its runs' summaries
        return (result[0] if isinstance(result, list) else result).get("status", "finished")
    return "interrupted" if isinstance(error, StopRequested) else "failed"


def _worker_error(future: Future):
    """A worker's exception, re-raised here if it stops the whole suite (an interrupt, bad input)."""
    error = future.exception()
    if isinstance(error, StopRequested):  # the worker was interrupted and saved its state
        raise interrupted(str(error))
    if isinstance(error, UserError):
        raise error
    return error


def _teacher_message(tid: str, error: BaseException) -> str:
    return str(error) if isinstance(error, TeacherFailed) else f"teacher {tid} failed: {type(error).__name__}: {error}"


def _group_done(future: Future, group: list, ctx: LaunchContext) -> dict[str, dict]:
    """The summaries of a group of seeds' job (each run failed if the job failed outside the runs)."""
    error = _worker_error(future)
    done = {}
    for k, run in enumerate(group):
        done[run.run_id] = (future.result()[k] if error is None else
                            fail_without_running(run, ctx.out, f"worker failed: {type(error).__name__}: {error}"))
        ctx.reporter.log(describe(run, done[run.run_id]))
    return done


def _run_done(future: Future, run, ctx: LaunchContext) -> dict:
    error = _worker_error(future)
    if error is None:
        summary = future.result()
    else:  # the job failed outside execute_run (which records its own failures)
        summary = fail_without_running(run, ctx.out, f"worker failed: {type(error).__name__}: {error}")
    ctx.reporter.log(describe(run, summary))
    return summary


@hookimpl
def kdbench_register_launchers():
    return [LocalLauncher]
