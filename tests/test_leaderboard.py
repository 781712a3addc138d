"""Leaderboard tables are computed from run folders alone: hand-made folders with
known numbers, checked in every format."""

import io
import json
import re
import shutil
import statistics
import subprocess

import pandas as pd
import pytest
from scipy import stats

from conftest import kdbench
from kdbench import load_results
from kdbench.results.intervals import t_quantile_975
from kdbench.run.curves import curve_auc, flops_to_target
from kdbench.results.folder import phase_boundaries
from kdbench.files import atomic_write_json


def curve_of(values, flops_per_point=100, metric="accuracy", phases=None):
    """A curve with one evaluation every ``flops_per_point`` FLOPs (10 steps each)."""
    phases = phases or ["main"] * len(values)
    return [{"step": 10 * i, "samples": 320 * i, "flops": flops_per_point * i, "phase": ph, "train_loss": None,
             metric: v, "time": 0.1 * i} for i, (v, ph) in enumerate(zip(values, phases))]


def make_run(out, run_id, method, seed, value, status="finished", task="parity-mlp", curve=None, metric="accuracy",
             higher_is_better=True, target=None, teacher_seed=0, phases=None, wall_time=2.0, checkpoints=0,
             checkpoint_bytes=0, budget=1.2e6, version="3", params=None):
    """Write a run folder by hand: config.json, summary.json and curve.json (by default
    one evaluation holding the final value); an incomplete run has its config only."""
    d = out / "runs" / run_id
    atomic_write_json(d / "config.json", {
        "run_id": run_id, "suite": "hand-made", "task": task, "task_label": task, "task_version": "1",
        "task_params": {"n": 10}, "teacher_seed": teacher_seed, "teacher_recipe": {"steps": 50},
        "teacher_checkpoint": None, "checkpoints": [], "student_recipe": {"lr": 0.01},
        "method": method, "method_label": method, "method_version": version, "method_params": params or {},
        "seed": seed, "budget": {"flops": budget}, "eval": {"points": 4, "target": target}, "save_every_s": 60.0,
        "teacher_id": "t-1", "kdbench_version": "0.1.0"})
    if status == "incomplete":
        return d
    if curve is None:
        curve = [{"step": 100, "samples": 3200, "flops": 1e6, "phase": "main", "train_loss": None, metric: value}]
    summary = {"status": status, "metric": metric, "higher_is_better": higher_is_better,
               "metrics": {metric: value} if value is not None else {}, "flops": 1e6, "budget_flops": budget,
               "steps": 100, "wall_time": wall_time, "checkpoints_used": checkpoints,
               "checkpoint_bytes": checkpoint_bytes, "device": "cpu",
               "phases": phases or [{"name": "main", "steps": 100, "step_flops": 10_000}]}
    if status == "failed":
        summary = {"status": "failed", "error": "RuntimeError: boom", "wall_time": 0.5}
    elif status == "diverged":
        summary["diverged_at"] = 57
    atomic_write_json(d / "summary.json", summary)
    atomic_write_json(d / "curve.json", curve)
    return d


def add_teacher(out, **extra):
    atomic_write_json(out / "teachers" / "t-1" / "summary.json",
                      {"metrics": {"accuracy": 1.0}, "steps": 500, "flops": 3e9, "wall_time": 12.5, **extra})


def render_markdown(out, **kwargs) -> str:
    """The leaderboard of results folder ``out`` as markdown."""
    return load_results(out).leaderboard(fmt="md", **kwargs)


def table(board: str, task: str | None = None) -> pd.DataFrame:
    """The first markdown table of ``board`` (after ``### task`` when given) as cells by header."""
    lines = board.splitlines()
    if task is not None:
        lines = lines[lines.index(f"### {task}"):]
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0]).set_index("Method")


def test_mean_std_and_failed_runs_shown(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.5)
    make_run(tmp_path, "b", "one-shot", 1, 0.7)
    make_run(tmp_path, "c", "one-shot", 2, 0.9)
    make_run(tmp_path, "d", "labels", 0, 0.6)
    make_run(tmp_path, "e", "labels", 1, None, status="failed")
    add_teacher(tmp_path)
    board = render_markdown(tmp_path)
    t = table(board)
    std = statistics.stdev([0.5, 0.7, 0.9])
    assert t.loc["one-shot", "accuracy ↑"] == f"**0.7000 ± {std:.4f}**"  # best marked
    assert t.loc["one-shot", "Seeds"] == "3" and t.loc["one-shot", "Version"] == "3"
    assert t.loc["labels", "accuracy ↑"] == "0.6000"  # one seed: no std to show
    assert t.loc["labels", "Seeds"] == "1 (1 failed)"
    assert list(t.index) == ["one-shot", "labels"]  # best first
    assert "Teacher `t-1`: accuracy 1.0000; trained 500 steps, 3e+09 FLOPs, 12.5 s (not part of the budget)" in board
    assert "Budget: 1.2e+06 FLOPs" in board and "FlopCounterMode" in board
    assert "run e (labels, seed 1) failed: RuntimeError: boom" in board


def test_flops_to_target_counts_seeds_that_reached_it(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.95, target=0.9, curve=curve_of([0.5, 0.8, 0.92, 0.95]))
    make_run(tmp_path, "b", "one-shot", 1, 0.93, target=0.9, curve=curve_of([0.5, 0.9, 0.93, 0.93]))
    make_run(tmp_path, "c", "one-shot", 2, 0.85, target=0.9, curve=curve_of([0.5, 0.6, 0.7, 0.85]))
    make_run(tmp_path, "d", "progressive", 0, 0.99, target=0.9, curve=curve_of([0.5, 0.95, 0.99, 0.99]))
    t = table(render_markdown(tmp_path))
    # one-shot: seed 0 reaches 0.9 at 200 FLOPs, seed 1 at 100, seed 2 never
    assert t.loc["one-shot", "FLOPs to 0.9"] == "150" and t.loc["one-shot", "Reached"] == "2/3"
    assert t.loc["progressive", "FLOPs to 0.9"] == "**100**" and t.loc["progressive", "Reached"] == "1/1"
    frame = load_results(tmp_path).leaderboard().set_index("method")
    assert frame.loc["one-shot", "to_target"] == 150 and frame.loc["one-shot", "reached"] == 2


def test_lower_is_better_metric_direction(tmp_path):
    kw = dict(metric="loss", higher_is_better=False, target=0.3)
    make_run(tmp_path, "a", "one-shot", 0, 0.4, curve=curve_of([1.0, 0.6, 0.4], metric="loss"), **kw)
    make_run(tmp_path, "b", "labels", 0, 0.2, curve=curve_of([1.0, 0.25, 0.2], metric="loss"), **kw)
    board = render_markdown(tmp_path)
    t = table(board)
    assert list(t.index) == ["labels", "one-shot"]  # lower loss first
    assert t.loc["labels", "loss ↓"] == "**0.2000**" and t.loc["one-shot", "loss ↓"] == "0.4000"
    assert t.loc["labels", "FLOPs to 0.3"] == "100" and t.loc["one-shot", "FLOPs to 0.3"] == "-"
    assert t.loc["labels", "AUC"].startswith("**")  # lower area under a loss curve is better
    assert t.loc["labels", "Δ vs one-shot"] == "-0.2000" and t.loc["labels", "Better in"] == "1/1"
    assert "Target loss <= 0.3" in board


def test_diverged_and_incomplete_runs_are_listed_not_dropped(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.8, curve=curve_of([0.5, 0.8]))
    make_run(tmp_path, "b", "one-shot", 1, None, status="diverged", curve=curve_of([0.5, 0.6]))
    make_run(tmp_path, "c", "one-shot", 2, None, status="incomplete")
    make_run(tmp_path, "d", "fancy", 0, None, status="failed")
    board = render_markdown(tmp_path)
    t = table(board)
    assert t.loc["one-shot", "Seeds"] == "1 (1 diverged, 1 incomplete)"
    assert t.loc["fancy", "accuracy ↑"] == "-" and t.loc["fancy", "Seeds"] == "0 (1 failed)"
    assert list(t.index) == ["one-shot", "fancy"]  # a method with nothing finished goes last
    assert "run b (one-shot, seed 1) diverged at step 57" in board
    assert "run c (one-shot, seed 2) incomplete" in board and "run d (fancy, seed 0) failed" in board


def test_paired_comparison_uses_matching_seeds(tmp_path):
    for seed, v in zip((0, 1, 2), (0.60, 0.70, 0.80)):
        make_run(tmp_path, f"b{seed}", "one-shot", seed, v)
    for seed, v in zip((1, 2, 3), (0.75, 0.78, 0.99)):  # seed 3 has no baseline partner
        make_run(tmp_path, f"p{seed}", "progressive", seed, v)
    t = table(render_markdown(tmp_path))
    diffs = [0.75 - 0.70, 0.78 - 0.80]
    assert t.loc["progressive", "Δ vs one-shot"] == f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}"
    assert t.loc["progressive", "Better in"] == "1/2"
    assert t.loc["one-shot", "Δ vs one-shot"] == "baseline"
    t = table(render_markdown(tmp_path, baseline="progressive"))
    assert t.loc["one-shot", "Δ vs progressive"] == f"{-statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}"
    assert t.loc["one-shot", "Better in"] == "1/2"


def test_teacher_seeds_pair_separately_and_ci(tmp_path):
    for ts in (0, 1):
        make_run(tmp_path, f"b{ts}", "one-shot", 0, 0.5 + ts / 10, teacher_seed=ts)
        make_run(tmp_path, f"p{ts}", "progressive", 0, 0.6 + ts / 10, teacher_seed=ts)
    make_run(tmp_path, "l0", "labels", 0, 0.5, teacher_seed=0)
    make_run(tmp_path, "l1", "labels", 0, 0.5, teacher_seed=1)
    t = table(render_markdown(tmp_path, ci=True))
    assert t.loc["progressive", "Better in"] == "2/2" and t.loc["progressive", "Seeds"] == "2"
    assert t.loc["labels", "Better in"] == "0/2 (1 tied)"
    # two teacher seeds of one seed each: t over the teacher means 0.6, 0.7 (1 df: 12.706 * 0.0707 / sqrt 2)
    assert t.loc["progressive", "95% CI"] == "[0.0147, 1.2853]"


def test_per_run_numbers():
    curve = curve_of([0.5, 1.0, 1.0])  # flops 0, 100, 200
    assert curve_auc(curve, "accuracy") == pytest.approx((100 * 0.75 + 100 * 1.0) / 200)
    assert curve_auc(curve[:1], "accuracy") != curve_auc(curve[:1], "accuracy")  # NaN: one point
    assert flops_to_target(curve, "accuracy", 0.99, True) == 100
    assert flops_to_target(curve, "accuracy", 0.4, False) != flops_to_target(curve, "accuracy", 0.4, False)
    phases = [{"name": "a", "steps": 10, "step_flops": 5}, {"name": "b", "steps": 0, "step_flops": 5},
              {"name": "c", "steps": 20, "step_flops": 2}, {"name": "d", "steps": 4, "step_flops": 10}]
    assert phase_boundaries({"phases": phases}, []) == [50, 90]  # the empty phase adds no boundary
    from_curve = curve_of([0.1, 0.2, 0.3, 0.4], phases=["a", "a", "c", "c"])
    assert phase_boundaries({}, from_curve) == [100]
    for df in (*range(1, 31), 40, 120, 10_000):  # a 3-decimal table, then Cornish-Fisher
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4), df


def test_latex_is_balanced_and_escaped(tmp_path):
    make_run(tmp_path, "a", "my_method", 0, 0.5, task="t_1", target=0.4, curve=curve_of([0.3, 0.5]))
    make_run(tmp_path, "b", "my_method", 1, 0.7, task="t_1", target=0.4, curve=curve_of([0.3, 0.7]))
    make_run(tmp_path, "c", "one-shot", 0, 0.6, task="t_1", target=0.4, curve=curve_of([0.3, 0.6]))
    make_run(tmp_path, "d", "one-shot", 1, None, task="t_1", target=0.4, status="failed")
    tex = load_results(tmp_path).leaderboard(fmt="latex", ci=True)
    for env in ("table", "tabular", "minipage"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\hline" not in tex
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    body = tex[tex.index(r"\toprule"):tex.index(r"\bottomrule")]
    rows = [r for r in body.split(r"\\")[:-1]]
    assert len(rows) == 3  # header + 2 methods
    for row in rows:
        assert len(re.findall(r"(?<!\\)&", row)) == len(spec) - 1
    text = re.sub(r"\\label\{[^}]*\}", "", tex)  # a label may hold underscores
    assert not re.search(r"(?<!\\)[_%#]", text.replace("% kdbench leaderboard", "").replace("{%\n", "\n"))
    assert r"my\_method" in tex and r"95\% CI" in tex and r"\textbf{0.6000}" not in tex  # 0.6 vs 0.6: a tie
    assert r"failed: RuntimeError: boom" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(tmp_path):
    make_run(tmp_path, "a", "my_method", 0, 0.5, task="t_1", curve=curve_of([0.3, 0.5]))
    make_run(tmp_path, "b", "one-shot", 0, 0.6, task="t_1", curve=curve_of([0.3, 0.6]))
    (tmp_path / "board.tex").write_text(load_results(tmp_path).leaderboard(fmt="latex", ci=True))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage[utf8]{inputenc}"
                                      "\\usepackage{booktabs,graphicx}\\begin{document}\\input{board.tex}"
                                      "\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]


def test_columns_choose_the_table(tmp_path):
    """LaTeX defaults to a paper's columns; --columns picks columns and their order; all shows every one."""
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.7, 0.9)]):
        make_run(tmp_path, f"o{seed}", "one-shot", seed, a, target=0.4, curve=curve_of([0.3, a]))
        make_run(tmp_path, f"p{seed}", "progressive", seed, b, target=0.4, curve=curve_of([0.3, b]))
    res = load_results(tmp_path)

    def headers(tex):
        return [h.strip() for h in tex[tex.index(r"\toprule") + 8:tex.index(r"\midrule")].strip().rstrip("\\").split("&")]

    assert headers(res.leaderboard(fmt="latex")) == ["Method", r"accuracy $\uparrow$", "Seeds", "FLOPs to 0.4", "AUC",
                                                     "Student FLOPs", r"$\Delta$ vs one-shot"]
    assert "Version" in headers(res.leaderboard(fmt="latex", columns=["all"]))
    md = res.leaderboard(fmt="md", columns=["auc", "method", "ci"])  # ci without --ci: left out
    assert [h.strip() for h in md.splitlines()[2].strip("|").split("|")] == ["AUC", "Method"]
    result = kdbench("leaderboard", tmp_path, "-f", "latex", "--columns", "method,metric,delta")
    assert headers(result.output) == ["Method", r"accuracy $\uparrow$", r"$\Delta$ vs one-shot"]
    assert r"\begin{tabular}{lrr}" in (tmp_path / "leaderboard.tex").read_text()
    bad = kdbench("leaderboard", tmp_path, "--columns", "method,speed", expect=2).output
    assert "--columns: speed: not a leaderboard column; allowed: all, method, version" in bad


def test_csv_and_json_carry_the_numbers(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.5, curve=curve_of([0.4, 0.5]))
    make_run(tmp_path, "b", "one-shot", 1, 0.7, curve=curve_of([0.4, 0.7]))
    make_run(tmp_path, "c", "labels", 0, None, status="failed")
    make_run(tmp_path, "d", "labels", 1, 0.4, curve=curve_of([0.4, 0.4]), wall_time=1.0)
    add_teacher(tmp_path)
    results = load_results(tmp_path)
    csv = pd.read_csv(io.StringIO(results.leaderboard(fmt="csv"))).set_index("method")
    assert csv.loc["one-shot", "mean"] == pytest.approx(0.6) and csv.loc["one-shot", "n"] == 2
    assert csv.loc["one-shot", "std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert csv.loc["labels", "n_failed"] == 1 and csv.loc["labels", "n"] == 1
    assert csv.loc["teacher:t-1", "role"] == "teacher" and csv.loc["teacher:t-1", "flops"] == 3e9
    assert csv.loc["one-shot", "best"] == "mean,auc" and csv.loc["labels", "best"] == "wall_time"

    def no_nan(name):
        raise AssertionError(f"{name} in JSON")

    doc = json.loads(results.leaderboard(fmt="json"), parse_constant=no_nan)
    task = doc["tasks"][0]
    assert task["metric"] == "accuracy" and task["budget_flops"] == 1.2e6 and task["teachers"][0]["flops"] == 3e9
    methods = {m["method"]: m for m in task["methods"]}
    assert methods["one-shot"]["mean"] == pytest.approx(0.6) and methods["labels"]["std"] is None
    assert methods["labels"]["statuses"] == {"failed": 1}
    assert [p["run_id"] for p in task["not_in_means"]] == ["c"] and methods["one-shot"]["best"] == ["mean", "auc"]


def test_cli_formats_and_errors(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.5)
    result = kdbench("leaderboard", tmp_path, "--format", "csv")
    assert result.output.startswith("task,role,") and (tmp_path / "leaderboard.csv").is_file()
    assert (tmp_path / "leaderboard.md").is_file()
    assert "\\begin{tabular}" in kdbench("leaderboard", tmp_path, "-f", "latex").output
    assert "unknown format 'xml'" in kdbench("leaderboard", tmp_path, "-f", "xml", expect=2).output
    result = kdbench("leaderboard", tmp_path, "--baseline", "nope", expect=2)
    assert "no runs of method 'nope'" in result.output and "allowed: one-shot" in result.output
