"""The ``kdbench`` command line: run, validate, plan, status, list, describe, new-method, leaderboard, check, plot,
tune-report, report, html, export, compare.

Each command is a Typer function with one parameter per option (``run`` has fourteen: its flags);
their docstrings are the commands' ``--help``, so the reason for their length is said here."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from kdbench.cli.catalog import Format, print_descriptions, print_listing, to_json
from kdbench.cli.scaffold import new_method_package
from kdbench.cli.views import plan_document, print_plan_table, print_status
from kdbench.commands import check_claims, plan_suite, run_suite, suite_status
from kdbench.commands import tune_report as render
from kdbench.commands import validate_suite
from kdbench.errors import UserError
from kdbench.files import atomic_write_json, atomic_write_text
from kdbench.launchers.common import failure_lines
from kdbench.plugins import load_plugins
from kdbench.progress import LogConsole, Reporter, os_error, show_warnings
from kdbench.run.probe import format_seconds
from kdbench.suite.expand import check_plugin_file

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="kdbench: benchmark knowledge-distillation methods under matched FLOP budgets.")
out_console = LogConsole()
err_console = LogConsole(stderr=True)
_debug = {"on": False}

PluginOpt = typer.Option(None, "--plugin", "-p", help="Extra plugin file(s) (.py) to load.")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")):
    _debug["on"] = debug
    show_warnings(err_console)


def user_errors(fn):
    """Turn a UserError, or an OSError on a path the user named (a read-only or missing folder),
    into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as exc:
            if _debug["on"]:
                raise
            message = os_error(exc) if isinstance(exc, OSError) else str(exc)
            # escaped: a message may hold brackets rich would take for markup (pip install "kdbench[hf]")
            err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)

    return wrapper


@app.command()
@user_errors
def run(
    suite: Path = typer.Argument(..., help="Suite file (YAML)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Results folder (default: the suite's)."),
    plugin: Optional[List[Path]] = PluginOpt,
    device: str = typer.Option("auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:1 ..."),
    launcher: Optional[str] = typer.Option(None, help="Launcher plugin that executes the runs "
                                                       "(default: the suite's launcher.name, else local)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1,
                                       help="Runs at once (local: worker processes; slurm: array parallelism)."),
    launcher_option: Optional[List[str]] = typer.Option(None, "--launcher-option", "-L",
                                                        help="KEY=VALUE option of the launcher (repeatable)."),
    sbatch: Optional[List[str]] = typer.Option(None, "--sbatch", help="Extra sbatch option for the slurm "
                                               "launcher, e.g. --sbatch=--qos=high (repeatable)."),
    detach: bool = typer.Option(False, "--detach", help="Submit the jobs and return (slurm); `kdbench status` "
                                "and a later `kdbench run` pick them up."),
    precision: str = typer.Option("fp32", help="fp32, or bf16: autocast the losses to bfloat16 on CUDA "
                                  "(fp32 on CPU)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile student and teacher "
                                 "(after their FLOPs are measured)."),
    loggers: Optional[List[str]] = typer.Option(None, "--log", help="Follow the runs in an experiment tracker: "
                                                "tensorboard, mlflow, wandb; NAME:KEY=VALUE,... sets its options; "
                                                "none drops the suite's loggers (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    keep_students: Optional[bool] = typer.Option(None, "--keep-students/--no-keep-students",
                                                 help="Keep each finished run's student weights (default: the "
                                                 "suite's keep_students, else yes)."),
    rerun_changed: bool = typer.Option(False, "--rerun-changed", help="Redo the finished runs produced by other "
                                       "method or task code than installed now (without it they are kept and "
                                       "named)."),
    batch_seeds: bool = typer.Option(False, "--batch-seeds", help="Train the runs that differ only in their seed "
                                     "as one stacked model where they can be (local launcher; others run one by "
                                     "one, the reason logged)."),
):
    """Train teachers and run every unfinished run of SUITE, then write the leaderboard."""
    try:
        done = run_suite(suite, output, jobs=jobs, device=device, launcher=launcher,
                         launcher_options=launcher_option or (), sbatch=sbatch or (), detach=detach,
                         precision=precision, compile=compile, plugins=plugin or (), loggers=loggers or (),
                         reporter=Reporter(quiet), log=_log, keep_students=keep_students,
                         rerun_changed=rerun_changed, batch_seeds=batch_seeds)
    except KeyboardInterrupt as exc:  # Ctrl-C (130) or SIGTERM (143); run_suite logged what each run saved
        err_console.print("interrupted: finished runs are kept; run the same command again to go on.")
        raise typer.Exit(getattr(exc, "exit_code", 130))
    if done.detached:
        err_console.print(f"detached: `kdbench status {done.output}` shows the jobs; `kdbench run {suite}` again "
                          "waits for them and writes the leaderboard.")
        return
    if not quiet and done.leaderboard_path is not None:
        typer.echo(done.leaderboard_path.read_text())
    for line in failure_lines(done.failed, done.output):
        err_console.print(line, highlight=False, soft_wrap=True)
    if done.leaderboard_path is not None:
        for claim in done.claims().claims:  # the claims table ends the leaderboard; their verdicts, even with -q
            err_console.print(f"claim {claim.line()}", highlight=False, soft_wrap=True)
    board = done.leaderboard_path or ("not written" if done.leaderboard_error else "none (no run has a result yet)")
    err_console.print(f"{len(done.executed)} runs executed, {len(done.skipped)} skipped, {len(done.failed)} failed, "
                      f"{len(done.diverged)} diverged; leaderboard: {board}")
    if done.failed or done.leaderboard_error:
        raise typer.Exit(1)


def _log(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


@app.command()
@user_errors
def validate(suite: Path = typer.Argument(..., help="Suite file (YAML)."), plugin: Optional[List[Path]] = PluginOpt):
    """Check SUITE: the schema, every plugin's params, and one probe step of every (task, method)
    pair on untrained models; train nothing."""
    loaded = validate_suite(suite, plugin or ())
    s = loaded.suite
    out_console.print(f"{suite}: valid: {len(s.tasks)} task(s) x {len(s.methods)} method(s) x "
                      f"{len(s.seeds)} seed(s) x {len(s.teacher_seeds)} teacher seed(s) = {len(loaded.runs)} runs")
    if loaded.tune is not None:
        tune = loaded.tune
        out_console.print(f"tune: {len(s.tasks)} task(s) x {len(tune.spaces)} tuned method(s) x {_trials_text(tune)} "
                          f"= {len(s.tasks) * len(tune.spaces) * tune.spec.trials * tune.runs_per_trial} trial runs",
                          highlight=False)


def _trials_text(tune) -> str:
    """``3 trials x 2 dev seed(s) [100, 101] x 1 dev teacher seed(s) [100]``: what a tuned method's trials run."""
    spec = tune.spec
    return (f"{spec.trials} trials x {len(spec.dev_seeds)} dev seed(s) {spec.dev_seeds} x "
            f"{len(spec.dev_teacher_seeds)} dev teacher seed(s) {spec.dev_teacher_seeds}")


FormatOpt = typer.Option(Format.text, "--format", "-f", help="text (a table on a terminal, aligned columns "
                         "elsewhere) or json.")


@app.command()
@user_errors
def plan(
    suite: Path = typer.Argument(..., help="Suite file (YAML)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o"),
    plugin: Optional[List[Path]] = PluginOpt,
    device: str = typer.Option("auto"),
    probe_steps: int = typer.Option(10, min=0, help="Engine steps timed per phase for the time estimate "
                                    "(0: no estimate)."),
    precision: str = typer.Option("fp32", help="Precision the estimate assumes (fp32, bf16)."),
    compile: bool = typer.Option(False, "--compile", help="Estimate with torch.compile (as `run --compile`)."),
    batch_seeds: bool = typer.Option(False, "--batch-seeds", help="Say which groups of seeds `run --batch-seeds` "
                                     "trains as one stacked model, and why the others run one by one."),
    fmt: Format = FormatOpt,
):
    """List SUITE's runs: ids, measured FLOPs per step, steps, budget, which are done, and an
    estimate of each run's time on this device from a few timed engine steps."""
    plan = plan_suite(suite, output, device=device, probe_steps=probe_steps, precision=precision, compile=compile,
                      plugins=plugin or (), batch_seeds=batch_seeds)
    if fmt == Format.json:
        out_console.out(to_json(plan_document(plan)), highlight=False)
        return
    print_plan_table(out_console, plan)
    loaded, dev = plan.suite, plan.device
    for ids, reason in plan.seed_groups:
        how = "stacked as one model" if reason is None else f"one by one: {reason}"
        out_console.print(f"--batch-seeds: runs {', '.join(ids)}: {how}", highlight=False, soft_wrap=True)
    if plan.tuning_runs:
        teachers = len(plan.dev_teachers)
        out_console.print(f"tune: the sweep adds {plan.tuning_runs} trial runs ({_trials_text(loaded.tune)} per "
                          "tuned method and task"
                          + (f", est. {format_seconds(plan.tuning_seconds)}" if probe_steps else "")
                          + f") and {teachers} dev teacher(s)"
                          + (f" (est. {format_seconds(sum(plan.dev_teachers.values()))})" if probe_steps and teachers
                             else "")
                          + "; tuned methods' test runs are listed with their given params: the sweep chooses "
                          "the settings they run with", highlight=False)
    if probe_steps:
        for tid, seconds in plan.teachers.items():
            out_console.print(f"teacher {tid}: est. {format_seconds(seconds)} (trained once, if not cached)",
                              highlight=False, soft_wrap=True)
        low, high = plan.spread_left
        out_console.print(f"estimated time of the unfinished runs, one after another on {dev} ({plan.precision}"
                          f"{', compiled' if compile else ''}, {plan.threads} thread(s)): "
                          f"{format_seconds(plan.seconds_left)} ({format_seconds(low)}-{format_seconds(high)}: "
                          f"the step times' quartiles) + teachers {format_seconds(sum(plan.teachers.values()))}; "
                          f"from {probe_steps} timed steps per phase", highlight=False)
        if plan.threads_reason:
            out_console.print(f"threads: {plan.threads}, as `kdbench run` would choose ({plan.threads_reason})",
                              highlight=False)
        if plan.busy:
            out_console.print(f"the machine looked busy ({plan.load[0]:.1f} cores busy of {plan.load[1]}): "
                              "these estimates hold while that other work runs", highlight=False)
    if plan.load[1] > 1 and loaded.suite.launcher.name == "local":
        out_console.print(f"jobs: {plan.jobs} at once, as `kdbench run` would choose ({plan.jobs_reason})",
                          highlight=False)


@app.command()
@user_errors
def status(
    target: Path = typer.Argument(..., help="A results folder, or a suite file (then its output folder)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Results folder of the suite."),
    plugin: Optional[List[Path]] = PluginOpt,
    fmt: Format = FormatOpt,
):
    """Where every run stands: finished, running (step), pending in Slurm, failed, lost, interrupted
    (step saved), not started; and every teacher: finished, training, interrupted, not trained."""
    out, rows, teachers = suite_status(target, output, plugin or ())
    print_status(out_console, out, rows, teachers, fmt)


@app.command(name="list")
@user_errors
def list_plugins(plugin: Optional[List[Path]] = PluginOpt, fmt: Format = FormatOpt):
    """Show the tasks, methods, launchers and loggers that are installed, with versions and origin."""
    for p in plugin or ():
        check_plugin_file(p, "--plugin")
    print_listing(out_console, err_console, load_plugins(tuple(str(p) for p in plugin or ())), fmt)


@app.command()
@user_errors
def describe(
    name: str = typer.Argument(..., help="A task, method, launcher or logger name (see kdbench list)."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="task, method, launcher or logger: only that kind "
                                       "(a name may be both a task and a method)."),
    plugin: Optional[List[Path]] = PluginOpt,
    fmt: Format = FormatOpt,
):
    """Show a plugin's params: type, allowed values, default and description of each, and its defaults."""
    print_descriptions(out_console, load_plugins(tuple(str(p) for p in plugin or ())), name, kind, fmt)


def _write_figures(results, **kwargs) -> list[Path]:
    """Figures next to the leaderboard; a plotting problem is reported, never fatal to a run."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.plots import write_figures

    try:
        return write_figures(results, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the runs are saved; `kdbench plot` can retry
        if _debug["on"]:
            raise
        err_console.print(f"[red]figures not written:[/red] {type(exc).__name__}: {exc}", highlight=False)
        return []


BaselineOpt = typer.Option(None, "--baseline", help="Method label the others are compared with over matching "
                           "seeds (default: one-shot, when present).")
CiOpt = typer.Option(False, "--ci", help="Add 95% confidence-interval columns (Student t over seeds with one "
                     "teacher seed; with several, Student t over the per-teacher means).")
TeacherOpt = typer.Option(False, "--teacher-curve", help="Also draw the teacher's training curve.")
AllOpt = typer.Option(False, "--all", help="Every run of the folder, not only the suite last run into it "
                      "(OUT/suite.json); runs of different configs still get separate rows.")


@app.command(name="new-method")
@user_errors
def new_method(
    name: str = typer.Argument(..., help="The method's name in suites: lower-case letters, digits, dashes."),
    output: Path = typer.Option(Path("."), "--output", "-o", help="Folder to create kdbench-NAME/ in."),
):
    """Scaffold a method plugin package (like plugins/kdbench-fitnets): pyproject with entry point, method, tests."""
    root = new_method_package(name, output, tuple(load_plugins().methods))
    typer.echo(f"created {root}\nnext:\n  pip install -e {root}\n  kdbench list\n  python -m pytest {root / 'tests'} -q")


@app.command()
@user_errors
def leaderboard(
    results: Path = typer.Argument(..., help="A results folder written by `kdbench run`."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, latex, csv or json."),
    baseline: Optional[str] = BaselineOpt,
    ci: bool = CiOpt,
    plot: bool = typer.Option(False, "--plot", help="Also write RESULTS/figures/<task>.png and .pdf."),
    teacher_curve: bool = TeacherOpt,
    all_runs: bool = AllOpt,
    columns: Optional[str] = typer.Option(None, "--columns", help="The md/LaTeX table's columns, comma-separated, "
                                          "in order (e.g. method,metric,auc,delta), or all. Default: every column in "
                                          "md, a paper's in LaTeX (method, metric, seeds, ci, to_target, auc, "
                                          "agreement, student_flops, delta, delta_ci, teachers_better)."),
):
    """Print RESULTS' leaderboard in FORMAT; write RESULTS/leaderboard.md (and leaderboard.<format>).
    With no run to show, write nothing and exit 2."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.folder import load_results
    from kdbench.results.leaderboard import build_leaderboard
    from kdbench.results.render import FORMATS, folder_notes, render, write_leaderboard

    res = load_results(results, all_runs)
    board = build_leaderboard(res, baseline, ci)
    chosen = columns.split(",") if columns is not None else None
    text = render(board, fmt, chosen)
    if not board.boards:
        raise UserError(" ".join([f"{results}: no runs to show; nothing written.", *folder_notes(board)]))
    typer.echo(text)  # shown even if the folder turns out to be read-only
    write_leaderboard(board, results)
    if FORMATS[fmt] != "md":
        write_leaderboard(board, results, fmt, chosen)
    if plot:
        for path in _write_figures(res, teacher=teacher_curve):
            err_console.print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def compare(
    folders: List[Path] = typer.Argument(..., help="Two or more results folders; the first is the reference."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, latex, csv or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the table to this file."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Write DIR/<task>-compare.png and .pdf: "
                                           "every folder's mean curves, a line style per folder."),
    labels: Optional[str] = typer.Option(None, "--labels", help="The folders' names in the tables, comma-separated "
                                         "(default: the folders' names)."),
    all_runs: bool = typer.Option(False, "--all-runs", "--all", help="Every run of each folder, not only the suite "
                                  "last run into it."),
):
    """Print the same (task, method) rows of FOLDERS side by side: each folder's mean, and against the
    first folder the difference of the means and the paired difference over matching (teacher seed, seed)."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.compare import compare_results
    from kdbench.results.compare_plots import write_compare_figures

    names = None if labels is None else labels.split(",")
    cmp = compare_results(folders, names, all_runs=all_runs)
    text = cmp.render(fmt)
    typer.echo(text)
    if output is not None:
        atomic_write_text(output, text)
        err_console.print(f"wrote {output}", highlight=False)
    if figures is not None:
        for path in write_compare_figures(cmp, figures):
            err_console.print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def check(
    results: Path = typer.Argument(..., help="A results folder written by `kdbench run` of a suite with claims:."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write the verdicts as JSON to this file."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a claim does not hold."),
):
    """Judge the claims of RESULTS' suite (claims:) on its runs: per claim and teacher seed the paired
    difference over student seeds and whether it holds there, then the verdict (holds, does not hold,
    not enough runs)."""
    # start-up cost: pandas (0.4 s), paid only by the commands that read results
    from kdbench.results.claims import HEADERS, claim_rows

    report = check_claims(results)
    table = Table(title=f"{results}: the claims of suite {report.suite}")
    for header in HEADERS[:-1]:  # the overall verdicts follow the table, one line each
        table.add_column(header, overflow="fold")
    for row in claim_rows(report):
        table.add_row(*(escape(cell) for cell in row[:-1]))
    out_console.print(table)
    for claim in report.claims:
        out_console.print(claim.line(), highlight=False, soft_wrap=True)
    if json_file is not None:
        atomic_write_json(json_file, report.to_json())
        err_console.print(f"wrote {json_file}", highlight=False)
    if strict and report.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def plot(
    results: Path = typer.Argument(..., help="A results folder written by `kdbench run`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the figures "
                                          "(default: RESULTS/figures)."),
    teacher_curve: bool = TeacherOpt,
    all_runs: bool = AllOpt,
    x: Optional[str] = typer.Option(None, "--x", help="x axis: flops or steps (default: steps for a budget in "
                                    "student_steps, else flops)."),
):
    """Write the metric-vs-FLOPs (or -steps) figure of every task of RESULTS as PNG and PDF."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.folder import load_results
    from kdbench.results.plots import write_figures

    for path in write_figures(load_results(results, all_runs), output, teacher=teacher_curve, x=x):
        out_console.print(f"wrote {path}", highlight=False)


@app.command(name="tune-report")
@user_errors
def tune_report(
    results: Path = typer.Argument(..., help="A results folder of a suite with a tune: block."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, csv, json or latex."),
    all_runs: bool = AllOpt,
):
    """Print the tuning sweeps of RESULTS: every trial (settings, objective per dev seed, mean) and
    each method's sensitivity to its settings (best, median, worst, trials within reach of the best)."""
    typer.echo(render(results, fmt, all_runs))


@app.command()
@user_errors
def report(
    results: Path = typer.Argument(..., help="A results folder written by `kdbench run`."),
    output: Path = typer.Argument(..., help="The folder to write the report into: new, empty, or an earlier "
                                  "report (whose results/, tables/ and figures/ are replaced)."),
    baseline: Optional[str] = BaselineOpt,
    ci: bool = CiOpt,
    teacher_curve: bool = TeacherOpt,
    all_runs: bool = AllOpt,
    force: bool = typer.Option(False, "--force", help="Write into OUTPUT even if it is a non-empty folder "
                               "that is not a kdbench report."),
):
    """Write a folder for a paper: tables in every format, figures, the suite, versions, how to reproduce."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.report import write_report

    dest = write_report(results, output, baseline, ci, teacher_curve, all_runs, force)
    out_console.print(f"report written to {dest} (see {dest / 'README.md'})", highlight=False)


@app.command()
@user_errors
def html(
    results: Path = typer.Argument(..., help="A results folder written by `kdbench run`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML file to write "
                                          "(default: RESULTS/report.html)."),
    baseline: Optional[str] = BaselineOpt,
    ci: bool = CiOpt,
    all_runs: bool = AllOpt,
):
    """Write RESULTS' report as one self-contained HTML file: sortable leaderboard, interactive curves
    (hover, toggle methods, FLOPs or steps), tuning protocol, provenance; nothing fetched when viewed."""
    # start-up cost: pandas (0.4 s) and plotly's bundle, paid only by the commands that draw or tabulate
    from kdbench.results.folder import load_results
    from kdbench.results.html import write_html_report

    path = write_html_report(load_results(results, all_runs), output or results / "report.html", baseline, ci)
    out_console.print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def export(
    source: str = typer.Argument(..., help="A run folder, or a run id (with --results); with --teacher, a "
                                 "teacher id."),
    output: Path = typer.Argument(..., help="The folder to write the model into (new or empty)."),
    results: Optional[Path] = typer.Option(None, "--results", "-r", help="The results folder holding the run "
                                           "or the teacher."),
    teacher: bool = typer.Option(False, "--teacher", help="SOURCE is a teacher id: export the teacher "
                                 "(teachers/<id>/final.pt)."),
    force: bool = typer.Option(False, "--force", help="Write into OUTPUT even if it is not empty."),
):
    """Write a run's kept student (or a teacher) as a model to load without kdbench: a Hugging Face
    save_pretrained folder (with the task's tokenizer), or model.safetensors and config.json."""
    # start-up cost: pandas (0.4 s) and matplotlib (0.5 s), paid only by the commands that draw or tabulate
    from kdbench.results.export import export_model

    dest = export_model(source, output, results=results, teacher=teacher, force=force)
    out_console.print(f"exported to {dest}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
