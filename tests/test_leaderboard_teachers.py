"""The teacher as a random factor in leaderboards (spread between teachers, teachers on which a
method beats the baseline, a nested bootstrap interval) and the fidelity columns (agreement and
KL to the final teacher): hand-made folders with hand-checked numbers, and a tiny real suite."""

import io
import json
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import kdbench
from kdbench import load_results
from kdbench.results.intervals import interval
from test_leaderboard import make_run, render_markdown, table

TWO_TEACHERS = """
name: two-teachers
seeds: [0, 1]
teacher_seeds: [0, 1]
budget: {flops: 6e5}
eval: {points: 4}
tasks:
  - name: parity-mlp
    params: {n: 12, k: 3, teacher_width: 64, student_width: 16, eval_size: 256}
    teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 40}
    student: {optimizer: adam, lr: 0.01, batch_size: 16}
methods:
  - name: labels
  - name: one-shot
"""


def with_fidelity(run_dir, agreement, teacher_kl):
    """Add the fidelity numbers to a hand-made run's summary metrics, as a measured run has them."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary["metrics"].update(agreement=agreement, teacher_kl=teacher_kl)
    path.write_text(json.dumps(summary))


def per_teacher_table(board: str) -> pd.DataFrame:
    """The per-teacher-seed table under the first leaderboard table, as cells by header."""
    return table(board[board.index("Per teacher seed:"):])


def t_interval(values):
    """The 95% Student-t interval of the mean of ``values`` (scipy's quantile)."""
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return statistics.mean(values) - half, statistics.mean(values) + half


def two_teacher_folder(out, **kwargs):
    """one-shot: teacher 0 at 0.50/0.60, teacher 1 at 0.70/0.80; progressive: 0.70/0.66 and
    0.72/0.74 (paired differences +0.20/+0.06 on teacher 0, +0.02/-0.06 on teacher 1); labels:
    0.40/0.30 on teacher 0, failed on teacher 1."""
    values = {"one-shot": [[0.50, 0.60], [0.70, 0.80]], "progressive": [[0.70, 0.66], [0.72, 0.74]],
              "labels": [[0.40, 0.30], [None, None]]}
    for method, by_teacher in values.items():
        for ts, seeds in enumerate(by_teacher):
            for seed, v in enumerate(seeds):
                make_run(out, f"{method}-{ts}-{seed}", method, seed, v, teacher_seed=ts,
                         status="failed" if v is None else "finished", **kwargs)


def test_spread_between_teachers_and_teachers_better(tmp_path):
    two_teacher_folder(tmp_path)
    board = render_markdown(tmp_path)
    t = table(board)
    assert list(t.index) == ["progressive", "one-shot", "labels"]
    assert t.loc["progressive", "accuracy ↑"].startswith("**0.7050 ± ")  # mean over all 4 pairs
    # per-teacher means 0.55 / 0.75 (one-shot), 0.68 / 0.73 (progressive): std = |difference| / sqrt(2)
    assert t.loc["one-shot", "Teachers"] == "2" and t.loc["one-shot", "Between teachers"] == "0.1414"
    assert t.loc["progressive", "Between teachers"] == "0.0354"
    assert t.loc["labels", "Teachers"] == "1" and t.loc["labels", "Between teachers"] == "-"
    # progressive: mean difference +0.13 on teacher 0, -0.02 on teacher 1; 3 of 4 pairs better
    assert t.loc["progressive", "Teachers better"] == "1/2" and t.loc["progressive", "Better in"] == "3/4"
    assert t.loc["labels", "Teachers better"] == "0/1" and t.loc["one-shot", "Teachers better"] == "-"
    per = per_teacher_table(board)
    assert list(per.columns) == ["teacher seed 0", "teacher seed 1"] and list(per.index) == list(t.index)
    assert per.loc["progressive", "teacher seed 0"] == "0.6800 ± 0.0283 (2)"
    assert per.loc["one-shot", "teacher seed 1"] == "0.7500 ± 0.0707 (2)" and per.loc["labels", "teacher seed 1"] == "-"
    assert "mean ± std over finished (teacher seed, seed) runs" in board
    assert "Between teachers: std of the per-teacher means" in board
    frame = load_results(tmp_path).leaderboard().set_index("method")
    assert frame.loc["one-shot", "teacher_std"] == pytest.approx(0.2 / 2 ** 0.5)
    assert frame.loc["progressive", "teachers_better"] == 1 and frame.loc["progressive", "teachers_paired"] == 2
    assert frame.loc["labels", "teachers"] == 1 and np.isnan(frame.loc["labels", "teacher_std"])


def test_teachers_better_follows_the_metric_direction(tmp_path):
    two_teacher_folder(tmp_path, metric="loss", higher_is_better=False)
    t = table(render_markdown(tmp_path))
    # lower is better: progressive beats one-shot on teacher 1 only (-0.02), labels on its one teacher (-0.20)
    assert t.loc["progressive", "Teachers better"] == "1/2" and t.loc["labels", "Teachers better"] == "1/1"
    assert t.loc["progressive", "Better in"] == "1/4"


def test_interval_over_teacher_means_widens_with_disagreeing_teachers(tmp_path):
    # three teachers, four seeds each, every seed of a teacher at that teacher's value
    for ts, v in enumerate((0.5, 0.7, 0.9)):
        for seed in range(4):
            make_run(tmp_path, f"o{ts}{seed}", "one-shot", seed, v, teacher_seed=ts)
    board = render_markdown(tmp_path, ci=True)
    t = table(board)
    # per-teacher means 0.5, 0.7, 0.9: mean 0.7, std 0.2, t(2 df) = 4.303: 0.7 -+ 4.303 * 0.2 / sqrt(3)
    half = 4.303 * 0.2 / 3 ** 0.5
    assert t.loc["one-shot", "95% CI"] == f"[{0.7 - half:.4f}, {0.7 + half:.4f}]"
    low, high = t_interval(np.array([0.5] * 4 + [0.7] * 4 + [0.9] * 4))  # seeds as if independent
    assert 0.7 - half < low < 0.7 < high < 0.7 + half  # [0.5916, 0.8084]: far too narrow
    assert "Student-t interval over the per-teacher means" in board
    frame = load_results(tmp_path).leaderboard().set_index("method")
    assert frame.loc["one-shot", "ci_method"] == "teacher means"


def test_interval_over_teacher_means_counts_each_teacher_once():
    """Unequal seeds per teacher: every teacher weighs the same in the interval (its mean)."""
    values = [0.50, 0.52, 0.55, 0.70, 0.66, 0.90, 0.85, 0.88, 0.93]
    teachers = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    low, high, how = interval(values, teachers)
    means = np.array([np.mean(values[:3]), np.mean(values[3:5]), np.mean(values[5:])])
    assert how == "teacher means" and (low, high) == pytest.approx(t_interval(means), abs=1e-4)
    assert interval([0.5, 0.6], [0, 0])[2] == "t" and interval([0.5], [0])[2] is None


def test_one_teacher_keeps_the_t_interval_and_its_table(tmp_path):
    for seed, v in enumerate((0.5, 0.6, 0.8)):
        make_run(tmp_path, f"o{seed}", "one-shot", seed, v)
    make_run(tmp_path, "l0", "labels", 0, 0.4)
    board = render_markdown(tmp_path, ci=True)
    t = table(board)
    shown = [float(x) for x in t.loc["one-shot", "95% CI"].strip("[]").split(", ")]
    assert shown == pytest.approx(t_interval([0.5, 0.6, 0.8]), abs=2e-4)  # kdbench's t table has 3 decimals
    assert "95% CI: with one teacher seed, the Student-t interval of the mean over the seeds." in board
    assert not {"Teachers", "Between teachers", "Teachers better", "Δ 95% CI"} & set(t.columns)
    assert "Per teacher seed" not in board and "per-teacher means" not in board
    frame = load_results(tmp_path).leaderboard().set_index("method")
    assert frame.loc["one-shot", "ci_method"] == "t" and frame.loc["one-shot", "teachers"] == 1
    assert frame.loc["labels", "teachers_paired"] == 1 and frame.loc["labels", "teachers_better"] == 0


def fidelity_folder(out):
    """Task a: one-shot and progressive measured (a diverged one-shot run too), labels not;
    task b: nothing measured."""
    for seed, (v, agree, kl) in enumerate([(0.6, 0.90, 0.2), (0.7, 0.80, 0.4)]):
        with_fidelity(make_run(out, f"ao{seed}", "one-shot", seed, v, task="a"), agree, kl)
    for seed, (v, agree, kl) in enumerate([(0.8, 0.95, 0.10), (0.9, 0.97, 0.12)]):
        with_fidelity(make_run(out, f"ap{seed}", "progressive", seed, v, task="a"), agree, kl)
    with_fidelity(make_run(out, "ao2", "one-shot", 2, 0.1, task="a", status="diverged"), 0.1, 9.0)
    make_run(out, "al0", "labels", 0, 0.5, task="a")
    make_run(out, "bo0", "one-shot", 0, 0.6, task="b")
    make_run(out, "bl0", "labels", 0, 0.5, task="b")


def test_fidelity_columns_when_runs_measured_them(tmp_path):
    fidelity_folder(tmp_path)
    res = load_results(tmp_path)
    runs = res.runs().set_index("run_id")
    assert runs.loc["ap1", "agreement"] == 0.97 and runs.loc["ap1", "teacher_kl"] == 0.12
    assert np.isnan(runs.loc["al0", "agreement"]) and np.isnan(runs.loc["bo0", "teacher_kl"])
    board = res.leaderboard(fmt="md")
    a, b = table(board, "a"), table(board, "b")
    # finished runs only: the diverged one-shot run (0.1, 9.0) is not in the means
    assert a.loc["one-shot", "Agreement ↑"] == f"0.8500 ± {statistics.stdev([0.9, 0.8]):.4f}"
    assert a.loc["progressive", "Agreement ↑"] == f"**0.9600 ± {statistics.stdev([0.95, 0.97]):.4f}**"
    assert a.loc["one-shot", "KL(T‖S) ↓"] == f"0.3000 ± {statistics.stdev([0.2, 0.4]):.4f}"
    assert a.loc["progressive", "KL(T‖S) ↓"] == f"**0.1100 ± {statistics.stdev([0.10, 0.12]):.4f}**"
    assert a.loc["labels", "Agreement ↑"] == "-" and a.loc["labels", "KL(T‖S) ↓"] == "-"
    assert "Agreement ↑" not in b.columns and "KL(T‖S) ↓" not in b.columns
    note = "the teacher's forwards for them are an evaluation cost, not charged to the budget."
    task_a, task_b = board.split("### b")
    assert note in task_a and note not in task_b and "Agreement and KL(T‖S): against the final teacher" in task_a
    frame = res.leaderboard().set_index(["task", "method"])
    assert frame.loc[("a", "progressive"), "teacher_kl"] == pytest.approx(0.11)
    assert frame.loc[("a", "one-shot"), "agreement_std"] == pytest.approx(statistics.stdev([0.9, 0.8]))
    assert frame[["agreement", "teacher_kl"]].loc["b"].isna().all().all()
    tex = res.leaderboard(fmt="latex", columns=["all"])
    assert r"Agreement $\uparrow$" in tex and r"KL(T$\|$S) $\downarrow$" in tex and "‖" not in tex


def test_json_and_csv_carry_the_teacher_and_fidelity_columns(tmp_path):
    fidelity_folder(tmp_path)
    csv = pd.read_csv(io.StringIO(load_results(tmp_path).leaderboard(fmt="csv"))).set_index(["task", "method"])
    for col in ("agreement", "agreement_std", "teacher_kl", "teacher_kl_std", "teachers", "teacher_std",
                "teachers_better", "teachers_paired", "ci_low", "ci_high", "ci_method"):
        assert col in csv.columns, col
    assert csv.loc[("a", "progressive"), "agreement"] == pytest.approx(0.96)
    assert csv.loc[("a", "progressive"), "best"] == "mean,agreement,teacher_kl"
    assert csv.loc[("a", "progressive"), "teachers"] == 1
    doc = json.loads(load_results(tmp_path).leaderboard(fmt="json"))
    methods = {(t["task"], m["method"]): m for t in doc["tasks"] for m in t["methods"]}
    assert methods[("a", "one-shot")]["teacher_kl"] == pytest.approx(0.3)
    assert methods[("b", "one-shot")]["agreement"] is None and methods[("a", "progressive")]["teachers_paired"] == 1
    assert "per_teacher" not in doc["tasks"][0]  # one teacher seed: no per-teacher table


def test_a_two_teacher_suite_end_to_end(tmp_path):
    (tmp_path / "suite.yaml").write_text(TWO_TEACHERS)
    out = tmp_path / "out"
    kdbench("run", tmp_path / "suite.yaml", "--output", out, "--quiet")
    res = load_results(out)
    runs = res.runs()
    assert len(runs) == 8 and set(runs.status) == {"finished"} and runs.teacher_id.nunique() == 2
    means = runs.groupby(["method", "teacher_seed"]).value.mean()
    frame = res.leaderboard().set_index("method")
    for method in ("labels", "one-shot"):
        values = list(runs[runs.method == method].value)
        assert frame.loc[method, "teachers"] == 2
        assert frame.loc[method, "teacher_std"] == pytest.approx(statistics.stdev(means[method]))
        low, high = frame.loc[method, ["ci_low", "ci_high"]]
        assert frame.loc[method, "ci_method"] == "teacher means"
        assert (low, high) == pytest.approx(t_interval([means[(method, 0)], means[(method, 1)]]), abs=1e-3)
    diffs = {ts: means[("labels", ts)] - means[("one-shot", ts)] for ts in (0, 1)}  # every seed paired
    assert frame.loc["labels", "teachers_better"] == sum(d > 0 for d in diffs.values())
    assert frame.loc["labels", "teachers_paired"] == 2
    result = kdbench("leaderboard", out, "--ci")
    per = per_teacher_table(result.output)
    for ts in (0, 1):
        values = list(runs[(runs.method == "one-shot") & (runs.teacher_seed == ts)].value)
        assert per.loc["one-shot", f"teacher seed {ts}"] == \
            f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (2)"
    assert "Teachers better" in table(result.output).columns and "Δ 95% CI" in table(result.output).columns
    doc = json.loads(kdbench("leaderboard", out, "--ci", "-f", "json").output)
    task = doc["tasks"][0]
    assert task["teacher_seeds"] == [0, 1] and len(task["per_teacher"]) == 4
    assert {r["n"] for r in task["per_teacher"]} == {2}
    assert doc == json.loads(kdbench("leaderboard", out, "--ci", "-f", "json").output)  # deterministic
