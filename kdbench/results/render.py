"""Leaderboards as text: a :class:`kdbench.results.leaderboard.Leaderboard` as markdown, LaTeX, CSV or JSON.

Every table cell is first written as plain text (``0.7000 ± 0.0816``, ``Δ vs
one-shot``); markdown (tabulate's GitHub tables) escapes ``|`` and bolds the best
cells with ``**``; LaTeX goes through pandas' ``Styler.to_latex`` (booktabs rules,
Styler's LaTeX escaping, ``\\textbf`` for the best cells, math for ±, Δ and the
arrows). CSV and JSON carry the unrounded numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
from tabulate import tabulate

from kdbench import __version__
from kdbench.errors import UserError
from kdbench.files import atomic_write_text
from kdbench.formats import fmt_bytes, fmt_flops, is_missing, latex_escape
from kdbench.results.claims import CLAIMS_NOTE, HEADERS, ClaimsReport, claim_rows
from kdbench.results.intervals import T_INTERVAL, TEACHER_MEANS
from kdbench.results.leaderboard import FIDELITY, Board, Leaderboard
from kdbench.tuning.report import protocol_lines, sensitivity_markdown

FLOP_CONVENTION = ("FLOPs are measured with torch.utils.flop_counter.FlopCounterMode on one real step per phase: "
                   "student forward + backward (only the layers that ran) + teacher forwards and projections "
                   "for targets; optimizer arithmetic and evaluation are not counted.")
CURVE_CONVENTION = ("AUC is the area under the metric-vs-FLOPs curve divided by the FLOPs it spans (the mean metric "
                    "over training; trapezoids between evaluations). FLOPs to target: FLOPs at the first evaluation "
                    "reaching the target, mean over the seeds that reached it.")
FIDELITY_NOTE = ("Agreement and KL(T‖S): against the final teacher on the evaluation set (masked positions for MLM "
                 "tasks), at the last evaluation; the teacher's forwards for them are an evaluation cost, not charged "
                 "to the budget. A method that trains without a teacher (labels) is measured against the task's "
                 "teacher when the results folder holds it.")
FORMATS = {"md": "md", "markdown": "md", "latex": "tex", "tex": "tex", "csv": "csv", "json": "json"}
# plain-text symbols of the cells, and how LaTeX writes them
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "‖": r"$\|$"}
FIDELITY_HEADERS = {"agreement": "Agreement ↑", "teacher_kl": "KL(T‖S) ↓"}


def plus_minus(mean: float, std: float, fmt: str = ".4f", sign: str = "") -> str:
    """``mean ± std`` as a cell (``-`` without a mean, the mean alone without a std)."""
    if is_missing(mean):
        return "-"
    return f"{mean:{sign}{fmt}}" + ("" if is_missing(std) else f" ± {std:{fmt}}")


def _seeds(r: dict) -> str:
    note = ", ".join(f"{k} {st}" for st, k in r["statuses"].items())
    return f"{r['n']}" + (f" ({note})" if note else "")


@dataclass(frozen=True)
class Column:
    """A leaderboard column: its name (what ``--columns`` selects it by), its header and cells as plain
    text, and (for best marking) the numeric key, its display (ties are judged on what is shown) and
    which way is better: ``"metric"`` (the task's direction), ``"higher"``, ``"lower"`` or ``None`` (not marked)."""

    name: str
    header: Callable[[Board], str]
    cell: Callable[[dict, Board], str]
    key: Optional[str] = None
    show: Callable[[float], str] = lambda v: f"{v:.4f}"
    better: Optional[str] = None


def interval_text(low, high) -> str:
    """An interval as a cell: ``[low, high]``, ``-`` without one."""
    return "-" if is_missing(low) else f"[{low:.4f}, {high:.4f}]"


def many_teachers(board: Board) -> bool:
    """Whether ``board``'s runs span two or more teacher seeds (the teacher columns and table are shown)."""
    return len(board.teacher_seeds) >= 2


def _teacher_columns(board: Board) -> list[Column]:
    """With several teacher seeds: how many have a finished run, and the spread of their means."""
    if not many_teachers(board):
        return []
    return [Column("teachers", lambda b: "Teachers", lambda r, b: f"{r['teachers']}"),
            Column("between_teachers", lambda b: "Between teachers", lambda r, b: "-" if is_missing(r["teacher_std"])
                   else f"{r['teacher_std']:.4f}")]


def _baseline_columns(board: Board) -> list[Column]:
    """The paired comparison against the baseline: difference, its interval (--ci, several
    teacher seeds), pairs better, and with several teacher seeds the teachers better."""
    if board.baseline is None:
        return []
    cols = [Column("delta", lambda b: f"Δ vs {b.baseline}", lambda r, b: "baseline" if r["method"] == b.baseline
                   else plus_minus(r.get("delta"), r.get("delta_std"), sign="+"))]
    if board.ci and many_teachers(board):
        cols.append(Column("delta_ci", lambda b: "Δ 95% CI", lambda r, b: "-" if r["method"] == b.baseline
                           else interval_text(r.get("delta_ci_low"), r.get("delta_ci_high"))))
    cols.append(Column("better_in", lambda b: "Better in",
                       lambda r, b: "-" if r["method"] == b.baseline or is_missing(r.get("pairs")) or not r.get("pairs")
                       else f"{r['better']}/{r['pairs']}" + (f" ({r['tied']} tied)" if r["tied"] else "")))
    if many_teachers(board):
        cols.append(Column("teachers_better", lambda b: "Teachers better",
                           lambda r, b: "-" if r["method"] == b.baseline or is_missing(r.get("teachers_paired"))
                           or not r.get("teachers_paired") else f"{r['teachers_better']}/{r['teachers_paired']}"))
    return cols


def columns(board: Board) -> list[Column]:
    """The columns of ``board``'s table, in order."""
    cols = [
        Column("method", lambda b: "Method", lambda r, b: r["method"]),
        Column("version", lambda b: "Version", lambda r, b: r["version"]),
        Column("metric", lambda b: f"{b.metric} {'↑' if b.higher_is_better else '↓'}",
               lambda r, b: plus_minus(r["mean"], r["std"]), key="mean", better="metric"),
        Column("seeds", lambda b: "Seeds", lambda r, b: _seeds(r)),
        *_teacher_columns(board),
    ]
    if board.ci:
        cols.append(Column("ci", lambda b: "95% CI", lambda r, b: interval_text(r["ci_low"], r["ci_high"])))
    if board.target is not None:
        cols += [
            Column("to_target", lambda b: f"FLOPs to {b.target:g}", lambda r, b: fmt_flops(r["to_target"]),
                   key="to_target", show=fmt_flops, better="lower"),
            Column("reached", lambda b: "Reached", lambda r, b: f"{r['reached']}/{r['runs']}"),
        ]
    cols += [
        Column("auc", lambda b: "AUC", lambda r, b: "-" if is_missing(r["auc"]) else f"{r['auc']:.4f}", key="auc",
               better="metric"),
        *[Column(k, lambda b, k=k: FIDELITY_HEADERS[k], lambda r, b, k=k: plus_minus(r[k], r[f"{k}_std"]), key=k,
                 better="higher" if FIDELITY[k] else "lower") for k in board.fidelity],
        Column("steps", lambda b: "Steps", lambda r, b: "-" if is_missing(r["steps"]) else f"{r['steps']:.0f}"),
        Column("student_flops", lambda b: "Student FLOPs", lambda r, b: fmt_flops(r["flops"])),
        Column("total_flops", lambda b: "Total FLOPs", lambda r, b: fmt_flops(r["total_flops"])),
        *([Column("tuning_flops", lambda b: "Tuning FLOPs", lambda r, b: fmt_flops(r["tuning_flops"]) if r["tuned"] else "not tuned")]
          if board.tuning is not None else []),
        *([Column("saved_flops", lambda b: "Teacher FLOPs saved", lambda r, b: fmt_flops(r["saved_flops"]))]
          if board.logit_cache is not None else []),
        Column("checkpoints", lambda b: "Ckpts stored", lambda r, b: f"{r['checkpoints']:.0f} ({fmt_bytes(r['checkpoint_bytes'])})"
               if r["checkpoints"] > 0 else "0"),
        Column("wall", lambda b: "Wall (s)", lambda r, b: "-" if is_missing(r["wall_time"]) else f"{r['wall_time']:.1f}",
               key="wall_time", show=lambda v: f"{v:.1f}", better="lower"),
    ]
    return cols + _baseline_columns(board)


COLUMN_NAMES = ("method", "version", "metric", "seeds", "teachers", "between_teachers", "ci", "to_target", "reached",
                "auc", *FIDELITY, "steps", "student_flops", "total_flops", "tuning_flops", "saved_flops", "checkpoints", "wall",
                "delta", "delta_ci", "better_in", "teachers_better")
# LaTeX's default: what a paper's table shows (the rest stays in the markdown, CSV and JSON)
PAPER_COLUMNS = ("method", "metric", "seeds", "ci", "to_target", "auc", "agreement", "student_flops", "delta",
                 "delta_ci", "teachers_better")


def check_columns(names: Optional[Sequence[str]]) -> Optional[tuple[str, ...]]:
    """``--columns`` as a tuple of column names (None: the format's default; ``all``: every column);
    an unknown name is a UserError listing the allowed ones."""
    if names is None:
        return None
    names = tuple(n.strip() for n in names if n.strip())
    if names == ("all",):
        return COLUMN_NAMES
    unknown = [n for n in names if n not in COLUMN_NAMES]
    if unknown or not names:
        raise UserError(f"--columns: {', '.join(unknown) or 'none given'}: not a leaderboard column; allowed: "
                        f"all, {', '.join(COLUMN_NAMES)} (a column the table lacks, e.g. ci without --ci, is left out)")
    return names


def best_rows(board: Board, col: Column) -> set[int]:
    """Row positions holding the column's best shown value; none when fewer than two
    rows have values or all of them tie."""
    if col.better is None:
        return set()
    shown = {i: col.show(v) for i, v in enumerate(board.methods[col.key]) if not is_missing(v)}
    if len(set(shown.values())) < 2:
        return set()
    values = {i: float(board.methods[col.key].iloc[i]) for i in shown}
    lower = col.better == "lower" or (col.better == "metric" and not board.higher_is_better)
    best = (min if lower else max)(values.values())
    return {i for i in shown if shown[i] == col.show(best)}


def table(board: Board, only: Optional[Sequence[str]] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``board``'s table as plain-text cells (headers as columns) and a same-shaped
    boolean frame marking the best cells; ``only``: these columns, in this order."""
    cols = columns(board)
    if only is not None:
        by_name = {c.name: c for c in cols}
        cols = [by_name[n] for n in only if n in by_name]
    records = board.methods.to_dict("records")
    headers = [c.header(board) for c in cols]
    cells = pd.DataFrame([[c.cell(r, board) for c in cols] for r in records], columns=headers)
    best = pd.DataFrame([[i in m for m in (best_rows(board, c) for c in cols)] for i in range(len(records))],
                        columns=headers, dtype=bool)
    return cells, best


# ---------------------------------------------------------------- the text around the tables

def _budget_text(board: Board) -> str:
    spec = board.budget_spec or {}
    if spec.get("student_steps"):
        return (f"Budget: {spec['student_steps']} student steps per run for every method (equal steps: FLOPs are "
                "reported, not matched; Student FLOPs: what each method's steps cost; Total FLOPs: plus the "
                "teacher's training).")
    how = f" (the FLOPs of {spec['steps']} steps of {spec['method']})" if "steps" in spec else ""
    counts = ("student FLOPs plus the teacher's training" if spec.get("counts") == "total"
              else "student FLOPs only")
    amount = (f"{fmt_flops(board.budget)} FLOPs per student run{how}" if len(board.budgets) <= 1 else
              f"{' / '.join(fmt_flops(b) for b in board.budgets)} FLOPs per student run (the configs differ)")
    return (f"Budget: {amount}, counting {counts}. "
            "Student FLOPs: the run's own steps; Total FLOPs: plus the teacher's training (the cached "
            "teacher's recorded cost, or the teacher co-trained inside the run by online and pro-kd).")


def _teacher_text(t: dict, metric: str) -> str:
    value = (t.get("metrics") or {}).get(metric)
    value = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
    if t.get("source"):
        source = f"loaded from {t['source']}"
    else:
        source = f"trained {t.get('steps')} steps, {fmt_flops(t.get('flops'))} FLOPs, {t.get('wall_time', 0):.1f} s"
    ckpts = t.get("checkpoints") or []
    stored = f"; {len(ckpts)} checkpoints stored ({fmt_bytes(t.get('checkpoint_bytes') or 0)})" if ckpts else ""
    return f"Teacher `{t['teacher_id']}`: {metric} {value}; {source} (not part of the budget){stored}."


def _problem_text(p: dict) -> str:
    what = {"failed": f"failed: {p.get('error')}", "diverged": f"diverged at step {p.get('diverged_at')}",
            "incomplete": "incomplete (no summary yet)"}.get(p["status"], p["status"])
    return f"run {p['run_id']} ({p['method']}, seed {p['seed']}) {what}"


def _configs_text(label: str, rows: dict[str, dict[str, str]]) -> str:
    differ = "; ".join(f"{row}: " + ", ".join(f"{k}={v}" for k, v in params.items()) for row, params in rows.items())
    return (f"{label}: {len(rows)} configs of this method in this task, each its own row (never averaged "
            f"together); they differ in {differ}.")


def _ci_text(board: Board) -> str:
    """How the 95% intervals of ``board`` were computed (those its rows used)."""
    used = set(board.methods["ci_method"].dropna()) if "ci_method" in board.methods else set()
    if board.baseline is not None and many_teachers(board) and "delta_ci_method" in board.methods:
        used |= set(board.methods["delta_ci_method"].dropna())
    ways = []
    if TEACHER_MEANS in used:
        ways.append("with two or more teacher seeds, the Student-t interval over the per-teacher means (teacher "
                    "seeds - 1 degrees of freedom: the teacher is a random factor)")
    if T_INTERVAL in used:
        ways.append("with one teacher seed, the Student-t interval of the mean over the seeds")
    what = "95% CI" + (" and Δ 95% CI (of the paired difference)" if many_teachers(board) and board.baseline else "")
    return f"{what}: " + ("; ".join(ways) if ways else "none (fewer than two finished seeds)") + "."


def _teachers_note(board: Board) -> str:
    better = (f"; Teachers better: teacher seeds on which the method's mean paired difference beats "
              f"{board.baseline}, of those with a pair" if board.baseline is not None else "")
    return ("Teachers: teacher seeds with a finished run; Between teachers: std of the per-teacher means (each "
            f"over that teacher's student seeds){better}.")


def _code_text(label: str, versions: dict[str, int]) -> str:
    """The warning under a table whose row ``label`` mixes runs of several versions of plugin code."""
    counts = "; ".join(f"{n} run(s) with {code}" for code, n in versions.items())
    return (f"Warning: `{label}` mixes runs of {len(versions)} versions of its plugin code ({counts}): its mean is "
            "over all of them; `kdbench run SUITE --rerun-changed` redoes the runs of other code than installed.")


def _generation_text(generation: dict[str, str]) -> str:
    """The note under a table with methods that generate: what each generates, and that it is charged."""
    said = "; ".join(f"{label}: {what}" for label, what in generation.items())
    return (f"Generation is charged to the method that generates ({said}): sampling runs inside the measured step "
            "(kdbench's decoder with a key/value cache, other models recomputing the prefix), and so does the "
            "teacher's scoring of what the student sampled.")


def logit_cache_note(cache: dict) -> str:
    """The line under a table whose runs read the teacher's top-k logit cache (kdbench.run.logit_cache)."""
    ks = "/".join(str(k) for k in cache["top_k"])
    return (f"Teacher logits from a top-{ks} cache (tail mass spread evenly over the other tokens); teacher-forward "
            f"FLOPs saved: {fmt_flops(cache['saved_flops'])} (still charged to the budget).")


def notes(board: Board) -> list[str]:
    """The lines under a table: teachers, budget and conventions, intervals, fidelity, rows
    split by config, students kept, rows mixing versions of plugin code, runs not in the means."""
    direction = "higher" if board.higher_is_better else "lower"
    lines = [_teacher_text(t, board.metric) for t in board.teachers]
    lines.append(f"{_budget_text(board)} {FLOP_CONVENTION}")
    target = (f" Target {board.metric} {'>=' if board.higher_is_better else '<='} {board.target:g}."
              if board.target is not None else " No target set (suite `eval.target`).")
    over = "finished (teacher seed, seed) runs" if many_teachers(board) else "finished seeds"
    lines.append(f"{board.metric}: {direction} is better; mean ± std over {over}; best per column in bold."
                 f"{target} {CURVE_CONVENTION}")
    if board.generation:
        lines.append(_generation_text(board.generation))
    if many_teachers(board):
        lines.append(_teachers_note(board))
    if board.logit_cache is not None:
        lines.append(logit_cache_note(board.logit_cache))
    if board.ci:
        lines.append(_ci_text(board))
    if board.fidelity:
        lines.append(FIDELITY_NOTE)
    if board.baseline is not None:
        lines.append(f"Δ vs {board.baseline}: paired difference over matching (teacher seed, seed) pairs where both "
                     f"finished; Better in: pairs where the method beats {board.baseline} (ties counted apart).")
    lines += [_configs_text(label, rows) for label, rows in board.configs.items()]
    kept = int(board.methods["students"].sum()) if "students" in board.methods else 0
    if kept:
        lines.append(f"Students kept: {kept} of {int(board.methods['runs'].sum())} runs, "
                     f"{fmt_bytes(float(board.methods['student_bytes'].sum()))} in all (runs/<id>/student.safetensors "
                     "and student.json; `kdbench export RUN_ID OUT --results RESULTS` writes one as a model to load).")
    if board.tuning is not None:
        lines += protocol_lines(board.tuning, [m for m in board.methods.method if m not in board.tuning.flops])
    lines += [_code_text(label, versions) for label, versions in board.code_mixed.items()]
    if board.problems:
        lines.append("Not in the means: " + "; ".join(_problem_text(p) for p in board.problems) + ".")
    return lines


def folder_notes(board: Leaderboard) -> list[str]:
    """The lines after all tables: runs of the folder not shown, and run folders that could not be read."""
    lines = []
    if board.manifest_problem:
        lines.append(f"{board.manifest_problem}: every run of the folder is shown.")
    if board.outside:
        lines.append(f"Shown: the runs of suite `{board.suite}` as last run into this folder. The folder holds "
                     f"{board.outside} other run folder(s) (other suites, or earlier versions of this one): "
                     "`kdbench leaderboard RESULTS --all` shows every run, a row per config.")
    if board.not_started:
        lines.append(f"{board.not_started} run(s) of suite `{board.suite}` have no folder yet (not started).")
    if board.tuning_runs:
        lines.append(f"{board.tuning_runs} tuning runs on dev seeds, not shown (`kdbench tune-report RESULTS` "
                     "lists the trials).")
    if board.teacher_problems:
        lines.append("Teacher folders whose records do not verify (`kdbench run` rewrites them or retrains the "
                     "teacher): " + "; ".join(f"teachers/{t}: {why}" for t, why in board.teacher_problems.items())
                     + ".")
    if board.unreadable:
        lines.append("Run folders that could not be read, left out of the tables (`kdbench run` redoes a run of "
                     "the suite it runs): " + "; ".join(f"runs/{u['run_id']}: {u['reason']}"
                                                        for u in board.unreadable) + ".")
    return lines


# ---------------------------------------------------------------- formats


def latex_symbols(text: str) -> str:
    """Escaped text with the plain-text symbols as math."""
    for symbol, math_ in LATEX_SYMBOLS.items():
        text = text.replace(symbol, math_)
    return text


def latex_prose(text: str) -> str:
    """Prose (notes, captions) for LaTeX: escaped, code marks dropped, symbols as math."""
    text = latex_symbols(latex_escape(text.replace("`", "")))
    return text.replace(r"\textgreater{}=", r"$\geq$").replace(r"\textless{}=", r"$\leq$")


def md_escape(text: str) -> str:
    """``text`` for a markdown table cell (``|`` escaped)."""
    return str(text).replace("|", "\\|")


def teacher_table(board: Board) -> pd.DataFrame:
    """``board``'s final metric per method (rows, best first) and teacher seed (columns
    ``teacher seed T``): mean ± std over that teacher's finished student seeds, and their count."""
    frame = board.per_teacher
    cells = {(r.method, r.teacher_seed): "-" if not r.n else f"{plus_minus(r.mean, r.std)} ({r.n})"
             for r in frame.itertuples()}
    return pd.DataFrame([[cells.get((m, t), "-") for t in board.teacher_seeds] for m in board.methods.method],
                        index=pd.Index(list(board.methods.method), name="Method"),
                        columns=[f"teacher seed {t}" for t in board.teacher_seeds])


def _markdown_teachers(board: Board) -> list[str]:
    cells = teacher_table(board)
    text = tabulate([[md_escape(m), *map(md_escape, row)] for m, row in zip(cells.index, cells.values.tolist())],
                    headers=["Method", *cells.columns], tablefmt="github", disable_numparse=True,
                    colalign=("left",) + ("right",) * len(cells.columns))
    return [f"Per teacher seed: {board.metric}, mean ± std over its finished student seeds (their number).", "",
            text, ""]


def _align(headers) -> list[str]:
    """Method and version left, numbers right."""
    return ["left" if h in ("Method", "Version") else "right" for h in headers]


def _markdown(board: Leaderboard, only: Optional[Sequence[str]] = None) -> str:
    parts = []
    for b in board.boards:
        cells, best = table(b, only)
        rows = [[f"**{md_escape(v)}**" if bold else md_escape(v) for v, bold in zip(row, marks)]
                for row, marks in zip(cells.values.tolist(), best.values.tolist())]
        align = _align(cells.columns)
        parts += [f"### {b.task}\n", tabulate(rows, headers=[md_escape(h) for h in cells.columns], tablefmt="github",
                                               disable_numparse=True, colalign=align), ""]
        if many_teachers(b) and b.per_teacher is not None:
            parts += _markdown_teachers(b)
        for line in notes(b):
            parts += [line, ""]
        if b.tuning is not None:
            parts += [sensitivity_markdown(b.tuning), ""]
    for line in folder_notes(board):
        parts += [line, ""]
    if board.claims is not None and board.claims.claims:
        parts += _claims_markdown(board.claims)
    return "\n".join(parts)


def _claims_markdown(report: ClaimsReport) -> list[str]:
    """The claims table (the leaderboard's last section) as markdown lines, verdicts in bold."""
    rows = [[md_escape(cell) for cell in row] for row in claim_rows(report)]
    for row in rows:
        if row[-1]:
            summary, _, verdict = row[-1].rpartition(": ")
            row[-1] = f"{summary}: **{verdict}**"
    return ["### Claims\n", tabulate(rows, headers=list(HEADERS), tablefmt="github", disable_numparse=True),
            "", CLAIMS_NOTE, ""]


def _tabular(b: Board, only: Sequence[str]) -> str:
    cells, best = table(b, only)
    styler = cells.style.hide(axis="index").format(escape="latex", formatter=latex_symbols) \
        .format_index(escape="latex", formatter=latex_symbols, axis=1) \
        .apply(lambda _: best.replace({True: "textbf: --rwrap;", False: ""}), axis=None)
    column_format = "".join(a[0] for a in _align(cells.columns))
    return styler.to_latex(hrules=True, column_format=column_format).rstrip("\n")


def _latex(board: Leaderboard, only: Sequence[str] = PAPER_COLUMNS) -> str:
    parts = ["% kdbench leaderboard; needs \\usepackage{booktabs,graphicx}"]
    for i, b in enumerate(board.boards):
        lines = notes(b) + (folder_notes(board) if i == len(board.boards) - 1 else [])
        text = " ".join(latex_prose(n) for n in lines)
        parts += ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(b.task)}: final "
                  f"{latex_escape(b.metric)} at equal student FLOPs.}}", f"\\label{{tab:{b.task}}}",
                  # shrink to the line width only when wider
                  "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%", _tabular(b, only) + "}",
                  "\\par\\smallskip", f"\\begin{{minipage}}{{\\linewidth}}\\footnotesize\\raggedright {text}\\par",
                  "\\end{minipage}", "\\end{table}", ""]
    return "\n".join(parts)


def _records(board: Leaderboard) -> list[dict]:
    out = []
    for b in board.boards:
        best = {c.key: best_rows(b, c) for c in columns(b) if c.key}
        for i, r in enumerate(b.methods.to_dict("records")):
            out.append({"task": b.task, "role": "student", "metric": b.metric, "higher_is_better": b.higher_is_better,
                        "target": b.target, "budget_flops": b.budget, "baseline": b.baseline,
                        **{k: v for k, v in r.items() if k != "statuses"},
                        **{f"n_{st}": k for st, k in r["statuses"].items()},
                        "best": ",".join(k for k, rows in best.items() if i in rows)})
        for t in b.teachers:
            out.append({"task": b.task, "role": "teacher", "method": f"teacher:{t['teacher_id']}",
                        "metric": b.metric, "mean": (t.get("metrics") or {}).get(b.metric),
                        "flops": t.get("flops"), "steps": t.get("steps"), "wall_time": t.get("wall_time"),
                        "checkpoints": len(t.get("checkpoints") or []),
                        "checkpoint_bytes": t.get("checkpoint_bytes", 0)})
    return out


def json_ready(obj):
    """``obj`` for json.dumps: NaN, infinities and pandas NA as None, numpy scalars as Python numbers."""
    if obj is pd.NA or (isinstance(obj, float) and not math.isfinite(obj)):
        return None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return json_ready(obj.item())
    return obj


def _json(board: Leaderboard) -> str:
    tasks = []
    for b in board.boards:
        best = {c.key: sorted(best_rows(b, c)) for c in columns(b) if c.key}
        methods = b.methods.to_dict("records")
        for i, m in enumerate(methods):
            m["best"] = [k for k, rows in best.items() if i in rows]
        task = {"task": b.task, "metric": b.metric, "higher_is_better": b.higher_is_better,
                "target": b.target, "budget_flops": b.budget, "budget": b.budget_spec,
                "baseline": b.baseline, "methods": methods,
                "teachers": [{k: v for k, v in t.items() if k != "recipe"} for t in b.teachers],
                "not_in_means": b.problems}
        if many_teachers(b) and b.per_teacher is not None:
            task["teacher_seeds"], task["per_teacher"] = b.teacher_seeds, b.per_teacher.to_dict("records")
        if b.tuning is not None:
            task["tuning"] = {"protocol": b.tuning.protocol, "chosen": b.tuning.chosen,
                              "sensitivity": b.tuning.sensitivity.to_dict("records")}
        if b.logit_cache is not None:
            task["teacher_logits"] = b.logit_cache
        tasks.append({**task, "configs": b.configs} if b.configs else task)
    doc = {"kdbench_version": __version__, "flop_convention": FLOP_CONVENTION, "curve_convention": CURVE_CONVENTION,
           "tasks": tasks}
    # what the folder holds beyond the tables, only when there is something to say
    extra = {"suite": board.suite if board.outside or board.not_started else None,
             "runs_outside_suite": board.outside, "runs_not_started": board.not_started,
             "tuning_runs": board.tuning_runs,
             "unreadable": board.unreadable, "manifest_problem": board.manifest_problem}
    doc.update({k: v for k, v in extra.items() if v})
    if board.claims is not None and board.claims.claims:
        doc["claims"] = board.claims.to_json()["claims"]
    return json.dumps(json_ready(doc), indent=1) + "\n"


def render(board: Leaderboard, fmt: str = "md", columns: Optional[Sequence[str]] = None) -> str:
    """``board`` as ``md``, ``latex``, ``csv`` or ``json`` text. ``columns`` (names from
    :data:`COLUMN_NAMES`, or ``["all"]``) chooses the columns of the md and LaTeX tables and their
    order; by default markdown shows every column and LaTeX a paper's (:data:`PAPER_COLUMNS`). CSV and
    JSON always carry every number."""
    only = check_columns(columns)
    kind = FORMATS.get(fmt)
    if kind is None:
        raise UserError(f"--format: unknown format {fmt!r}; allowed: md, latex, csv, json")
    if not board.boards and kind in ("md", "tex"):
        return "\n\n".join([f"No runs in {board.path}.", *folder_notes(board)]) + "\n"
    if kind == "md":
        return _markdown(board, only)
    if kind == "tex":
        return _latex(board, only or PAPER_COLUMNS)
    if kind == "csv":
        frame = pd.DataFrame(_records(board))
        counts = [c for c in ("runs", "n", "reached", "pairs", "better", "tied", "checkpoints", "students",
                              "teachers", "teachers_better", "teachers_paired") if c in frame]
        frame[counts] = frame[counts].astype("Float64").round().astype("Int64")
        return frame.to_csv(index=False)
    return _json(board)


def write_leaderboard(board: Leaderboard, out: Path, fmt: str = "md", columns: Optional[Sequence[str]] = None) -> Path:
    """Write ``out/leaderboard.<ext>`` for ``fmt`` (with ``columns``, see :func:`render`) atomically; return its
    path. Callers write nothing for a leaderboard without boards (see ``kdbench leaderboard``)."""
    path = Path(out) / f"leaderboard.{FORMATS.get(fmt, fmt)}"
    atomic_write_text(path, render(board, fmt, columns))
    return path
