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
import subprocess
import time
from pathlib import Path
from typing import Optional

import submitit
from filelock import FileLock
from pydantic import Field, field_validator
from submitit.core.utils import JobPaths
from submitit.slurm.slurm import SlurmInfoWatcher

from ..api import Params
from ..errors import UserError
from ..hookspecs import hookimpl
from ..store import atomic_write_json, read_json, run_dir, teacher_dir
from ..suite import Run
from . import LaunchContext, Launcher
from .common import MALLOC_ENV, describe, describe_teacher, teacher_groups

LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT", "STOPPED"}


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

    Subclasses implement ``work(registry, device)``. As a submitit
    ``Checkpointable`` it is requeued on preemption or time-out; ``checkpoint``
    resubmits the same job, whose state lives in the results folder, not in the pickle.
    """

    def __init__(self, out: Path, plugin_paths: tuple, device: str, precision: str, compile: bool):
        self.out, self.plugin_paths, self.device = Path(out), tuple(plugin_paths), device
        self.precision, self.compile = precision, compile

    def __call__(self):
        import torch

        from ..device import resolve_device
        from ..plugins import load_plugins
        from ..stop import StopRequested, clear_stop, request_stop

        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        usr_signal = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        requeue = signal.getsignal(usr_signal)  # submitit's: checkpoint, requeue, exit
        clear_stop()
        # the training loop stops at the end of its step and saves; only then is the job requeued
        signal.signal(usr_signal, lambda signum, frame: request_stop())
        try:
            return self.work(load_plugins(self.plugin_paths), resolve_device(self.device))
        except StopRequested:
            if callable(requeue):
                requeue(usr_signal, None)
            raise

    def checkpoint(self, *args, **kwargs):
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def work(self, registry, device):
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
        self.run, self.checkpoints = run, sorted(checkpoints)

    def work(self, registry, device):
        from ..runner import train_teacher

        progress = teacher_dir(self.out, self.run.teacher_id) / "progress.json"
        summary = train_teacher(self.run, self.checkpoints, registry, self.out, device, self.precision,
                                self.compile, _progress_writer(progress))
        progress.unlink(missing_ok=True)
        return summary


class RunJob(_Job):
    """Executes one run (its teacher is already in the cache: the job depends on the teacher's)."""

    def __init__(self, run: Run, *args):
        super().__init__(*args)
        self.run = run

    def work(self, registry, device):
        from ..runner import execute_run

        progress = run_dir(self.out, self.run.run_id) / "progress.json"
        progress.parent.mkdir(parents=True, exist_ok=True)
        summary = execute_run(self.run, registry, self.out, device, progress=_progress_writer(progress),
                              precision=self.precision, compile=self.compile).summary
        progress.unlink(missing_ok=True)
        return summary


# ---- what the queue says --------------------------------------------------------------------

def _run_command(command: list[str]) -> Optional[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _parse(output: str) -> dict[str, str]:
    """``JobID|State...`` lines (a header first) as {job id: state}; array ranges expanded."""
    info = SlurmInfoWatcher().read_info(output)
    return {job_id: stats.get("State", "UNKNOWN").split()[0] for job_id, stats in info.items()}


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm state of each job id (``123`` or ``123_4``): squeue for jobs it still lists,
    sacct for the rest (a cluster without accounting answers nothing: those are left out)."""
    bases = sorted({j.split("_")[0] for j in job_ids})
    if not bases:
        return {}
    states: dict[str, str] = {}
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    command = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"] + (["-u", user] if user else [])
    listed = _run_command(command)
    if listed is not None:
        states.update(_parse("JobID|State\n" + listed))
    missing = [b for b in bases if not any(j == b or j.startswith(b + "_") for j in states)]
    if missing:
        command = ["sacct", "-o", "JobID,State", "--parsable2", "-X"] + [f"-j{b}" for b in missing]
        accounted = _run_command(command)
        if accounted:
            states.update(_parse(accounted))
    return {j: states[j] for j in job_ids if j in states}


# ---- the book of submitted jobs ---------------------------------------------------------------

class JobBook:
    """``OUT/slurm/jobs.json``: which Slurm job holds which run and teacher."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / "slurm" / "jobs.json"
        data = read_json(self.path) or {}
        self.runs: dict[str, dict] = data.get("runs", {})
        self.teachers: dict[str, dict] = data.get("teachers", {})

    def lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock")

    def save(self) -> None:
        atomic_write_json(self.path, {"runs": self.runs, "teachers": self.teachers})

    def log_path(self, entry: dict) -> Path:
        return JobPaths(self.out / "slurm" / "%j", job_id=entry["job"], task_id=0).stderr


def _run_entry(run: Run, job_id: str, teacher_job: Optional[str]) -> dict:
    return {"job": job_id, "submitted": time.time(), "teacher_job": teacher_job, "task": run.task_label,
            "method": run.method_label, "seed": run.seed, "teacher_id": run.teacher_id}


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
    from ..teachers import teacher_is_ready

    folder = ctx.out / "slurm"
    common = (ctx.out, tuple(ctx.plugin_paths), ctx.device_spec, ctx.precision, ctx.compile)
    known = [e["job"] for e in [*book.runs.values(), *book.teachers.values()]]
    states = job_states(known)
    live = lambda entry: entry is not None and states.get(entry["job"]) in LIVE_STATES  # noqa: E731

    groups = teacher_groups(runs, ctx.registry)
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

    batches: dict[Optional[str], list[Run]] = {}
    for run in runs:
        if live(book.runs.get(run.run_id)):
            continue
        needs = ctx.registry.methods[run.method].cls.needs_teacher
        batches.setdefault(teacher_job.get(run.teacher_id) if needs else None, []).append(run)
        stale = run_dir(ctx.out, run.run_id) / "summary.json"  # a failed attempt's: the waiter must not read it
        stale.unlink(missing_ok=True)
    count = 0
    for dependency, batch in batches.items():
        jobs = [RunJob(run, *common) for run in batch]
        ids = _submit_array(folder, params, f"kdbench-{batch[0].suite}", jobs,
                            f"afterok:{dependency}" if dependency else None)
        for run, job_id in zip(batch, ids):
            book.runs[run.run_id] = _run_entry(run, job_id, dependency)
        count += len(batch)
    return count


def _settled(run: Run, out: Path, entry: Optional[dict], state: Optional[str], book: JobBook) -> Optional[dict]:
    """The run's summary once it is over (a result, or a job that ended without one), else None."""
    summary = read_json(run_dir(out, run.run_id) / "summary.json")
    if isinstance(summary, dict) and summary.get("status"):
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
                    progress = read_json(run_dir(ctx.out, run.run_id) / "progress.json")
                    if isinstance(progress, dict):
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
