"""The ``local`` launcher: on this machine, in-process or in N worker processes.

In-process (``jobs: 1``, the default) it trains each needed teacher once, then
every run, one after another. With ``--jobs N`` it runs N jobs at once in a
pool of ``spawn``-ed worker processes (``fork`` after torch has started its
thread pool can hang the child). The CPU cores are divided between the workers:
each gets ``cores // N`` torch and OpenMP threads, since oversubscribed threads
ran 15-45x slower here. Teachers are jobs of the same pool, each trained once;
a run starts when its teacher is in the cache. Workers rebuild the plugin
registry from built-ins, entry points and the plugin files the suite named.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue as queue_module
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Optional

import torch
from pydantic import Field

from ..api import Params
from ..errors import UserError
from ..hookspecs import hookimpl
from ..runner import execute_run, train_teacher
from ..stop import StopRequested, graceful_interrupt, request_stop, stop_requested
from ..store import teacher_dir
from ..teachers import teacher_is_ready
from . import LaunchContext, Launcher
from .common import MALLOC_ENV, describe, describe_teacher, teacher_groups


class LocalParams(Params):
    """Options of the ``local`` launcher."""

    jobs: int = Field(1, ge=1, description="runs at once; above 1 they run in that many worker processes")
    threads: Optional[int] = Field(None, ge=1, description="torch/OpenMP threads per job (default: cores // jobs)")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, which a container or Slurm may restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int, threads: Optional[int] = None) -> int:
    """``threads`` if given, else the cores divided evenly between ``jobs`` (at least 1)."""
    return threads or max(1, available_cores() // jobs)


def worker_environment(threads: int) -> dict[str, str]:
    """Environment a worker must start with: thread counts and malloc tuning are read at start-up."""
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
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


def tune_malloc() -> None:
    """The mallopt equivalent of MALLOC_ENV for a process that has already started (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))
    libc.mallopt(m_mmap_threshold, int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))


def train_teachers(runs, ctx: LaunchContext) -> None:
    """Make sure every teacher these runs need is in the cache, training each once (in this process)."""
    for tid, group in teacher_groups(runs, ctx.registry).items():
        with ctx.reporter.bar(f"teacher {tid}", group["run"].teacher_recipe.steps) as update:
            summary = train_teacher(group["run"], group["checkpoints"], ctx.registry, ctx.out, ctx.device,
                                    ctx.precision, ctx.compile, update)
        ctx.reporter.log(describe_teacher(tid, summary))


class LocalLauncher(Launcher):
    """Runs everything on this machine: in this process, or ``jobs`` worker processes."""

    name = "local"
    version = "2"
    Params = LocalParams
    description = "this machine: in-process, or --jobs N worker processes"
    jobs_option = "jobs"

    def launch(self, runs, ctx):
        params = ctx.params or LocalParams()
        jobs = min(params.jobs, len(runs))  # no idle workers holding a share of the cores
        if jobs > 1:
            return launch_pool(runs, ctx, jobs, threads_per_job(jobs, params.threads))
        if params.threads:
            torch.set_num_threads(params.threads)
        summaries = []
        with graceful_interrupt():
            train_teachers(runs, ctx)
            for run in runs:
                if stop_requested():  # Ctrl-C between two runs
                    raise KeyboardInterrupt
                with ctx.reporter.bar(f"{run.task_label} {run.method_label} seed {run.seed}") as update:
                    summary = execute_run(run, ctx.registry, ctx.out, ctx.device, progress=update,
                                          precision=ctx.precision, compile=ctx.compile, loggers=ctx.loggers).summary
                summaries.append(summary)
                ctx.reporter.log(describe(run, summary))
        return summaries


# ---- worker processes -------------------------------------------------------------------------

_worker: dict = {}


def _init_worker(plugin_paths, device: str, threads: int, progress_queue, precision: str, compile: bool,
                 loggers: tuple) -> None:
    from ..plugins import load_plugins

    torch.set_num_threads(threads)
    tune_malloc()
    # Ctrl-C (the terminal's, then the parent's): finish the step, save, stop; never mid-step
    signal.signal(signal.SIGINT, lambda signum, frame: request_stop())
    # progress is best-effort: exiting must not wait to flush it (after Ctrl-C nobody reads it)
    progress_queue.cancel_join_thread()
    _worker.update(registry=load_plugins(tuple(plugin_paths)), device=torch.device(device), queue=progress_queue,
                   precision=precision, compile=compile, loggers=loggers)


def _reporter_for(key: str):
    q = _worker["queue"]
    return lambda done, total: q.put((key, done, total))


def _worker_teacher(run, checkpoints, out) -> dict:
    w = _worker
    if stop_requested():
        raise StopRequested("interrupted before it started")
    return train_teacher(run, checkpoints, w["registry"], out, w["device"], w["precision"], w["compile"],
                         _reporter_for(f"teacher {run.teacher_id}"))


def _worker_run(run, out) -> dict:
    w = _worker
    if stop_requested():
        raise StopRequested("interrupted before it started")
    return execute_run(run, w["registry"], out, w["device"], progress=_reporter_for(run.run_id),
                       precision=w["precision"], compile=w["compile"], loggers=w["loggers"]).summary


class _Bars:
    """Progress bars of the jobs running in workers, opened on their first report."""

    def __init__(self, reporter):
        self.reporter, self.open, self.names = reporter, {}, {}

    def name(self, key: str, description: str) -> None:
        self.names[key] = description

    def update(self, key: str, done: int, total: int) -> None:
        if key not in self.open:
            stack = contextlib.ExitStack()
            self.open[key] = (stack, stack.enter_context(self.reporter.bar(self.names.get(key, key), total)))
        self.open[key][1](done, total)

    def close(self, key: str) -> None:
        if key in self.open:
            self.open.pop(key)[0].close()

    def close_all(self) -> None:
        for key in list(self.open):
            self.close(key)


def launch_pool(runs, ctx: LaunchContext, jobs: int, threads: int) -> list[dict]:
    """Run teachers and runs in ``jobs`` spawned worker processes with ``threads`` threads each."""
    mp = multiprocessing.get_context("spawn")
    progress_queue = mp.Queue()
    groups = teacher_groups(runs, ctx.registry)
    ctx.reporter.log(f"{jobs} worker processes x {threads} thread(s) "
                     f"({available_cores()} cores)")
    bars = _Bars(ctx.reporter)
    summaries: dict[str, dict] = {}
    pending: dict[Future, tuple] = {}
    initargs = (tuple(ctx.plugin_paths), str(ctx.device), threads, progress_queue, ctx.precision, ctx.compile,
                tuple(ctx.loggers))
    with environment(worker_environment(threads)), \
            ProcessPoolExecutor(jobs, mp_context=mp, initializer=_init_worker, initargs=initargs) as pool:

        def start_run(run):
            bars.name(run.run_id, f"{run.task_label} {run.method_label} seed {run.seed}")
            pending[pool.submit(_worker_run, run, ctx.out)] = ("run", run)

        ready = lambda tid, g: teacher_is_ready(teacher_dir(ctx.out, tid), g["checkpoints"])  # noqa: E731
        waiting = {tid: g for tid, g in groups.items() if not ready(tid, g)}
        for tid, group in waiting.items():  # teachers first: they are on the critical path
            bars.name(f"teacher {tid}", f"teacher {tid}")
            pending[pool.submit(_worker_teacher, group["run"], group["checkpoints"], ctx.out)] = ("teacher", tid)
        for run in runs:
            if not (ctx.registry.methods[run.method].cls.needs_teacher and run.teacher_id in waiting):
                start_run(run)
        try:
            while pending:
                done, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, bars)
                for future in done:
                    kind, item = pending.pop(future)
                    if kind == "teacher":
                        bars.close(f"teacher {item}")
                        _teacher_done(future, item, waiting[item], ctx, start_run, summaries)
                    else:
                        bars.close(item.run_id)
                        summaries[item.run_id] = _run_done(future, item, ctx)
        except BaseException:
            _interrupt_workers(pool)  # they save their state (as on Ctrl-C) instead of finishing
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bars.close_all()
    return [summaries[r.run_id] for r in runs if r.run_id in summaries]


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGINT)


def _drain(progress_queue, bars: _Bars) -> None:
    while True:
        try:
            key, done, total = progress_queue.get_nowait()
        except queue_module.Empty:
            return
        bars.update(key, done, total)


def _worker_error(future: Future):
    """A worker's exception, re-raised here if it stops the whole suite (an interrupt, bad input)."""
    error = future.exception()
    if isinstance(error, StopRequested):  # the worker was interrupted and saved its state
        raise KeyboardInterrupt(str(error))
    if isinstance(error, UserError):
        raise error
    return error


def _teacher_done(future: Future, tid: str, group: dict, ctx: LaunchContext, start_run, summaries: dict) -> None:
    error = _worker_error(future)
    if error is None:
        ctx.reporter.log(describe_teacher(tid, future.result()))
        for run in group["runs"]:
            start_run(run)
        return
    message = f"teacher {tid} failed: {type(error).__name__}: {error}"
    ctx.reporter.log(f"  {message}")
    for run in group["runs"]:
        summaries[run.run_id] = {"run_id": run.run_id, "status": "failed", "error": message}
        ctx.reporter.log(describe(run, summaries[run.run_id]))


def _run_done(future: Future, run, ctx: LaunchContext) -> dict:
    error = _worker_error(future)
    if error is None:
        summary = future.result()
    else:  # the worker itself died (killed, out of memory): the run resumes from its state next time
        summary = {"run_id": run.run_id, "status": "failed", "error": f"worker failed: {type(error).__name__}: {error}"}
    ctx.reporter.log(describe(run, summary))
    return summary


@hookimpl
def kdbench_register_launchers():
    return [LocalLauncher]
