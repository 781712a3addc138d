"""Where every run of a results folder stands, from the folder itself and the Slurm queue.

A run is ``finished``/``diverged``/``failed`` once its folder holds a summary;
otherwise ``pending``/``running`` while a Slurm job recorded in
``OUT/slurm/jobs.json`` holds it (with its step from ``progress.json``),
``lost`` when that job ended without a result, ``interrupted`` when a saved
state waits to be resumed, else ``not started``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..store import read_json, run_dir, teacher_dir
from .slurm import LIVE_STATES, JobBook, job_states


@dataclass
class RunStatus:
    """One run's row in ``kdbench status``."""

    run_id: str
    task: str
    method: str
    seed: Optional[int]
    state: str
    detail: str = ""
    job: str = ""


def _metric(summary: dict) -> str:
    metric = summary.get("metric")
    value = summary.get("metrics", {}).get(metric) if metric else None
    return f"{metric} {value:.4f}" if isinstance(value, (int, float)) else ""


def run_status(out: Path, run_id: str, meta: dict, entry: Optional[dict], state: Optional[str]) -> RunStatus:
    """The state of one run from its folder, its Slurm job (``entry``) and that job's queue ``state``."""
    folder = run_dir(out, run_id)
    row = RunStatus(run_id, str(meta.get("task_label") or meta.get("task", "?")),
                    str(meta.get("method_label") or meta.get("method", "?")), meta.get("seed"), "not started",
                    job=entry["job"] if entry else "")
    summary = read_json(folder / "summary.json")
    if isinstance(summary, dict) and summary.get("status"):
        row.state = summary["status"]
        row.detail = _metric(summary) if row.state != "failed" else str(summary.get("error", ""))[:120]
        return row
    progress = read_json(folder / "progress.json")
    step = f"step {progress['step']}/{progress['total']}" if isinstance(progress, dict) else ""
    if entry is not None and state in LIVE_STATES:
        row.state = "running" if state == "RUNNING" else "pending"
        row.detail = step if row.state == "running" else state.lower()
        return row
    if entry is not None:
        row.state, row.detail = "lost", f"job ended {state or '(no longer listed)'} without a result"
        return row
    if (folder / "state.pt").exists():
        row.state, row.detail = "interrupted", "a saved state will resume on the next run"
    return row


def collect(out: Path, runs: Optional[list] = None) -> tuple[list[RunStatus], list[RunStatus]]:
    """Rows for the runs (a suite's ``runs``, else every run folder and Slurm record under
    ``out``) and for the teachers they use."""
    out = Path(out)
    book = JobBook(out)
    metas: dict[str, dict] = {}
    if runs is not None:
        metas = {r.run_id: r.config() for r in runs}
    else:
        for d in sorted((out / "runs").glob("*")):
            config = read_json(d / "config.json")
            metas[d.name] = config if isinstance(config, dict) else {}
        for run_id, entry in book.runs.items():
            metas.setdefault(run_id, {"task": entry.get("task"), "method": entry.get("method"),
                                      "seed": entry.get("seed"), "teacher_id": entry.get("teacher_id")})
    ids = [book.runs[r]["job"] for r in metas if r in book.runs]
    ids += [e["job"] for e in book.teachers.values()]
    states = job_states(ids) if ids else {}
    rows = []
    for run_id, meta in metas.items():
        entry = book.runs.get(run_id)
        rows.append(run_status(out, run_id, meta, entry, states.get(entry["job"]) if entry else None))
    teachers = []
    tids = sorted({m.get("teacher_id") for m in metas.values() if m.get("teacher_id")})
    for tid in tids:
        summary = read_json(teacher_dir(out, tid) / "summary.json")
        entry = book.teachers.get(tid)
        if entry is None and not teacher_dir(out, tid).is_dir():
            continue  # no run has asked for it yet (or none needs a teacher)
        row = RunStatus(tid, tid.rsplit("-", 1)[0], "teacher", None, "not trained", job=entry["job"] if entry else "")
        if isinstance(summary, dict) and summary.get("status") == "finished":
            row.state = "finished"
            row.detail = ", ".join(f"{k} {v:.4f}" for k, v in summary.get("metrics", {}).items()
                                   if isinstance(v, float) and k != "train_loss")
        elif entry is not None and states.get(entry["job"]) in LIVE_STATES:
            progress = read_json(teacher_dir(out, tid) / "progress.json")
            row.state = "running" if states[entry["job"]] == "RUNNING" else "pending"
            if isinstance(progress, dict):
                row.detail = f"step {progress['step']}/{progress['total']}"
        elif (teacher_dir(out, tid) / "state.pt").exists():
            row.state = "interrupted"
        teachers.append(row)
    return rows, teachers
