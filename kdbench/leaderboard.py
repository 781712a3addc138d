"""Leaderboards from a results folder: one table per task, a row per method.

Everything is computed from the run folders alone (config.json, summary.json,
curve.json), so tables can be rebuilt anywhere the folder is copied.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .store import atomic_write_text, load_runs, load_teachers

FLOP_CONVENTION = ("FLOPs are measured with torch.utils.flop_counter.FlopCounterMode on one real step per phase: "
                   "student forward + backward (only the layers that ran) + teacher forwards and projections "
                   "for targets; optimizer arithmetic and evaluation are not counted.")


def _fmt_flops(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def run_table(out: Path) -> pd.DataFrame:
    """One row per run folder: task, method, seed, status, final metric and costs."""
    rows = []
    for r in load_runs(out):
        c, s = r["config"], r["summary"]
        metric = s.get("metric", "accuracy")
        rows.append({
            "task": c["task_label"], "method": c["method_label"], "method_name": c["method"],
            "version": c["method_version"], "seed": c["seed"], "teacher_seed": c["teacher_seed"],
            "teacher_id": c.get("teacher_id"), "status": s.get("status"), "metric": metric,
            "value": (s.get("metrics") or {}).get(metric), "flops": s.get("flops"), "budget": s.get("budget_flops"),
            "steps": s.get("steps"), "wall_time": s.get("wall_time"),
            "checkpoints": s.get("checkpoints_used", 0), "checkpoint_bytes": s.get("checkpoint_bytes", 0),
        })
    return pd.DataFrame(rows)


def method_rows(runs: pd.DataFrame) -> list[dict]:
    """Aggregate a task's runs per method: mean and std over seeds of the final metric."""
    out = []
    for method, g in runs.groupby("method", sort=False):
        done = g[g.status == "finished"]
        values = done.value.astype(float)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        not_done = g[g.status != "finished"]
        note = ", ".join(f"{n} {st}" for st, n in not_done.status.value_counts().items())
        out.append({
            "Method": method, "Version": g.version.iloc[0],
            g.metric.iloc[0]: f"{values.mean():.4f} ± {std:.4f}" if len(values) else "-",
            "Seeds": f"{len(values)}" + (f" ({note})" if note else ""),
            "Student FLOPs": _fmt_flops(done.flops.mean() if len(done) else float("nan")),
            "Steps": f"{done.steps.mean():.0f}" if len(done) else "-",
            "Ckpts stored": f"{done.checkpoints.max():.0f} ({done.checkpoint_bytes.max() / 1e6:.2f} MB)"
                            if len(done) and done.checkpoints.max() > 0 else "0",
            "Wall (s)": f"{done.wall_time.mean():.1f}" if len(done) else "-",
            "_mean": values.mean() if len(values) else float("nan"),
        })
    return out


def render_markdown(out: Path) -> str:
    """The leaderboard of ``out`` as GitHub markdown."""
    runs = run_table(out)
    if runs.empty:
        return f"No finished runs in {out}.\n"
    teachers = load_teachers(out)
    parts = []
    for task, g in runs.groupby("task", sort=False):
        rows = sorted(method_rows(g), key=lambda r: -r["_mean"] if not math.isnan(r["_mean"]) else math.inf)
        for r in rows:
            r.pop("_mean")
        parts.append(f"### {task}\n")
        parts.append(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
        budgets = g.budget.dropna().unique()
        parts.append("")
        if len(budgets):
            parts.append(f"Budget: {_fmt_flops(budgets[0])} FLOPs per student run. {FLOP_CONVENTION}")
        for tid in g.teacher_id.dropna().unique():
            t = teachers.get(tid)
            if t:
                metric = g.metric.iloc[0]
                value = t.get("metrics", {}).get(metric)
                source = f"loaded from {t['source']}" if t.get("source") else \
                    f"trained {t['steps']} steps, {_fmt_flops(t['flops'])} FLOPs, {t['wall_time']:.1f} s"
                parts.append("")
                parts.append(f"Teacher `{tid}`: {metric} {value:.4f}; {source} (not part of the budget).")
        parts.append("")
    return "\n".join(parts)


def write_leaderboard(out: Path) -> Path:
    """Write ``out/leaderboard.md`` atomically; return its path."""
    path = Path(out) / "leaderboard.md"
    atomic_write_text(path, render_markdown(out))
    return path
