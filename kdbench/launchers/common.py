"""What the built-in launchers share: grouping runs by teacher, console lines, the worker environment."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

import torch

from kdbench.run.store import run_dir, teacher_dir
from kdbench.suite.identity import Run

# glibc malloc returning memory to the OS on every large free cost up to 2x on mid-size models
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def teacher_groups(runs: list[Run], registry, extra: Optional[dict] = None) -> dict:
    """Runs that need a cached teacher, grouped by teacher id: ``{id: {"run": one of them,
    "checkpoints": the union of the checkpoints they read and of ``extra[id]``, "runs": all of them,
    "followers": the runs of that teacher id that do not distil from it}}``. Followers (labels, methods
    that co-train their own teacher) start after the teacher is ready or has failed: their fidelity
    is measured against it (:func:`kdbench.run.runner.fidelity_teacher`); they never fail with it."""
    groups: dict[str, dict] = {}
    for run in runs:
        if not registry.methods[run.method].cls.needs_teacher:
            continue
        wanted = set((extra or {}).get(run.teacher_id, ()))
        group = groups.setdefault(run.teacher_id, {"run": run, "checkpoints": wanted, "runs": [], "followers": []})
        group["checkpoints"].update(run.checkpoints)
        group["runs"].append(run)
    for run in runs:
        if not registry.methods[run.method].cls.needs_teacher and run.teacher_id in groups:
            groups[run.teacher_id]["followers"].append(run)
    return groups


def describe_teacher(tid: str, summary: dict) -> str:
    """One console line on a teacher that is ready."""
    metric = summary.get("metric", "accuracy")
    value = summary.get("metrics", {}).get(metric, float("nan"))
    how = "cached" if summary.get("cached") else f"given: {summary.get('source')}" if summary.get("given") else "trained"
    return f"teacher {tid}: {metric} {value:.4f}, {summary['flops']:.3g} FLOPs, {summary['wall_time']:.1f} s ({how})"


def describe(run: Run, summary: dict) -> str:
    """One console line on a run that ended."""
    where = f"  {run.task_label} / {run.method_label} / seed {run.seed}"
    status = summary.get("status")
    if status == "finished":
        metrics = summary.get("metrics", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "train_loss")
        return f"{where}: {shown} ({summary['steps']} steps, {summary['wall_time']:.1f} s)"
    if status == "failed":
        return f"{where}: FAILED: {summary.get('error')}"
    return f"{where}: {status}"


def failure_lines(failed: list[dict], out: Path) -> list[str]:
    """Console lines on the failed runs: one per distinct error (a failed teacher's runs, a full disk)."""
    by_error: dict[str, list[dict]] = {}
    for s in failed:
        key = "disk full" if s.get("errno") == errno.ENOSPC else str(s.get("error"))
        by_error.setdefault(key, []).append(s)
    lines = []
    for key, group in by_error.items():
        ids = ", ".join(s["run_id"] for s in group[:3]) + (f" and {len(group) - 3} more" if len(group) > 3 else "")
        if key == "disk full":
            lines.append(f"[red]disk full:[/red] {len(group)} run(s) could not store their results ({ids}): "
                         f"{group[0].get('error')}. Free space and run the same command again: finished runs "
                         "are kept and the others resume.")
            continue
        first = group[0]
        where = first.get("unrecorded") or f"traceback: {out / 'runs' / first['run_id'] / 'traceback.txt'}"
        runs = f"run {ids}" if len(group) == 1 else f"{len(group)} runs ({ids})"
        lines.append(f"[red]failed:[/red] {runs}: {key} ({where})")
    return lines


def saved_step(state: Path) -> Optional[int]:
    """The step a saved training state (``state.pt``) resumes from; None if there is none or it cannot be read."""
    try:
        return int(torch.load(state, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:  # noqa: BLE001 - absent, partly written or not a state: no step to resume from
        return None


def _what_was_saved(folder: Path) -> str:
    step = saved_step(folder / "state.pt")
    if step is not None:
        return f"state saved at step {step}; the next `kdbench run` resumes it from there"
    if (folder / "state.pt").exists():
        return "its saved state cannot be read; the next `kdbench run` discards it and starts over"
    return "nothing saved (it stopped before its first save); the next `kdbench run` starts it over"


def interrupted_lines(out: Path, runs: list[Run]) -> list[str]:
    """After Ctrl-C or SIGTERM, what is on disk for each of ``runs`` (those launched) that had started and
    has no result, and for their teachers: the step of the saved state, or that nothing was saved (a plugin
    that hung inside a step, interrupted again, stops before it can save)."""
    lines = []
    for tid in dict.fromkeys(run.teacher_id for run in runs):
        folder = teacher_dir(out, tid)
        if folder.is_dir() and not (folder / "summary.json").exists():
            lines.append(f"teacher {tid}: {_what_was_saved(folder)}")
    for run in runs:
        folder = run_dir(out, run.run_id)
        if folder.is_dir() and not (folder / "summary.json").exists():  # started, no result (finished or failed)
            lines.append(f"run {run.run_id} ({run.task_label} / {run.method_label}, seed {run.seed}): "
                         f"{_what_was_saved(folder)}")
    return lines
