"""The ``kdbench`` command line: run, validate, plan, list, leaderboard."""

from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError
from .plugins import load_plugins
from .progress import Reporter

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="kdbench: benchmark knowledge-distillation methods under matched FLOP budgets.")
out_console = Console()
err_console = Console(stderr=True)
_debug = {"on": False}

PluginOpt = typer.Option(None, "--plugin", "-p", help="Extra plugin file(s) (.py) to load.")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")):
    _debug["on"] = debug


def user_errors(fn):
    """Turn a UserError into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if _debug["on"]:
                raise
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)

    return wrapper


def _load(suite_path: Path, plugins, output: Optional[Path]):
    from .suite import load_suite

    loaded, registry = load_suite(suite_path, load_plugins, tuple(str(p) for p in plugins or ()))
    if output is not None:
        loaded.suite.output = str(output)
    return loaded, registry


@app.command()
@user_errors
def run(
    suite: Path = typer.Argument(..., help="Suite file (YAML)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Results folder (default: the suite's)."),
    plugin: Optional[List[Path]] = PluginOpt,
    device: str = typer.Option("auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:1 ..."),
    launcher: str = typer.Option("local", help="Launcher plugin that executes the runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Train teachers and run every unfinished run of SUITE, then write the leaderboard."""
    from .launchers import LaunchContext
    from .leaderboard import write_leaderboard
    from .runner import resolve_device
    from .store import atomic_write_text, run_is_done

    loaded, registry = _load(suite, plugin, output)
    if launcher not in registry.launchers:
        from .suite import _unknown
        raise _unknown(Path("--launcher"), "launcher", "launcher", launcher, list(registry.launchers))
    out = loaded.output
    todo = [r for r in loaded.runs if not run_is_done(out, r.run_id)]
    done = len(loaded.runs) - len(todo)
    reporter = Reporter(quiet)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite.yaml", Path(suite).read_text())
    if done:
        err_console.print(f"{done} of {len(loaded.runs)} runs already finished in {out}: skipped.")
    with reporter:
        ctx = LaunchContext(out=out, registry=registry, device=resolve_device(device), reporter=reporter,
                            plugin_paths=tuple(str(p) for p in plugin or ()))
        summaries = registry.launchers[launcher].cls().launch(todo, ctx) if todo else []
    path = write_leaderboard(out)
    if not quiet:
        typer.echo(path.read_text())
    failed = [s for s in summaries if s.get("status") == "failed"]
    err_console.print(f"{len(summaries)} runs executed, {done} skipped, {len(failed)} failed; leaderboard: {path}")
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def validate(suite: Path = typer.Argument(..., help="Suite file (YAML)."), plugin: Optional[List[Path]] = PluginOpt):
    """Check SUITE against the schema and every plugin's params; train nothing."""
    loaded, _ = _load(suite, plugin, None)
    s = loaded.suite
    out_console.print(f"{suite}: valid: {len(s.tasks)} task(s) x {len(s.methods)} method(s) x "
                      f"{len(s.seeds)} seed(s) x {len(s.teacher_seeds)} teacher seed(s) = {len(loaded.runs)} runs")


@app.command()
@user_errors
def plan(
    suite: Path = typer.Argument(..., help="Suite file (YAML)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o"),
    plugin: Optional[List[Path]] = PluginOpt,
    device: str = typer.Option("auto"),
):
    """List SUITE's runs: ids, measured FLOPs per step, steps, budget, and which are done."""
    from .runner import build_task, prepare, resolve_device
    from .store import run_is_done
    from .teachers import ProbeTeacher

    loaded, registry = _load(suite, plugin, output)
    dev = resolve_device(device)
    table = Table(title=f"{loaded.suite.name}: {len(loaded.runs)} runs -> {loaded.output}")
    for col in ("run id", "task", "method", "seed", "budget FLOPs", "phases (steps x FLOPs/step)", "done"):
        table.add_column(col)
    tasks = {}
    for r in loaded.runs:
        key = (r.teacher_id,)
        if key not in tasks:
            tasks[key] = build_task(r, registry, dev, None)
        task = tasks[key]
        p = prepare(r, registry, task, ProbeTeacher(task, r.teacher_seed, r.checkpoints), dev)
        phases = ", ".join(f"{ph.name} {n}x{c:.3g}" for ph, n, c in zip(p.job.phases, p.phase_steps, p.phase_flops))
        table.add_row(r.run_id, r.task_label, r.method_label, str(r.seed), f"{p.budget_flops:.3g}", phases,
                      "yes" if run_is_done(loaded.output, r.run_id) else "no")
    out_console.print(table)


@app.command(name="list")
@user_errors
def list_plugins(plugin: Optional[List[Path]] = PluginOpt):
    """Show the tasks, methods and launchers that are installed, with versions and origin."""
    registry = load_plugins(tuple(str(p) for p in plugin or ()))
    table = Table(title="kdbench plugins")
    for col in ("kind", "name", "version", "from", "description"):
        table.add_column(col)
    for kind in ("task", "method", "launcher"):
        for info in getattr(registry, kind + "s").values():
            table.add_row(kind, info.name, info.version, info.source, getattr(info.cls, "description", ""))
    out_console.print(table)
    for name, error in registry.failures.items():
        err_console.print(f"[red]plugin {name} failed to load:[/red] {error}", highlight=False)


@app.command()
@user_errors
def leaderboard(results: Path = typer.Argument(..., help="A results folder written by `kdbench run`.")):
    """Print RESULTS' leaderboard and write RESULTS/leaderboard.md."""
    from .leaderboard import write_leaderboard

    if not (results / "runs").is_dir():
        raise UserError(f"{results}: not a kdbench results folder (no runs/ inside)")
    path = write_leaderboard(results)
    typer.echo(path.read_text())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
