"""The ``local`` launcher: teachers first (each once), then every run, in this process."""

from __future__ import annotations

from ..api import Recipe
from ..hookspecs import hookimpl
from ..runner import build_task, execute_run
from ..teachers import ensure_teacher
from . import LaunchContext, Launcher


def teacher_groups(runs, registry) -> dict:
    """Runs that need a teacher, grouped by teacher id, with the union of the checkpoints they read."""
    groups: dict[str, dict] = {}
    for run in runs:
        if not registry.methods[run.method].cls.needs_teacher:
            continue
        group = groups.setdefault(run.teacher_id, {"run": run, "checkpoints": set()})
        group["checkpoints"].update(run.checkpoints)
    return groups


def train_teachers(runs, ctx: LaunchContext) -> None:
    """Make sure every teacher these runs need is in the cache, training each once."""
    for tid, group in teacher_groups(runs, ctx.registry).items():
        run = group["run"]
        recipe = Recipe.model_validate(run.teacher_recipe)
        task = build_task(run, ctx.registry, ctx.device, ctx.out)
        with ctx.reporter.bar(f"teacher {tid}", recipe.steps) as update:
            summary = ensure_teacher(ctx.out, tid, task, run.teacher_seed, recipe, sorted(group["checkpoints"]),
                                     run.teacher_checkpoint, run.eval["points"], run.save_every_s, update)
        metric = task.metric
        ctx.reporter.log(f"teacher {tid}: {metric} {summary['metrics'].get(metric, float('nan')):.4f}, "
                         f"{summary['flops']:.3g} FLOPs, {summary['wall_time']:.1f} s")


class LocalLauncher(Launcher):
    """Runs everything in this process, one run at a time."""

    name = "local"
    version = "1"
    description = "in-process, one run after another"

    def launch(self, runs, ctx):
        train_teachers(runs, ctx)
        summaries = []
        for run in runs:
            with ctx.reporter.bar(f"{run.task_label} {run.method_label} seed {run.seed}") as update:
                summary = execute_run(run, ctx.registry, ctx.out, ctx.device, progress=update)
            summaries.append(summary)
            ctx.reporter.log(describe(run, summary))
        return summaries


def describe(run, summary: dict) -> str:
    """One line on a finished run for the console."""
    status = summary.get("status")
    if status == "finished":
        metrics = summary.get("metrics", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "train_loss")
        return f"  {run.task_label} / {run.method_label} / seed {run.seed}: {shown} ({summary['steps']} steps, {summary['wall_time']:.1f} s)"
    if status == "failed":
        return f"  {run.task_label} / {run.method_label} / seed {run.seed}: FAILED: {summary.get('error')}"
    return f"  {run.task_label} / {run.method_label} / seed {run.seed}: {status}"


@hookimpl
def kdbench_register_launchers():
    return [LocalLauncher]
