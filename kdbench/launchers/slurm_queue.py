"""What the Slurm queue says about kdbench's jobs, and the book of the jobs submitted.

``OUT/slurm/jobs.json`` records which Slurm job holds which run and teacher of a
results folder, so a later ``kdbench run`` or ``kdbench status`` picks up where
the jobs are instead of submitting them again. Job states come from ``squeue``
(and ``sacct`` for jobs it no longer lists, where the cluster has accounting).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Optional

from filelock import FileLock
from submitit.core.utils import JobPaths
from submitit.slurm.slurm import SlurmInfoWatcher

from kdbench.files import atomic_write_json
from kdbench.run.store import read_json
from kdbench.suite.identity import Run

LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT", "STOPPED"}


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


def run_entry(run: Run, job_id: str, teacher_job: Optional[str]) -> dict:
    """The book's record of a run submitted as ``job_id`` (after ``teacher_job``, if any)."""
    return {"job": job_id, "submitted": time.time(), "teacher_job": teacher_job, "task": run.task_label,
            "method": run.method_label, "seed": run.seed, "teacher_id": run.teacher_id}
