"""Where every run of a results folder stands: from the folder itself, then from the launchers.

The folder is read through :mod:`kdbench.results`: a run is ``finished``/``diverged``/
``failed`` once its folder holds a summary, and ``unreadable`` (with the reason) when
its files fail :func:`kdbench.run.store.read_run`'s check. For the others every installed
launcher is asked about the jobs it holds (:meth:`kdbench.launchers.Launcher.job_states`):
a scheduler's launcher answers ``pending`` or ``running`` (with the step) while a job
holds the run and ``lost`` when the job ended without a result. Otherwise a run is
``running`` while a process holds its folder's lock (a ``kdbench run`` elsewhere),
``interrupted`` (at the step saved) when a saved state waits to be resumed, else ``not
started``; a teacher likewise ``training``, ``interrupted`` or ``not trained``.

A run is named (task, method, seeds) by its ``config.json``, else by the suite, else by the
labels ``kdbench run`` records for every run id in ``OUT/suite.json``
(:func:`kdbench.run.store.write_manifest`): a run an interruption stopped before its folder
was written is named too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kdbench.launchers import JobState
from kdbench.plugins import Registry
from kdbench.results.folder import load_results
from kdbench.run.store import (MANIFEST, is_locked, read_json, read_progress, run_dir, run_labels, saved_step,
                               teacher_dir)


@dataclass
class RunStatus:
    """One row of ``kdbench status`` (a run, or a teacher with ``method`` "teacher", or "dev teacher" for
    one only a tuning sweep's trials read); ``trial``: a run of a tuning trial (dev seeds, dev teachers)."""

    run_id: str
    task: str
    method: str
    seed: Optional[int]
    state: str
    detail: str = ""
    job: str = ""
    trial: bool = False
    teacher_seed: Optional[int] = None


def _metric(run: dict) -> str:
    value = run["metrics"].get(run["metric"])
    return f"{run['metric']} {value:.4f}" if isinstance(value, (int, float)) else ""


def launcher_jobs(registry: Registry, out: Path, run_ids: list[str], teacher_ids: list[str]) -> dict[str, JobState]:
    """What every installed launcher says of its jobs for these runs and teachers (the first answer wins)."""
    found: dict[str, JobState] = {}
    for info in registry.launchers.values():
        for key, state in info.cls().job_states(out, run_ids, teacher_ids).items():
            found.setdefault(key, state)
    return found


def run_status(out: Path, run_id: str, meta: dict, result: Optional[dict], problem: Optional[str],
               job: Optional[JobState]) -> RunStatus:
    """One run's row from its results row (``result``, or the ``problem`` that made its folder
    unreadable), the job a launcher holds for it, and its folder."""
    labels = {**(job.labels if job else {}), **{k: v for k, v in meta.items() if v is not None}}
    row = RunStatus(run_id, str(labels.get("task") or "?"), str(labels.get("method") or "?"), labels.get("seed"),
                    "not started", job=job.job if job else "", teacher_seed=labels.get("teacher_seed"))
    folder = run_dir(out, run_id)
    if problem is not None:
        row.state, row.detail = "unreadable", problem
    elif result is not None and result["status"] != "incomplete":
        row.state = result["status"]
        error = result["error"] if isinstance(result["error"], str) else ""
        row.detail = _metric(result) if row.state != "failed" else error[:120]
    elif job is not None:
        row.state, row.detail = job.state, job.detail
    elif is_locked(folder):
        row.state, row.detail = "running", _step_text(folder, "saved")
    elif (folder / "state.pt").exists():
        row.state, row.detail = "interrupted", _step_text(folder, "saved", "; ") + "resumes on the next run"
    return row


def _step_text(folder: Path, saved: str, end: str = "") -> str:
    """``step 120/400`` from a job's progress, else ``step 100/400 saved`` from its saved state; ``""``
    when neither says (``end`` follows a text that is not empty)."""
    progress = read_progress(folder)
    if progress is not None:
        return f"step {progress['step']}/{progress['total']}{end}"
    step = saved_step(folder)
    return f"step {step[0]}/{step[1]} {saved}{end}" if step else ""


def teacher_status(out: Path, tid: str, summary: Optional[dict], job: Optional[JobState], dev: bool = False
                   ) -> RunStatus:
    """One teacher's row (``dev``: a tuning sweep's dev teacher): finished (its metrics), a launcher's
    job, interrupted, or not trained."""
    folder = teacher_dir(out, tid)
    row = RunStatus(tid, tid.rsplit("-", 1)[0], "dev teacher" if dev else "teacher", None, "not trained",
                    job=job.job if job else "")
    if isinstance(summary, dict) and summary.get("status") == "finished":
        row.state = "finished"
        row.detail = ", ".join(f"{k} {v:.4f}" for k, v in summary.get("metrics", {}).items()
                               if isinstance(v, float) and k != "train_loss")
    elif isinstance(summary, dict) and summary.get("status"):
        row.state, row.detail = summary["status"], str(summary.get("error", ""))[:120]
    elif job is not None:
        row.state, row.detail = job.state, job.detail
    elif is_locked(folder):
        row.state, row.detail = "training", _step_text(folder, "saved")
    elif (folder / "state.pt").exists():
        row.state, row.detail = "interrupted", _step_text(folder, "saved", "; ") + "resumes on the next run"
    elif folder.is_dir():
        row.detail = "started; stopped before it saved a state"
    return row


def collect(out: Path, registry: Registry, runs: Optional[list] = None) -> tuple[list[RunStatus], list[RunStatus]]:
    """Rows for the runs (a suite's ``runs``, else every run folder under ``out`` and every run of
    the suite last run into it) and for the teachers they use."""
    out = Path(out)
    results = load_results(out, all_runs=True) if (out / "runs").is_dir() else None
    found = {r["run_id"]: r for r in results.runs().to_dict("records")} if results else {}
    unreadable = {u["run_id"]: u for u in results.unreadable().to_dict("records")} if results else {}
    teacher_rows = {t["teacher_id"]: t["summary"] for t in results.teachers().to_dict("records")} if results else {}
    manifest = read_json(out / MANIFEST)
    manifest = manifest if isinstance(manifest, dict) else {}
    metas = _metas(runs, found, unreadable, manifest)
    open_runs = [i for i in metas if i not in unreadable and (found.get(i) or {}).get("status", "incomplete")
                 == "incomplete"]
    jobs = launcher_jobs(registry, out, open_runs, [])
    on_disk = {d.name for d in (out / "teachers").glob("*") if d.is_dir()} if runs is None else set()
    tids = sorted({m.get("teacher_id") for m in [*metas.values(), *(j.labels for j in jobs.values())]}
                  - {None} | ({*teacher_rows, *on_disk} if runs is None else set()))
    jobs.update(launcher_jobs(registry, out, [], [t for t in tids if t not in teacher_rows]))
    rows = [run_status(out, run_id, meta, found.get(run_id), unreadable.get(run_id, {}).get("reason"),
                       jobs.get(run_id)) for run_id, meta in metas.items()]
    trial_ids = set(manifest.get("tuning_run_ids") or [])
    for row in rows:
        row.trial = row.run_id in trial_ids
    test_teachers = {m.get("teacher_id") for i, m in metas.items() if i not in trial_ids}
    dev = {m.get("teacher_id") for i, m in metas.items() if i in trial_ids} - test_teachers
    teachers = [teacher_status(out, tid, teacher_rows.get(tid), jobs.get(tid), tid in dev) for tid in tids
                if tid in teacher_rows or tid in jobs or teacher_dir(out, tid).is_dir()]
    seeds = {m.get("teacher_id"): m.get("teacher_seed") for m in metas.values()}
    for teacher in teachers:
        teacher.teacher_seed = seeds.get(teacher.run_id)
    return rows, teachers


def _metas(runs: Optional[list], found: dict, unreadable: dict, manifest: dict) -> dict[str, dict]:
    """What names each run (task, method, seeds, teacher id): a suite's ``runs`` when given; else
    the run folders' configs, then the labels the manifest records for the suite's runs without
    a folder (none in a folder written before kdbench recorded them: a launcher may know the job)."""
    if runs is not None:
        return {r.run_id: run_labels(r) for r in runs}
    metas = {}
    for run_id in sorted([*found, *unreadable]):
        r = found.get(run_id) or unreadable[run_id]
        metas[run_id] = {"task": r["task"], "method": r.get("method_label", r["method"]), "seed": r["seed"],
                         "teacher_seed": r.get("teacher_seed"), "teacher_id": r.get("teacher_id")}
    labels = manifest.get("labels") if isinstance(manifest.get("labels"), dict) else {}
    for run_id in [*manifest.get("run_ids", []), *(manifest.get("tuning_run_ids") or [])]:
        meta = labels.get(run_id)
        metas.setdefault(run_id, dict(meta) if isinstance(meta, dict) else {})
    return metas
