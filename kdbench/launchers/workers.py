"""The worker side of ``kdbench run --jobs N``: what each spawned worker process runs.

A worker trains teachers and runs sent by the local launcher's pool. Ctrl-C and
SIGTERM ask the job in progress to stop at the end of its step with its state
saved. A worker never outlives the process that started it: on Linux the kernel
sends it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and on any
system a watchdog thread notices the new parent; either way the job in progress
saves its state at its step's end and the worker exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time

import torch

from kdbench.launchers.common import MALLOC_ENV
from kdbench.plugins import load_plugins
from kdbench.run.runner import execute_run, train_teacher
from kdbench.run.seed_groups import execute_group
from kdbench.run.stop import STOP_SIGNALS, StopRequested, request_stop, stop_requested

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCH_EVERY_S = 0.5  # how often the watchdog looks for its parent
SAVE_GRACE_S = 60.0  # how long an orphaned worker waits for its job to save before it exits

_worker: dict = {"busy": False}


def tune_malloc() -> None:
    """The mallopt equivalent of MALLOC_ENV for a process that has already started (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))
    libc.mallopt(m_mmap_threshold, int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))


def init_worker(plugin_paths, options, threads: int, progress_queue, parent_pid: int, loggers: tuple = ()) -> None:
    """Set a new worker up: threads, malloc, signal handlers, the parent watch, the plugin registry
    and the loggers that follow its runs."""
    torch.set_num_threads(threads)
    tune_malloc()
    # Ctrl-C (the terminal's, then the parent's) and SIGTERM: finish the step, save, stop; never mid-step
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: request_stop(signum))
    die_with_parent(parent_pid)
    # progress is best-effort: exiting must not wait to flush it (after Ctrl-C nobody reads it)
    progress_queue.cancel_join_thread()
    _worker.update(registry=load_plugins(tuple(plugin_paths)), options=options, queue=progress_queue, loggers=loggers)


def die_with_parent(parent_pid: int) -> None:
    """Make this process stop when ``parent_pid`` is no longer its parent (the parent died, even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the watchdog alone
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="kdbench-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_EVERY_S)
    request_stop(signal.SIGTERM)  # the job in progress saves its state at the end of its step
    deadline = time.monotonic() + SAVE_GRACE_S
    while _worker["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(128 + signal.SIGTERM)  # nobody is left to send jobs: a worker blocked waiting for one must go


@contextlib.contextmanager
def _job(key: str):
    """A job in this worker: refused once a stop was requested; announced to the parent; marked busy."""
    if stop_requested():
        raise StopRequested("interrupted before it started")
    _worker["busy"] = True
    try:
        _worker["queue"].put(("started", key, 0))
        yield
    finally:
        _worker["busy"] = False


class _QueueProgress:
    """A job's progress sent to the parent's queue: ``(key, done, total)`` after steps,
    ``(key, "record", (curve point, metric))`` after evaluations."""

    def __init__(self, key: str):
        self.key, self.queue = key, _worker["queue"]

    def __call__(self, done: int, total: int) -> None:
        self.queue.put((self.key, done, total))

    def record(self, point: dict, metric: str) -> None:
        self.queue.put((self.key, "record", (point, metric)))


def _reporter_for(key: str) -> _QueueProgress:
    return _QueueProgress(key)


def worker_teacher(run, checkpoints, out) -> dict:
    """Train ``run``'s teacher into the cache (a job of the pool)."""
    w, key = _worker, f"teacher {run.teacher_id}"
    with _job(key):
        return train_teacher(run, checkpoints, w["registry"], out, w["options"], _reporter_for(key))


def worker_group(group, out) -> list[dict]:
    """Execute a group of seeds (``--batch-seeds``: one stacked model where it can be; a job of the
    pool); the summaries of its runs, in order."""
    w, key = _worker, group[0].run_id
    with _job(key):
        return [o.summary for o in execute_group(group, w["registry"], out, w["options"], progress=_reporter_for(key),
                                                 loggers=w["loggers"])]


def worker_run(run, out) -> dict:
    """Execute ``run`` (a job of the pool); its summary."""
    w = _worker
    with _job(run.run_id):
        return execute_run(run, w["registry"], out, w["options"], progress=_reporter_for(run.run_id),
                           loggers=w["loggers"]).summary
