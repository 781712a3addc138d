"""The ``slurm`` launcher: runs as Slurm job arrays, submitted through submitit.

Each teacher a suite still needs is one job; the runs that need it form a job
array that depends on it (``afterok``; if the teacher fails, Slurm cancels
them). Runs without a teacher form an array of their own. Every job writes into
the results folder exactly as a local run does (it must be on a file system the
nodes share), plus ``progress.json`` while it trains; submitit's files (scripts,
logs, pickles) go to ``OUT/slurm/``, and ``OUT/slurm/jobs.json`` records which
job holds which run, so a later ``kdbench run`` or ``kdbench status`` picks up
where the jobs are instead of submitting them again.

Preemption and time limits: Slurm sends ``USR2`` ``signal_delay_s`` seconds
before a job's end (and on preemption). The job then finishes its current
training step, saves its resumable state (``state.pt``) and asks submitit to
requeue it (submitit's ``Checkpointable``); the requeued job resumes from that
state, bit for bit. A job killed without warning loses at most ``save_every_s``
seconds of training, and the next ``kdbench run`` submits it again.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Optional

import submitit
import torch
from pydantic import Field, field_validator

from kdbench.api import Params
from kdbench.errors import UserError
from kdbench.files import atomic_write_json
from kdbench.hookspecs import hookimpl
from kdbench.launchers import JobState, LaunchContext, Launcher
from kdbench.launchers.common import MALLOC_ENV, describe, describe_teacher, teacher_groups
from kdbench.launchers.slurm_queue import LIVE_STATES, JobBook, job_states, run_entry
from kdbench.plugins import load_plugins
from kdbench.run.options import resolve_device
from kdbench.run.runner import execute_run, train_teacher
from kdbench.run.stop import StopRequested, clear_stop, request_stop
from kdbench.run.store import read_json, read_progress, read_run, run_dir, teacher_dir
from kdbench.run.teachers import teacher_is_ready
from kdbench.suite.identity import Run


class SlurmParams(Params):
    """Options of the ``slurm`` launcher (a suite's ``launcher.options`` or ``--launcher-option``)."""

    partition: Optional[str] = Field(None, description="partition (default: the cluster's default)")
    time_min: int = Field(60, ge=1, description="time limit of each job, in minutes")
    gpus_per_run: int = Field(0, ge=0, description="GPUs per job")
    cpus_per_run: int = Field(1, ge=1, description="CPU cores per job (torch and OpenMP threads)")
    mem_gb: Optional[float] = Field(None, gt=0, description="memory per job, GB (default: the cluster's)")
    array_parallelism: int = Field(64, ge=1, description="jobs of one array running at once (--jobs)")
    sbatch: list[str] = Field([], description="extra sbatch options, e.g. ['--qos=high', '--account=lab']")
    setup: list[str] = Field([], description="shell lines each job runs first (module load ..., source ...)")
    max_requeues: int = Field(3, ge=0, description="times a timed-out or preempted job is requeued")
    signal_delay_s: int = Field(90, ge=1, description="seconds before the time limit that a job saves and requeues")
    poll_s: float = Field(10.0, gt=0, description="seconds between checks while `kdbench run` waits")

    @field_validator("sbatch")
    @classmethod
    def _long_options(cls, value):
        for item in value:
            if not item.startswith("--") or len(item) < 3:
                raise ValueError(f"sbatch options are long options like '--qos=high', got {item!r}")
        return value


def sbatch_options(items: list[str]) -> dict:
    """``['--qos=high', '--exclusive', '--account lab']`` as submitit's ``additional_parameters``."""
    options = {}
    for item in items:
        key, sep, value = item[2:].replace(" ", "=", 1).partition("=")
        options[key] = value if sep else True
    return options


# ---- the jobs -----------------------------------------------------------------------------------

class _Job(submitit.helpers.Checkpointable):
    """What every kdbench job does on a node: thread counts, the registry, preemption handling.

    Subclasses implement ``work(registry, options)`` (the run options with the device resolved on
    the node). As a submitit
    ``Checkpointable`` it is requeued on preemption or time-out; ``checkpoint``
    resubmits the same job, whose state lives in the results folder, not in the pickle. A job holds
    its run as its config (plain data): the node unpickles the job before it loads the plugins, and a
    plugin loaded from a file is not importable until then; ``work`` types it with the registry.
    """

    def __init__(self, out: Path, plugin_paths: tuple, options):
        self.out, self.plugin_paths, self.options = Path(out), tuple(plugin_paths), options

    def __call__(self):

        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        usr_signal = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        requeue = signal.getsignal(usr_signal)  # submitit's: checkpoint, requeue, exit
        clear_stop()
        # the training loop stops at the end of its step and saves; only then is the job requeued
        signal.signal(usr_signal, lambda signum, frame: request_stop())
        try:
            return self.work(load_plugins(self.plugin_paths), self.options.on(resolve_device(self.options.device_spec)))
        except StopRequested:
            if callable(requeue):
                requeue(usr_signal, None)
            raise

    def checkpoint(self, *args, **kwargs):
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def work(self, registry, options):
        raise NotImplementedError


def _progress_writer(path: Path, every_s: float = 5.0):
    """A progress callback that keeps ``path`` (``{"step", "total", "time"}``) current, atomically."""
    last = [0.0]

    def update(done: int, total: int) -> None:
        now = time.time()
        if now - last[0] >= every_s or done == total:
            last[0] = now
            atomic_write_json(path, {"step": done, "total": total, "time": now})

    return update


class TeacherJob(_Job):
    """Trains one teacher (with the checkpoints its runs read) into the teacher cache."""

    def __init__(self, run: Run, checkpoints: list[int], *args):
        super().__init__(*args)
        self.config, self.checkpoints = run.config(), sorted(checkpoints)  # plain data: see _Job

    def work(self, registry, options):
        run = Run.from_config(self.config, registry)
        progress = teacher_dir(self.out, run.teacher_id) / "progress.json"
        summary = train_teacher(run, self.checkpoints, registry, self.out, options, _progress_writer(progress))
        progress.unlink(missing_ok=True)
        return summary


class RunJob(_Job):
    """Executes one run (its teacher is already in the cache: the job depends on the teacher's)."""

    def __init__(self, run: Run, *args, loggers: tuple = ()):
        super().__init__(*args)
        self.config, self.loggers = run.config(), tuple(loggers)  # plain data: see _Job

    def work(self, registry, options):
        run = Run.from_config(self.config, registry)
        progress = run_dir(self.out, run.run_id) / "progress.json"
        progress.parent.mkdir(parents=True, exist_ok=True)
        summary = execute_run(run, registry, self.out, options, progress=_progress_writer(progress),
                              loggers=self.loggers).summary
        progress.unlink(missing_ok=True)
        return summary


# ---- the launcher ------------------------------------------------------------------------------

class SlurmLauncher(Launcher):
    """Submits teachers and runs as Slurm jobs (submitit), then waits for them unless detached."""

    name = "slurm"
    version = "1"
    Params = SlurmParams
    description = "Slurm job arrays via submitit; teacher jobs first, runs depend on them"
    jobs_option = "array_parallelism"
    runs_elsewhere = True
    detachable = True

    def launch(self, runs, ctx):
        params = ctx.params or SlurmParams()
        if shutil.which("sbatch") is None:
            raise UserError("launcher slurm: no `sbatch` on PATH: this machine is not a Slurm submit host")
        book = JobBook(ctx.out)
        with book.lock():
            book = JobBook(ctx.out)  # re-read under the lock
            submitted = submit(runs, ctx, params, book)
            book.save()
        held = len(runs) - submitted
        ctx.reporter.log(f"slurm: {submitted} run(s) submitted, {held} already queued or running; "
                         f"logs in {ctx.out / 'slurm'}")
        if ctx.detach:
            return []
        return wait_for(runs, ctx, params, book)

    def job_states(self, out, run_ids, teacher_ids):
        """Runs and teachers of ``out`` that a Slurm job recorded in ``OUT/slurm/jobs.json`` holds:
        pending or running (with its step) while the job is in the queue, lost once it ended."""
        book = JobBook(out)
        entries = {i: (book.runs[i], run_dir(out, i)) for i in run_ids if i in book.runs}
        entries.update({t: (book.teachers[t], teacher_dir(out, t)) for t in teacher_ids if t in book.teachers})
        states = job_states([entry["job"] for entry, _ in entries.values()])
        found = {}
        for key, (entry, folder) in entries.items():
            state = states.get(entry["job"])
            labels = {k: entry[k] for k in ("task", "method", "seed", "teacher_id") if k in entry}
            if state not in LIVE_STATES:
                found[key] = JobState("lost", f"job ended {state or '(no longer listed)'} without a result",
                                      entry["job"], labels)
            elif state == "RUNNING":
                progress = read_progress(folder)
                step = f"step {progress['step']}/{progress['total']}" if progress else ""
                found[key] = JobState("running", step, entry["job"], labels)
            else:
                found[key] = JobState("pending", state.lower(), entry["job"], labels)
        return found


def _executor(folder: Path, params: SlurmParams, name: str, dependency: Optional[str]):
    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=params.max_requeues)
    threads = str(params.cpus_per_run)
    exports = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **MALLOC_ENV}
    setup = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()] + list(params.setup)
    options = dict(job_name=name, time=params.time_min, cpus_per_task=params.cpus_per_run,
                   array_parallelism=params.array_parallelism, signal_delay_s=params.signal_delay_s, setup=setup,
                   additional_parameters={**sbatch_options(params.sbatch),
                                          **({"kill-on-invalid-dep": "yes"} if dependency else {})})
    if params.partition:
        options["partition"] = params.partition
    if params.gpus_per_run:
        options["gpus_per_node"] = params.gpus_per_run
    if params.mem_gb:
        options["mem"] = params.mem_gb
    if dependency:
        options["dependency"] = dependency
    executor.update_parameters(**options)
    return executor


def _submit_array(folder: Path, params: SlurmParams, name: str, jobs: list, dependency: Optional[str] = None):
    executor = _executor(folder, params, name, dependency)
    try:
        with executor.batch():
            handles = [executor.submit(job) for job in jobs]
    except Exception as exc:  # sbatch refused: bad partition, bad option...
        raise UserError(f"launcher slurm: sbatch refused the jobs: {exc}".strip()) from exc
    return [h.job_id for h in handles]


def submit(runs: list[Run], ctx: LaunchContext, params: SlurmParams, book: JobBook) -> int:
    """Submit the teachers and runs that no live job holds; record them in ``book``. Returns runs submitted."""
    folder = ctx.out / "slurm"
    common = (ctx.out, tuple(ctx.plugin_paths), ctx.run_options)
    known = [e["job"] for e in [*book.runs.values(), *book.teachers.values()]]
    states = job_states(known)
    live = lambda entry: entry is not None and states.get(entry["job"]) in LIVE_STATES  # noqa: E731

    groups = teacher_groups(runs, ctx.registry, ctx.teacher_checkpoints)
    teacher_job: dict[str, Optional[str]] = {}
    to_train = []
    for tid, group in groups.items():
        if teacher_is_ready(teacher_dir(ctx.out, tid), group["checkpoints"]):
            teacher_job[tid] = None
        elif live(book.teachers.get(tid)):
            teacher_job[tid] = book.teachers[tid]["job"]
        else:
            to_train.append(tid)
    if to_train:
        jobs = [TeacherJob(groups[t]["run"], sorted(groups[t]["checkpoints"]), *common) for t in to_train]
        for tid, job_id in zip(to_train, _submit_array(folder, params, "kdbench-teachers", jobs)):
            teacher_job[tid] = job_id
            book.teachers[tid] = {"job": job_id, "submitted": time.time()}
            ctx.reporter.log(f"slurm: teacher {tid} -> job {job_id}")

    # (teacher job, how its runs wait) -> runs: distilling runs need the teacher to succeed
    # (afterok); followers (labels...) only wait for it, to measure fidelity against it (afterany)
    batches: dict[tuple[Optional[str], str], list[Run]] = {}
    for run in runs:
        if live(book.runs.get(run.run_id)):
            continue
        needs = ctx.registry.methods[run.method].cls.needs_teacher
        batches.setdefault((teacher_job.get(run.teacher_id), "afterok" if needs else "afterany"), []).append(run)
        stale = run_dir(ctx.out, run.run_id) / "summary.json"  # a failed attempt's: the waiter must not read it
        stale.unlink(missing_ok=True)
    count = 0
    for (dependency, how), batch in batches.items():
        jobs = [RunJob(run, *common, loggers=ctx.loggers) for run in batch]
        ids = _submit_array(folder, params, f"kdbench-{batch[0].suite}", jobs,
                            f"{how}:{dependency}" if dependency else None)
        for run, job_id in zip(batch, ids):
            book.runs[run.run_id] = run_entry(run, job_id, dependency)
        count += len(batch)
    return count


def _settled(run: Run, out: Path, entry: Optional[dict], state: Optional[str], book: JobBook) -> Optional[dict]:
    """The run's summary once it is over (a result, or a job that ended without one), else None."""
    summary = read_run(run_dir(out, run.run_id)).summary
    if summary is not None:
        return summary
    if entry is None:
        return {"run_id": run.run_id, "status": "failed", "error": "no slurm job holds this run"}
    if state in LIVE_STATES:
        return None
    if state is None and time.time() - entry["submitted"] < 30:
        return None  # just submitted: the queue may not list it yet
    ended = state or "gone from the queue"
    teacher = entry.get("teacher_job")
    hint = f" (it depended on teacher job {teacher})" if state == "CANCELLED" and teacher else ""
    return {"run_id": run.run_id, "status": "failed",
            "error": f"slurm job {entry['job']} ended {ended} without a result{hint}; log: {book.log_path(entry)}"}


def wait_for(runs: list[Run], ctx: LaunchContext, params: SlurmParams, book: JobBook) -> list[dict]:
    """Poll until every run has a result or its job ended; show progress; return the summaries."""
    summaries: dict[str, dict] = {}
    bars: dict[str, contextlib.ExitStack] = {}
    updates = {}
    with ctx.reporter.bar("slurm runs done", len(runs)) as overall:
        try:
            while len(summaries) < len(runs):
                book = JobBook(ctx.out)
                states = job_states([book.runs[r.run_id]["job"] for r in runs if r.run_id in book.runs])
                for run in runs:
                    if run.run_id in summaries:
                        continue
                    entry = book.runs.get(run.run_id)
                    summary = _settled(run, ctx.out, entry, states.get(entry["job"]) if entry else None, book)
                    if summary is not None:
                        summaries[run.run_id] = summary
                        if run.run_id in bars:
                            bars.pop(run.run_id).close()
                        ctx.reporter.log(describe(run, summary))
                        continue
                    progress = read_progress(run_dir(ctx.out, run.run_id))
                    if progress:
                        if run.run_id not in bars:
                            bars[run.run_id] = contextlib.ExitStack()
                            updates[run.run_id] = bars[run.run_id].enter_context(ctx.reporter.bar(
                                f"{run.task_label} {run.method_label} seed {run.seed} "
                                f"(job {entry['job']})", progress["total"]))
                        updates[run.run_id](progress["step"], progress["total"])
                overall(len(summaries), len(runs))
                if len(summaries) < len(runs):
                    time.sleep(params.poll_s)
        finally:
            for stack in bars.values():
                stack.close()
    for tid in {r.teacher_id for r in runs}:
        summary = read_json(teacher_dir(ctx.out, tid) / "summary.json")
        if isinstance(summary, dict) and summary.get("status") == "finished" and tid in book.teachers:
            ctx.reporter.log(describe_teacher(tid, summary))
    return [summaries[r.run_id] for r in runs]


@hookimpl
def kdbench_register_launchers():
    return [SlurmLauncher]
