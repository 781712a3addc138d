"""Leaderboards from a results folder: one table per task, a row per method.

Everything is computed from the run folders alone (config.json, summary.json,
curve.json) and the teacher summaries, so tables can be rebuilt anywhere the
folder is copied. The pipeline is:

- :func:`run_table`: one row per run folder, with per-run derived numbers
  (final metric, FLOPs to reach the target, area under the metric-vs-FLOPs curve);
- :func:`build_boards`: per task, a row per method (pandas aggregation over
  seeds), the teachers, the runs that did not finish, and the paired comparison
  against a baseline method;
- :func:`render`: the boards as markdown, LaTeX, CSV or JSON.

Adding a column for another number of a run's summary.json (say ``total_flops``)
is its key in :data:`RUN_MEANS` (read from every summary, averaged over finished
seeds) plus one :class:`Column` in :func:`_columns`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import yaml
from tabulate import tabulate

from . import __version__
from .errors import UserError
from .store import atomic_write_text, load_teachers, read_json

FLOP_CONVENTION = ("FLOPs are measured with torch.utils.flop_counter.FlopCounterMode on one real step per phase: "
                   "student forward + backward (only the layers that ran) + teacher forwards and projections "
                   "for targets; optimizer arithmetic and evaluation are not counted.")
CURVE_CONVENTION = ("AUC is the area under the metric-vs-FLOPs curve divided by the FLOPs it spans (the mean metric "
                    "over training; trapezoids between evaluations). FLOPs to target: FLOPs at the first evaluation "
                    "reaching the target, mean over the seeds that reached it.")
FORMATS = {"md": "md", "markdown": "md", "latex": "tex", "tex": "tex", "csv": "csv", "json": "json"}
DEFAULT_BASELINE = "one-shot"
# per-run numbers averaged over a method's finished seeds: summary.json keys, and the derived ones
RUN_MEANS = ("flops", "total_flops", "steps", "wall_time", "auc")
DERIVED = ("auc",)


# ---------------------------------------------------------------- per-run numbers

def flops_to_target(curve: list[dict], metric: str, target: Optional[float], higher_is_better: bool) -> float:
    """FLOPs at the first curve point whose ``metric`` reaches ``target`` (NaN if none does)."""
    if target is None:
        return math.nan
    for point in curve:
        v = point.get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v >= target if higher_is_better else v <= target):
            return float(point["flops"])
    return math.nan


def curve_auc(curve: list[dict], metric: str) -> float:
    """Area under ``metric`` against FLOPs (trapezoids) divided by the FLOPs spanned: the
    curve's mean metric over training, in the metric's units. NaN with fewer than two points."""
    pts = [(float(p["flops"]), float(p[metric])) for p in curve
           if isinstance(p.get(metric), (int, float)) and math.isfinite(p[metric]) and p.get("flops") is not None]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return math.nan
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))
    return area / (pts[-1][0] - pts[0][0])


def phase_boundaries(summary: dict, curve: list[dict]) -> list[float]:
    """FLOPs at which a run moves from one phase to the next (internal boundaries only).

    From the summary's phases (steps x per-step FLOPs, exactly what the engine
    charged); for folders without them, from the curve: the last point recorded
    under each phase name before the name changes."""
    out: list[float] = []
    phases = summary.get("phases") or []
    if phases and all("steps" in p and "step_flops" in p for p in phases):
        total, ends = 0.0, []
        for p in phases:
            total += float(p["steps"]) * float(p["step_flops"])
            ends.append(total)
        out = ends[:-1]
        end = total
    else:
        for a, b in zip(curve, curve[1:]):
            if a.get("phase") != b.get("phase"):
                out.append(float(a["flops"]))
        end = float(curve[-1]["flops"]) if curve else 0.0
    return sorted({x for x in out if 0 < x < end})


def _load_folders(out: Path) -> list[dict]:
    """Every run folder with a readable config; a missing or unreadable summary reads as
    status ``incomplete`` so such runs are reported, not dropped."""
    runs = []
    for d in sorted((Path(out) / "runs").glob("*")):
        config = read_json(d / "config.json")
        if not isinstance(config, dict):
            continue
        summary = read_json(d / "summary.json")
        if not isinstance(summary, dict):
            summary = {"status": "incomplete"}
        runs.append({"config": config, "summary": summary, "curve": read_json(d / "curve.json") or [], "dir": d})
    return runs


def run_table(out: Path) -> pd.DataFrame:
    """One row per run folder: identity, status, final metric, costs, and the per-run
    derived numbers (``to_target``, ``auc``). ``curve`` and ``phases`` are kept for plots."""
    rows = []
    for r in _load_folders(out):
        c, s, curve = r["config"], r["summary"], r["curve"]
        metrics = s.get("metrics") or {}
        rows.append({
            "run_id": r["dir"].name, "task": c.get("task_label", c.get("task")),
            "method": c.get("method_label", c.get("method")), "method_name": c.get("method"),
            "version": str(c.get("method_version", "")), "seed": c.get("seed"),
            "teacher_seed": c.get("teacher_seed", 0), "teacher_id": c.get("teacher_id"),
            "status": s.get("status", "incomplete"), "error": s.get("error"), "diverged_at": s.get("diverged_at"),
            "metric": s.get("metric"), "higher_is_better": s.get("higher_is_better"),
            "target": (c.get("eval") or {}).get("target"), "budget_spec": c.get("budget"),
            "metrics": metrics, "budget": s.get("budget_flops"), "device": s.get("device"),
            "checkpoints": s.get("checkpoints_used", 0), "checkpoint_bytes": s.get("checkpoint_bytes", 0),
            "kdbench_version": c.get("kdbench_version"), "curve": curve, "phases": s.get("phases") or [],
            "summary": s, **{k: s.get(k) for k in RUN_MEANS if k not in DERIVED},
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # a failed run has no metric in its summary: take the task's from its other runs
    for col, default in (("metric", "accuracy"), ("higher_is_better", True)):
        known = df.dropna(subset=[col]).groupby("task")[col].first()
        df[col] = [v if v is not None and v == v else known.get(t, default) for t, v in zip(df.task, df[col])]
    df["higher_is_better"] = df.higher_is_better.astype(bool)
    df["value"] = [_num(m.get(metric)) if st == "finished" else math.nan
                   for m, metric, st in zip(df.metrics, df.metric, df.status)]
    df["to_target"] = [flops_to_target(cv, m, t if t == t else None, h)
                       for cv, m, t, h in zip(df.curve, df.metric, df.target, df.higher_is_better)]
    df["auc"] = [curve_auc(cv, m) if st == "finished" else math.nan
                 for cv, m, st in zip(df.curve, df.metric, df.status)]
    for col in ("budget", "checkpoints", "checkpoint_bytes", "target", *RUN_MEANS):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan


# ---------------------------------------------------------------- aggregation

def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile: exact table to 30 degrees of freedom, then
    the Cornish-Fisher expansion around the normal quantile (error < 1e-4)."""
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
             2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
             2.045, 2.042)
    if df < 1:
        return math.nan
    if df <= len(table):
        return table[df - 1]
    z = 1.959963985
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def _mean_std(values: pd.Series) -> tuple[float, float]:
    values = values.dropna().astype(float)
    if values.empty:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def method_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate one task's runs per method: metric mean/std/95% interval over finished
    seeds, FLOPs to target over the seeds that reached it, means of :data:`RUN_MEANS`,
    checkpoints stored, and counts of runs by status. Sorted best first."""
    hib = bool(runs.higher_is_better.iloc[0])
    rows = []
    for method, g in runs.groupby("method", sort=False):
        done = g[g.status == "finished"]
        mean, std = _mean_std(done.value)
        n = int(done.value.notna().sum())
        half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        row = {
            "method": method, "version": ", ".join(sorted(set(g.version))), "runs": len(g), "n": n,
            "statuses": {st: int(k) for st, k in g.status.value_counts().items() if st != "finished"},
            "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half,
            "to_target": float(g.to_target.mean()) if g.to_target.notna().any() else math.nan,
            "reached": int(g.to_target.notna().sum()),
            "checkpoints": float(g.checkpoints.max()) if g.checkpoints.notna().any() else 0.0,
            "checkpoint_bytes": float(g.checkpoint_bytes.max()) if g.checkpoint_bytes.notna().any() else 0.0,
        }
        for col in RUN_MEANS:
            row[col] = float(done[col].mean()) if col in done and done[col].notna().any() else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    sign = 1 if hib else -1  # best first: final metric, then AUC; methods without a finished seed last
    keys = {"_key": (sign * frame["mean"]).fillna(-math.inf), "_auc": (sign * frame["auc"]).fillna(-math.inf)}
    return frame.assign(**keys).sort_values(["_key", "_auc"], ascending=False, kind="stable") \
        .drop(columns=list(keys)).reset_index(drop=True)


def paired(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each method against ``baseline`` over matching (teacher seed, seed) pairs where
    both finished: mean and std of the difference in the final metric and in AUC, the
    number of pairs, and in how many pairs the method is better (the metric's direction)."""
    hib = bool(runs.higher_is_better.iloc[0])
    done = runs[runs.status == "finished"]
    columns = ["method", "delta", "delta_std", "pairs", "better", "tied", "delta_auc"]
    wide = {v: done.groupby(["teacher_seed", "seed", "method"])[v].first().unstack("method") for v in ("value", "auc")}
    if baseline not in wide["value"]:
        return pd.DataFrame(columns=columns)
    rows = []
    for method in wide["value"].columns:
        if method == baseline:
            continue
        d = (wide["value"][method] - wide["value"][baseline]).dropna()
        mean, std = _mean_std(d)
        rows.append({"method": method, "delta": mean, "delta_std": std, "pairs": len(d),
                     "better": int((d > 0).sum() if hib else (d < 0).sum()), "tied": int((d == 0).sum()),
                     "delta_auc": _mean_std(wide["auc"][method] - wide["auc"][baseline])[0]})
    return pd.DataFrame(rows, columns=columns)


@dataclass
class Board:
    """One task's leaderboard: a row per method plus what goes around the table."""

    task: str
    metric: str
    higher_is_better: bool
    target: Optional[float]
    budget: Optional[float]
    budget_spec: Optional[dict]
    methods: pd.DataFrame
    teachers: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    baseline: Optional[str] = None
    ci: bool = False


def suite_order(out: Path, section: str, labels: list[str]) -> list[str]:
    """``labels`` in the order OUT/suite.yaml lists its ``section`` (tasks or methods),
    the others after them in the order given."""
    try:
        suite = yaml.safe_load((Path(out) / "suite.yaml").read_text())
        order = [e.get("label") or e.get("name") for e in suite.get(section, [])]
    except (OSError, yaml.YAMLError, AttributeError):
        order = []
    return sorted(labels, key=lambda t: order.index(t) if t in order else len(order) + labels.index(t))


def build_boards(out: Path, baseline: Optional[str] = None, ci: bool = False,
                 runs: Optional[pd.DataFrame] = None) -> list[Board]:
    """Every task's :class:`Board` in ``out``. ``baseline`` (default one-shot) names the
    method label the others are compared with; naming one that no task has is a UserError."""
    runs = run_table(out) if runs is None else runs
    if runs.empty:
        return []
    if baseline is not None and baseline not in set(runs.method):
        raise UserError(f"--baseline: no runs of method {baseline!r} in {out}; "
                        f"allowed: {', '.join(sorted(set(runs.method)))}")
    base = baseline or DEFAULT_BASELINE
    teachers = load_teachers(out)
    boards = []
    for task in suite_order(out, "tasks", list(dict.fromkeys(runs.task))):
        g = runs[runs.task == task]
        frame = method_frame(g)
        has_base = base in set(g.method)
        if has_base:
            frame = frame.merge(paired(g, base), on="method", how="left")
            frame[["pairs", "better", "tied"]] = frame[["pairs", "better", "tied"]].astype("Int64")
        targets, budgets = g.target.dropna().unique(), g.budget.dropna().unique()
        problems = [{"run_id": r.run_id, "method": r.method, "seed": r.seed, "teacher_seed": r.teacher_seed,
                     "status": r.status, "error": r.error,
                     "diverged_at": None if r.diverged_at is None or r.diverged_at != r.diverged_at
                     else int(r.diverged_at)}
                    for r in g.itertuples() if r.status != "finished"]
        tids = [t for t in dict.fromkeys(g.teacher_id) if isinstance(t, str)]
        boards.append(Board(
            task=task, metric=g.metric.iloc[0], higher_is_better=bool(g.higher_is_better.iloc[0]),
            target=float(targets[0]) if len(targets) else None, budget=float(budgets[0]) if len(budgets) else None,
            budget_spec=next((b for b in g.budget_spec if isinstance(b, dict)), None), methods=frame,
            teachers=[{"teacher_id": t, **teachers[t]} for t in tids if t in teachers],
            problems=problems, baseline=base if has_base else None, ci=ci))
    return boards


# ---------------------------------------------------------------- formatting

def _fmt_flops(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _fmt_bytes(b: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b:.0f} B"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    repl = {"\\": r"\textbackslash{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
            "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))


@dataclass(frozen=True)
class Style:
    """How a text format writes the few non-plain parts of a cell."""

    pm: str
    delta: str
    up: str
    down: str
    bold: Callable[[str], str]
    escape: Callable[[str], str]


MARKDOWN = Style(" ± ", "Δ", "↑", "↓", lambda s: f"**{s}**", lambda s: str(s).replace("|", "\\|"))
LATEX = Style(r" $\pm$ ", r"$\Delta$", r"$\uparrow$", r"$\downarrow$", lambda s: rf"\textbf{{{s}}}", latex_escape)


def _isnan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _pm(mean: float, std: float, style: Style, fmt: str = ".4f", sign: str = "") -> str:
    if _isnan(mean):
        return "-"
    return f"{mean:{sign}{fmt}}" + ("" if _isnan(std) else f"{style.pm}{std:{fmt}}")


def _seeds(r, style: Style) -> str:
    note = ", ".join(f"{k} {st}" for st, k in r["statuses"].items())
    return f"{r['n']}" + (f" ({note})" if note else "")


@dataclass(frozen=True)
class Column:
    """A leaderboard column: its header, how a cell reads, and (for best marking) the
    numeric key, its display (ties are judged on what is shown) and which way is better:
    ``"metric"`` (the task's direction), ``"lower"`` or ``None`` (not marked)."""

    header: Callable[[Board, Style], str]
    cell: Callable[[dict, Board, Style], str]
    key: Optional[str] = None
    show: Callable[[float], str] = lambda v: f"{v:.4f}"
    better: Optional[str] = None


def _columns(board: Board) -> list[Column]:
    arrow = lambda b, s: s.up if b.higher_is_better else s.down  # noqa: E731
    cols = [
        Column(lambda b, s: "Method", lambda r, b, s: s.escape(r["method"])),
        Column(lambda b, s: "Version", lambda r, b, s: s.escape(r["version"])),
        Column(lambda b, s: f"{s.escape(b.metric)} {arrow(b, s)}", lambda r, b, s: _pm(r["mean"], r["std"], s),
               key="mean", better="metric"),
        Column(lambda b, s: "Seeds", lambda r, b, s: _seeds(r, s)),
    ]
    if board.ci:
        cols.append(Column(lambda b, s: "95% CI" if s is MARKDOWN else r"95\% CI",
                           lambda r, b, s: "-" if _isnan(r["ci_low"]) else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"))
    if board.target is not None:
        cols += [
            Column(lambda b, s: f"FLOPs to {b.target:g}", lambda r, b, s: _fmt_flops(r["to_target"]),
                   key="to_target", show=_fmt_flops, better="lower"),
            Column(lambda b, s: "Reached", lambda r, b, s: f"{r['reached']}/{r['runs']}"),
        ]
    cols += [
        Column(lambda b, s: "AUC", lambda r, b, s: "-" if _isnan(r["auc"]) else f"{r['auc']:.4f}",
               key="auc", better="metric"),
        Column(lambda b, s: "Steps", lambda r, b, s: "-" if _isnan(r["steps"]) else f"{r['steps']:.0f}"),
        Column(lambda b, s: "Student FLOPs", lambda r, b, s: _fmt_flops(r["flops"])),
        Column(lambda b, s: "Total FLOPs", lambda r, b, s: _fmt_flops(r["total_flops"])),
        Column(lambda b, s: "Ckpts stored",
               lambda r, b, s: f"{r['checkpoints']:.0f} ({_fmt_bytes(r['checkpoint_bytes'])})"
               if r["checkpoints"] > 0 else "0"),
        Column(lambda b, s: "Wall (s)", lambda r, b, s: "-" if _isnan(r["wall_time"]) else f"{r['wall_time']:.1f}",
               key="wall_time", show=lambda v: f"{v:.1f}", better="lower"),
    ]
    if board.baseline is not None:
        cols += [
            Column(lambda b, s: f"{s.delta} vs {s.escape(b.baseline)}",
                   lambda r, b, s: "baseline" if r["method"] == b.baseline
                   else _pm(r.get("delta"), r.get("delta_std"), s, sign="+")),
            Column(lambda b, s: "Better in",
                   lambda r, b, s: "-" if r["method"] == b.baseline or _isnan(r.get("pairs")) or not r.get("pairs")
                   else f"{r['better']}/{r['pairs']}" + (f" ({r['tied']} tied)" if r["tied"] else "")),
        ]
    return cols


def _best(board: Board, col: Column) -> set[int]:
    """Row positions holding the column's best shown value; none when fewer than two
    rows have values or all of them tie."""
    if col.better is None:
        return set()
    shown = {i: col.show(v) for i, v in enumerate(board.methods[col.key]) if not _isnan(v)}
    if len(set(shown.values())) < 2:
        return set()
    values = {i: float(board.methods[col.key].iloc[i]) for i in shown}
    lower = col.better == "lower" or (col.better == "metric" and not board.higher_is_better)
    best = (min if lower else max)(values.values())
    return {i for i in shown if shown[i] == col.show(best)}


def table_rows(board: Board, style: Style) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of ``board``'s table in ``style``, best values marked."""
    cols = _columns(board)
    records = board.methods.to_dict("records")
    marks = [_best(board, c) for c in cols]
    rows = [[style.bold(c.cell(r, board, style)) if i in m else c.cell(r, board, style) for c, m in zip(cols, marks)]
            for i, r in enumerate(records)]
    return [c.header(board, style) for c in cols], rows


def _budget_text(board: Board) -> str:
    spec = board.budget_spec or {}
    how = f" (the FLOPs of {spec['steps']} steps of {spec['method']})" if "steps" in spec else ""
    counts = ("student FLOPs plus the teacher's training" if spec.get("counts") == "total"
              else "student FLOPs only")
    return (f"Budget: {_fmt_flops(board.budget)} FLOPs per student run{how}, counting {counts}. "
            "Student FLOPs: the run's own steps; Total FLOPs: plus the teacher's training (the cached "
            "teacher's recorded cost, or the teacher co-trained inside the run by online and pro-kd).")


def _teacher_text(t: dict, metric: str) -> str:
    value = (t.get("metrics") or {}).get(metric)
    value = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
    if t.get("source"):
        source = f"loaded from {t['source']}"
    else:
        source = f"trained {t.get('steps')} steps, {_fmt_flops(t.get('flops'))} FLOPs, {t.get('wall_time', 0):.1f} s"
    ckpts = t.get("checkpoints") or []
    stored = f"; {len(ckpts)} checkpoints stored ({_fmt_bytes(t.get('checkpoint_bytes') or 0)})" if ckpts else ""
    return f"Teacher `{t['teacher_id']}`: {metric} {value}; {source} (not part of the budget){stored}."


def _problem_text(p: dict) -> str:
    what = {"failed": f"failed: {p.get('error')}", "diverged": f"diverged at step {p.get('diverged_at')}",
            "incomplete": "incomplete (no summary yet)"}.get(p["status"], p["status"])
    return f"run {p['run_id']} ({p['method']}, seed {p['seed']}) {what}"


def notes(board: Board) -> list[str]:
    """The lines under a table: teachers, budget and conventions, runs not in the means."""
    direction = "higher" if board.higher_is_better else "lower"
    lines = [_teacher_text(t, board.metric) for t in board.teachers]
    lines.append(f"{_budget_text(board)} {FLOP_CONVENTION}")
    target = (f" Target {board.metric} {'>=' if board.higher_is_better else '<='} {board.target:g}."
              if board.target is not None else " No target set (suite `eval.target`).")
    lines.append(f"{board.metric}: {direction} is better; mean ± std over finished seeds; best per column in bold."
                 f"{target} {CURVE_CONVENTION}")
    if board.baseline is not None:
        lines.append(f"Δ vs {board.baseline}: paired difference over matching (teacher seed, seed) pairs where both "
                     f"finished; Better in: pairs where the method beats {board.baseline} (ties counted apart).")
    if board.problems:
        lines.append("Not in the means: " + "; ".join(_problem_text(p) for p in board.problems) + ".")
    return lines


def render_markdown(out: Path, baseline: Optional[str] = None, ci: bool = False) -> str:
    """The leaderboard of ``out`` as GitHub markdown."""
    return render(build_boards(out, baseline, ci), "md", out)


def _tabulate(rows: list[list[str]], headers: list[str], tablefmt: str) -> str:
    """Method and version left-aligned, numbers right-aligned."""
    align = ("left", "left") + ("right",) * (len(headers) - 2)
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def _markdown(boards: list[Board]) -> str:
    parts = []
    for b in boards:
        headers, rows = table_rows(b, MARKDOWN)
        parts += [f"### {b.task}\n", _tabulate(rows, headers, "github"), ""]
        for line in notes(b):
            parts += [line, ""]
    return "\n".join(parts)


def _latex(boards: list[Board]) -> str:
    parts = ["% kdbench leaderboard; needs \\usepackage{booktabs,graphicx}"]
    for b in boards:
        headers, rows = table_rows(b, LATEX)
        # latex_raw keeps our escaping and \textbf; its three \hline become booktabs rules
        tab = _tabulate(rows, headers, "latex_raw")
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            tab = tab.replace(r"\hline", rule, 1)
        text = " ".join(latex_escape(n.replace("`", "")).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
                        .replace(r"\textgreater{}=", r"$\geq$").replace(r"\textless{}=", r"$\leq$") for n in notes(b))
        parts += ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(b.task)}: final "
                  f"{latex_escape(b.metric)} at equal student FLOPs.}}", f"\\label{{tab:{b.task}}}",
                  # shrink to the line width only when wider
                  "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%", tab + "}",
                  "\\par\\smallskip", f"\\begin{{minipage}}{{\\linewidth}}\\footnotesize\\raggedright {text}\\par",
                  "\\end{minipage}", "\\end{table}", ""]
    return "\n".join(parts)


def _records(boards: list[Board]) -> list[dict]:
    out = []
    for b in boards:
        best = {c.key: _best(b, c) for c in _columns(b) if c.key}
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


def _clean(obj):
    if obj is pd.NA or (isinstance(obj, float) and not math.isfinite(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _clean(obj.item())
    return obj


def _json(boards: list[Board]) -> str:
    tasks = []
    for b in boards:
        best = {c.key: sorted(_best(b, c)) for c in _columns(b) if c.key}
        methods = b.methods.to_dict("records")
        for i, m in enumerate(methods):
            m["best"] = [k for k, rows in best.items() if i in rows]
        tasks.append({"task": b.task, "metric": b.metric, "higher_is_better": b.higher_is_better,
                      "target": b.target, "budget_flops": b.budget, "budget": b.budget_spec,
                      "baseline": b.baseline, "methods": methods,
                      "teachers": [{k: v for k, v in t.items() if k != "recipe"} for t in b.teachers],
                      "not_in_means": b.problems})
    doc = {"kdbench_version": __version__, "flop_convention": FLOP_CONVENTION, "curve_convention": CURVE_CONVENTION,
           "tasks": tasks}
    return json.dumps(_clean(doc), indent=1) + "\n"


def render(boards: list[Board], fmt: str = "md", out: Optional[Path] = None) -> str:
    """``boards`` as ``md``, ``latex``, ``csv`` or ``json`` text."""
    kind = FORMATS.get(fmt)
    if kind is None:
        raise UserError(f"--format: unknown format {fmt!r}; allowed: md, latex, csv, json")
    if not boards and kind in ("md", "tex"):
        return f"No runs in {out}.\n"
    if kind == "md":
        return _markdown(boards)
    if kind == "tex":
        return _latex(boards)
    if kind == "csv":
        frame = pd.DataFrame(_records(boards))
        counts = [c for c in ("runs", "n", "reached", "pairs", "better", "tied", "checkpoints") if c in frame]
        frame[counts] = frame[counts].astype("Float64").round().astype("Int64")
        return frame.to_csv(index=False)
    return _json(boards)


def write_leaderboard(out: Path, fmt: str = "md", baseline: Optional[str] = None, ci: bool = False) -> Path:
    """Write ``out/leaderboard.<ext>`` (markdown by default) atomically; return its path."""
    kind = FORMATS.get(fmt)
    text = render(build_boards(out, baseline, ci), fmt, out)
    path = Path(out) / f"leaderboard.{kind}"
    atomic_write_text(path, text)
    return path
