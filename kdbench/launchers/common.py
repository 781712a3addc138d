"""What the built-in launchers share: grouping runs by teacher, console lines, the worker environment."""

from __future__ import annotations

from typing import Optional

from ..suite import Run

# glibc malloc returning memory to the OS on every large free cost up to 2x on mid-size models
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def teacher_groups(runs: list[Run], registry, extra: Optional[dict] = None) -> dict:
    """Runs that need a cached teacher, grouped by teacher id: ``{id: {"run": one of them,
    "checkpoints": the union of the checkpoints they read and of ``extra[id]``, "runs": all of them}}``."""
    groups: dict[str, dict] = {}
    for run in runs:
        if not registry.methods[run.method].cls.needs_teacher:
            continue
        wanted = set((extra or {}).get(run.teacher_id, ()))
        group = groups.setdefault(run.teacher_id, {"run": run, "checkpoints": wanted, "runs": []})
        group["checkpoints"].update(run.checkpoints)
        group["runs"].append(run)
    return groups


def describe_teacher(tid: str, summary: dict) -> str:
    """One console line on a teacher that is ready."""
    metric = summary.get("metric", "accuracy")
    value = summary.get("metrics", {}).get(metric, float("nan"))
    how = "cached" if summary.get("cached") else "trained"
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
