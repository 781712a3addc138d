"""Where every run of a results folder stands, from the folder itself and the Slurm queue.

The folder is read through :mod:`kdbench.results`: a run is ``finished``/``diverged``/
``failed`` once its folder holds a summary, and ``unreadable`` (with the reason) when
its files fail :func:`kdbench.store.read_run`'s check; otherwise ``pending``/``running``
while a Slurm job recorded in ``OUT/slurm/jobs.json`` holds it (with its step from
``progress.json``), ``lost`` when that job ended without a result, ``interrupted``
when a saved state waits to be resumed, else ``not started``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..results import load_results
from ..store import read_progress, run_dir, teacher_dir
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


def _metric(run: dict) -> str:
    value = run["metrics"].get(run["metric"])
    return f"{run['metric']} {value:.4f}" if isinstance(value, (int, float)) else ""


def run_status(out: Path, run_id: str, meta: dict, entry: Optional[dict], state: Optional[str],
               result: Optional[dict] = None, problem: Optional[str] = None) -> RunStatus:
    """The state of one run from its row of the results (``result``, or the ``problem`` that
    made its folder unreadable), its Slurm job (``entry``) and that job's queue ``state``."""
    folder = run_dir(out, run_id)
    row = RunStatus(run_id, str(meta.get("task_label") or meta.get("task") or "?"),
                    str(meta.get("method_label") or meta.get("method") or "?"), meta.get("seed"), "not started",
                    job=entry["job"] if entry else "")
    if problem is not None:
        row.state, row.detail = "unreadable", problem
        return row
    if result is not None and result["status"] != "incomplete":
        row.state = result["status"]
        error = result["error"] if isinstance(result["error"], str) else ""
        row.detail = _metric(result) if row.state != "failed" else error[:120]
        return row
    progress = read_progress(folder)
    step = f"step {progress['step']}/{progress['total']}" if progress else ""
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
    results = load_results(out, all_runs=True) if (out / "runs").is_dir() else None
    found = {r["run_id"]: r for r in results.runs().to_dict("records")} if results else {}
    unreadable = {u["run_id"]: u for u in results.unreadable().to_dict("records")} if results else {}
    teacher_rows = {t["teacher_id"]: t for t in results.teachers().to_dict("records")} if results else {}
    metas: dict[str, dict] = {}
    if runs is not None:
        metas = {r.run_id: r.config() for r in runs}
    else:
        for run_id in sorted([*found, *unreadable]):
            r = found.get(run_id) or unreadable[run_id]
            metas[run_id] = {"task": r["task"], "method": r.get("method_label", r["method"]), "seed": r["seed"],
                             "teacher_id": r.get("teacher_id")}
        for run_id, entry in book.runs.items():
            metas.setdefault(run_id, {"task": entry.get("task"), "method": entry.get("method"),
                                      "seed": entry.get("seed"), "teacher_id": entry.get("teacher_id")})
    ids = [book.runs[r]["job"] for r in metas if r in book.runs]
    ids += [e["job"] for e in book.teachers.values()]
    states = job_states(ids) if ids else {}
    rows = []
    for run_id, meta in metas.items():
        entry = book.runs.get(run_id)
        rows.append(run_status(out, run_id, meta, entry, states.get(entry["job"]) if entry else None,
                               found.get(run_id), unreadable.get(run_id, {}).get("reason")))
    teachers = []
    tids = sorted({m.get("teacher_id") for m in metas.values() if isinstance(m.get("teacher_id"), str)})
    for tid in tids:
        summary = teacher_rows[tid]["summary"] if tid in teacher_rows else None
        entry = book.teachers.get(tid)
        if entry is None and not teacher_dir(out, tid).is_dir():
            continue  # no run has asked for it yet (or none needs a teacher)
        row = RunStatus(tid, tid.rsplit("-", 1)[0], "teacher", None, "not trained", job=entry["job"] if entry else "")
        if isinstance(summary, dict) and summary.get("status") == "finished":
            row.state = "finished"
            row.detail = ", ".join(f"{k} {v:.4f}" for k, v in summary.get("metrics", {}).items()
                                   if isinstance(v, float) and k != "train_loss")
        elif entry is not None and states.get(entry["job"]) in LIVE_STATES:
            progress = read_progress(teacher_dir(out, tid))
            row.state = "running" if states[entry["job"]] == "RUNNING" else "pending"
            if progress:
                row.detail = f"step {progress['step']}/{progress['total']}"
        elif (teacher_dir(out, tid) / "state.pt").exists():
            row.state = "interrupted"
        teachers.append(row)
    return rows, teachers
