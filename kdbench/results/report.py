"""A folder for a paper from a results folder: tables in every format, figures, the
suite, the versions that made it, and how to reproduce it.

Layout of ``kdbench report RESULTS OUT``::

    OUT/README.md                   what is here, how to reproduce it, how to cite it
    OUT/report.html                 the same in one self-contained page (kdbench.results.html): sortable
                                    tables, interactive curves, tuning, provenance
    OUT/tables/leaderboard.{md,tex,csv,json}
    OUT/tables/tuning.{md,tex,csv,json}   a tuned suite's sweeps (kdbench.tuning.report)
    OUT/figures/<task>.{png,pdf}
    OUT/suite.yaml                  the suite as last run (plus its plugin files when found)
    OUT/versions.json               kdbench, python, torch, libraries, plugins, git commit; versions the runs used
    OUT/results/                    the run folders' JSON (config, summary, curve) and teacher summaries/curves

The tables and figures are built from ``OUT/results`` (the copy), so
``kdbench report OUT/results AGAIN`` rebuilds them from the run folders alone.
``OUT/.kdbench-report`` marks the folder as a report: a report is written only into
a new or empty folder or over an earlier report (whose ``results/``, ``tables/``
and ``figures/`` are replaced), unless forced.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Optional

import yaml

from kdbench import __version__
from kdbench.errors import UserError
from kdbench.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from kdbench.results.folder import load_results
from kdbench.results.html import write_html_report
from kdbench.results.leaderboard import build_leaderboard
from kdbench.results.plots import write_figures
from kdbench.results.provenance import versions
from kdbench.results.render import render
from kdbench.run.store import MANIFEST
from kdbench.tuning.records import TUNING
from kdbench.tuning.report import write_tuning_tables

TABLE_FORMATS = {"md": "md", "tex": "latex", "csv": "csv", "json": "json"}
# hashes.json too: the copy is checked as the original is (kdbench.run.integrity)
RUN_FILES = ("config.json", "summary.json", "curve.json", "traceback.txt", "hashes.json")
TEACHER_FILES = ("summary.json", "curve.json", "hashes.json")
MARKER = ".kdbench-report"
GENERATED = ("results", "tables", "figures")  # what a rewrite of a report replaces
HTML = "report.html"


def copy_results(results: Path, dest: Path) -> int:
    """Copy every run folder's JSON and traceback and every teacher's summary and curve (no
    weights), the suite and its manifest; return the number of run folders copied. Run
    folders are copied whatever state they are in, so the copy lists the same unreadable
    folders as the original."""
    n = 0
    for kind, names in (("runs", RUN_FILES), ("teachers", TEACHER_FILES)):
        for d in sorted(p for p in (results / kind).glob("*") if p.is_dir()):
            if kind == "teachers" and not (d / names[0]).is_file():
                continue
            n += kind == "runs"
            (dest / kind / d.name).mkdir(parents=True, exist_ok=True)
            for name in names:
                if (d / name).is_file():
                    atomic_write_bytes(dest / kind / d.name / name, (d / name).read_bytes())
    for record in sorted((results / TUNING).glob("*/*.json")):  # tuning sweeps (not Optuna's journal)
        atomic_write_bytes(dest / record.relative_to(results), record.read_bytes())
    for name in ("suite.yaml", MANIFEST):
        if (results / name).is_file():
            atomic_write_bytes(dest / name, (results / name).read_bytes())
    return n


def prepare_destination(results: Path, dest: Path, force: bool = False) -> None:
    """Make ``dest`` ready for a report of ``results``: a new or empty folder, or an earlier
    report (its generated folders are removed); another non-empty folder only with
    ``force``. Anything else is a UserError, raised before anything is written."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: is a file; give a folder for the report")
    if dest.resolve() == results.resolve():
        raise UserError(f"{dest}: the report folder must differ from the results folder")
    if dest.resolve() in results.resolve().parents:
        raise UserError(f"{dest}: the report folder must not contain the results folder {results}; "
                        "write the report elsewhere")
    is_report = (dest / MARKER).is_file()
    if dest.is_dir() and any(dest.iterdir()) and not is_report and not force:
        raise UserError(f"{dest}: not empty and not a kdbench report (no {MARKER}); choose a new folder, "
                        "or --force to write the report into it")
    if is_report:
        for name in GENERATED:
            shutil.rmtree(dest / name, ignore_errors=True)
    atomic_write_json(dest / MARKER, {"kdbench": __version__, "results": str(results)})


def _suite_files(results: Path, dest: Path) -> tuple[str, list[str]]:
    """Copy the suite and the plugin files it names (looked up in the working directory,
    the results folder and its parent); return the suite's sha256 and the plugin files
    that could not be found."""
    suite = results / "suite.yaml"
    if not suite.is_file():
        return "", []
    text = suite.read_text()
    atomic_write_text(dest / "suite.yaml", text)
    try:
        named = (yaml.safe_load(text) or {}).get("plugins") or []
    except (yaml.YAMLError, AttributeError):
        named = []
    missing = []
    for p in named:
        found = next((c for c in (Path(p), results / p, results.parent / p) if c.is_file()), None)
        if found is None:
            missing.append(str(p))
        else:  # next to the suite as it names it, so `kdbench run suite.yaml` finds it
            inside = not Path(p).is_absolute() and ".." not in Path(p).parts
            atomic_write_text(dest / p if inside else dest / "plugins" / Path(p).name, found.read_text())
    return hashlib.sha256(text.encode()).hexdigest(), missing


def _figure_text(path: Path) -> str:
    return "each tuned method's trials on the dev seeds" if path.stem.startswith("tuning-") else "metric vs FLOPs"


def _readme(dest: Path, boards: list, info: dict, suite_sha: str, missing: list[str],
            figures: list[Path], runs: int, tuned: bool = False) -> str:
    """The report folder's README.md: what it holds, from where (eight arguments: each a part of it)."""
    git = info.get("git") or {}
    commit = f"{git['commit']}{' (with uncommitted changes)' if git.get('dirty') else ''}" if git else "not a git checkout"
    try:
        name = (yaml.safe_load((dest / "suite.yaml").read_text()) or {}).get("name", "suite")
    except (OSError, yaml.YAMLError, AttributeError):
        name = "suite"
    tasks = ", ".join(b.task for b in boards)
    budgets = "; ".join(f"{b.task}: {b.budget:.3g} FLOPs" for b in boards if b.budget is not None)
    lines = [
        f"# kdbench report: {name}", "",
        f"Made by kdbench {info['kdbench']} (git {commit}), torch {info['torch']}, python {info['python']}, "
        f"from {runs} run folders ({tasks}).", "",
        "| file | what |", "|---|---|",
        f"| `{HTML}` | all of it in one page to open in a browser: sortable tables, interactive curves, tuning, "
        "provenance (self-contained, nothing fetched) |",
        "| `tables/leaderboard.md` | the leaderboard, GitHub markdown |",
        "| `tables/leaderboard.tex` | the same as LaTeX tables (needs `booktabs`, `graphicx`) |",
        "| `tables/leaderboard.csv`, `.json` | the same numbers, machine-readable (unrounded) |",
        *(["| `tables/tuning.{md,tex,csv,json}` | the tuning sweeps: protocol, every trial on the dev seeds, "
           "sensitivity of each method to its settings |"] if tuned else []),
        *[f"| `figures/{p.name}` | {_figure_text(p)} |" for p in figures],
        "| `suite.yaml` | the suite as run |",
        "| `versions.json` | versions of everything that made these results and this report |",
        "| `results/` | every run folder's config, summary and curve; teacher summaries and curves; tuning records |",
        "",
        "## Reproduce", "",
        "Install the same versions (`versions.json` lists all of them):", "",
        "```bash",
        f"pip install torch=={info['torch'].split('+')[0]}",
        f"pip install kdbench=={info['kdbench']}" + (f"   # or a checkout of commit {git['commit']}" if git else ""),
        "```", "",
        "From this folder, rebuild these tables and figures from the stored run folders alone:", "",
        "```bash", "kdbench report results/ ../report-again/", "```", "",
        "or rerun the experiments (teachers and students) and report them:", "",
        "```bash", "kdbench run suite.yaml -o ../results-rerun/", "kdbench report ../results-rerun/ ../report-rerun/",
        "```", "",
    ]
    if missing:
        lines += [f"The suite names plugin files that were not found when this report was made: "
                  f"{', '.join(missing)}; the rerun needs them next to the suite.", ""]
    lines += [
        "## How to cite these results", "",
        f"Results from kdbench {info['kdbench']}" + (f" (commit {git['commit'][:12]})" if git else "")
        + f", suite `{name}` (sha256 {suite_sha[:16]}), budget {budgets or 'see tables'}; FLOPs measured with "
        "torch.utils.flop_counter (student forward + backward + teacher forwards for targets; teacher training "
        "reported separately). Mean ± std over seeds; failed or diverged runs are listed under each table.", "",
    ]
    return "\n".join(lines)


def write_report(results: Path, dest: Path, baseline: Optional[str] = None, ci: bool = False,
                 teacher: bool = False, all_runs: bool = False, force: bool = False) -> Path:
    """Write the report folder ``dest`` for results folder ``results``; return ``dest``.
    ``all_runs`` reports every run of the folder, not only the last suite's; ``force``
    writes into a non-empty folder that is not a report."""
    results, dest = Path(results), Path(dest)
    if not build_leaderboard(load_results(results, all_runs), baseline, ci).boards:
        raise UserError(f"{results}: no runs to report")
    prepare_destination(results, dest, force)
    copied = dest / "results"
    runs = copy_results(results, copied)
    suite_sha, missing = _suite_files(results, dest)
    res = load_results(copied, all_runs)
    board = build_leaderboard(res, baseline, ci)
    for ext, fmt in TABLE_FORMATS.items():
        atomic_write_text(dest / "tables" / f"leaderboard.{ext}", render(board, fmt))
    tuning = write_tuning_tables(res, dest / "tables")
    figures = write_figures(res, dest / "figures", teacher=teacher)
    info = versions(res)
    atomic_write_json(dest / "versions.json", {**info, "suite_sha256": suite_sha})
    write_html_report(res, dest / HTML, baseline, ci, info)
    atomic_write_text(dest / "README.md", _readme(dest, board.boards, info, suite_sha, missing, figures, runs,
                                                  bool(tuning)))
    return dest
