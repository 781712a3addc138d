"""kdbench compare: the same (task, method) rows across results folders, diffs and paired deltas
checked against hand computations from each folder's runs."""

import json
import math
import statistics

import pandas as pd
import pytest

import kdbench
from conftest import kdbench as cli, tiny_suite
from kdbench.results.compare import folder_labels
from kdbench.results.intervals import t_quantile_975
from test_leaderboard import make_run, table


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """A tiny suite run twice: A (labels, one-shot; seeds 0-2) and B (one-shot at temperature 4; seeds 1-3),
    so one-shot pairs on seeds 1 and 2 across configs and labels is in A only."""
    root = tmp_path_factory.mktemp("compare")
    folders = []
    for name, methods, seeds in (("a", "  - name: labels\n  - name: one-shot", "[0, 1, 2]"),
                                 ("b", "  - name: one-shot\n    params: {temperature: 4.0}", "[1, 2, 3]")):
        suite = root / f"{name}.yaml"
        suite.write_text(tiny_suite(methods, flops=3e5).replace("seeds: [0]", f"seeds: {seeds}"))
        folders.append(kdbench.run_suite(suite, output=root / name).output)
    return folders


def finished(folder, method: str) -> pd.Series:
    runs = kdbench.load_results(folder).runs()
    runs = runs[(runs.method == method) & (runs.status == "finished")]
    return runs.set_index(["teacher_seed", "seed"]).value


def test_paired_delta_is_the_mean_difference_over_matching_seeds(two_folders):
    a, b = two_folders
    frame = kdbench.compare_results([a, b], labels=["A", "B"]).frame.set_index(["method", "folder"])
    va, vb = finished(a, "one-shot"), finished(b, "one-shot")
    d = (vb - va).dropna()
    assert sorted(s for _, s in d.index) == [1, 2]  # seeds 1 and 2 are in both folders
    row = frame.loc[("one-shot", "B")]
    assert row.delta == pytest.approx(d.mean()) and row.delta_std == pytest.approx(d.std(ddof=1))
    assert row.pairs == 2 and row.better == (d > 0).sum() and row.delta_std > 0
    half = t_quantile_975(1) * d.std(ddof=1) / math.sqrt(2)
    assert (row.delta_ci_low, row.delta_ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # the difference of the means takes every seed: 3 in each folder, not the same ones
    assert row["diff"] == pytest.approx(vb.mean() - va.mean()) and row["diff"] != pytest.approx(row.delta)
    assert (row.n, frame.loc[("one-shot", "A")].n) == (3, 3)
    assert row.same_config == False and "method_params.temperature: 1.0 in A, 4.0 in B" in row.differs_in  # noqa: E712
    # labels ran in A only: B's row is there, empty
    assert frame.loc[("labels", "B")].runs == 0 and math.isnan(frame.loc[("labels", "B")]["diff"])
    assert frame.loc[("labels", "A")]["mean"] == pytest.approx(finished(a, "labels").mean())


def test_markdown_shows_the_rows_side_by_side(two_folders):
    a, b = two_folders
    text = kdbench.compare_results([a, b], labels=["A", "B"]).render("md")
    t = table(text, "parity-mlp: accuracy ↑")
    assert list(t.index) == ["labels", "one-shot"]  # A's leaderboard order
    assert t.loc["labels", "B"] == "-" and t.loc["labels", "B config"] == "-"
    assert t.loc["one-shot", "B config"] == "differs" and t.loc["one-shot", "A"].endswith("(3)")
    d = (finished(b, "one-shot") - finished(a, "one-shot")).dropna()
    assert t.loc["one-shot", "Δ B - A (paired)"] == f"{d.mean():+.4f} ± {d.std(ddof=1):.4f}"
    assert "one-shot: B's runs have another config than A's (method_params.temperature: 1.0 in A, 4.0 in B)" in text
    assert "positive when X's accuracy is higher, which is better" in text


def test_the_cli_prints_json_writes_the_file_and_figures(two_folders, tmp_path):
    a, b = two_folders
    out, figs = tmp_path / "cmp.json", tmp_path / "figs"
    result = cli("compare", a, b, "--format", "json", "--output", out, "--figures", figs)
    doc = json.loads(result.stdout)
    assert json.loads(out.read_text()) == doc
    assert doc["reference"] == "a" and [f["label"] for f in doc["folders"]] == ["a", "b"]
    rows = {(r["method"], r["folder"]): r for r in doc["rows"]}
    api = kdbench.compare_results([a, b]).frame.set_index(["method", "folder"])
    assert rows[("one-shot", "b")]["delta"] == pytest.approx(api.loc[("one-shot", "b")].delta)
    assert rows[("labels", "b")]["mean"] is None and rows[("labels", "b")]["runs"] == 0
    for fmt in ("png", "pdf"):
        assert (figs / f"parity-mlp-compare.{fmt}").stat().st_size > 1000
    csv = cli("compare", a, b, "-f", "csv", "--labels", "before,after").stdout
    assert set(pd.read_csv(pd.io.common.StringIO(csv)).folder) == {"before", "after"}


def hand_folder(path, runs, metric="accuracy", higher_is_better=True):
    """A results folder of hand-made runs: (run id, method, seed, value[, teacher seed]) each."""
    for run_id, method, seed, value, *teacher in runs:
        make_run(path, run_id, method, seed, value, metric=metric, higher_is_better=higher_is_better,
                 teacher_seed=teacher[0] if teacher else 0)
    return path


def test_with_several_teachers_the_interval_is_over_per_teacher_mean_differences(tmp_path):
    x = hand_folder(tmp_path / "x", [("x1", "one-shot", 0, 0.5, 0), ("x2", "one-shot", 1, 0.6, 0),
                                     ("x3", "one-shot", 0, 0.7, 1), ("x4", "one-shot", 1, 0.7, 1)])
    y = hand_folder(tmp_path / "y", [("y1", "one-shot", 0, 0.6, 0), ("y2", "one-shot", 1, 0.8, 0),
                                     ("y3", "one-shot", 0, 0.7, 1), ("y4", "one-shot", 1, 0.75, 1)])
    row = kdbench.compare_results([x, y]).frame.set_index(["method", "folder"]).loc[("one-shot", "y")]
    d = [0.1, 0.2, 0.0, 0.05]
    per_teacher = [0.15, 0.025]
    half = t_quantile_975(1) * statistics.stdev(per_teacher) / math.sqrt(2)
    assert row.delta == pytest.approx(statistics.mean(d)) and row.pairs == 4 and row.better == 3 and row.tied == 1
    assert row.delta_ci_method == "teacher means"
    assert (row.delta_ci_low, row.delta_ci_high) == pytest.approx((0.0875 - half, 0.0875 + half))


def test_rows_that_do_not_pair_get_a_diff_and_no_paired_delta(tmp_path):
    x = hand_folder(tmp_path / "x", [("x1", "one-shot", 0, 0.5), ("x2", "one-shot", 1, 0.7)])
    y = hand_folder(tmp_path / "y", [("y1", "one-shot", 5, 0.8), ("y2", "one-shot", 6, 0.9),
                                     ("y3", "progressive", 0, 0.6)])
    cmp = kdbench.compare_results([x, y])
    frame = cmp.frame.set_index(["method", "folder"])
    row = frame.loc[("one-shot", "y")]
    assert row["diff"] == pytest.approx(0.85 - 0.6) and row.pairs == 0 and math.isnan(row.delta)
    assert row.same_config == True  # noqa: E712 - same params, other seeds
    assert frame.loc[("progressive", "x")].runs == 0 and frame.loc[("progressive", "y")]["mean"] == 0.6
    t = table(cmp.render("md"), "parity-mlp: accuracy ↑")
    assert t.loc["one-shot", "y - x"] == "+0.2500" and t.loc["one-shot", "Δ y - x (paired)"] == "-"
    assert t.loc["one-shot", "y better in"] == "-" and t.loc["one-shot", "y config"] == "same"
    assert t.loc["one-shot", "x"] == f"0.6000 ± {statistics.stdev([0.5, 0.7]):.4f} (2)"
    assert t.loc["progressive", "x"] == "-" and t.loc["progressive", "y - x"] == "-"


def test_a_lower_is_better_metric_counts_lower_as_better(tmp_path):
    kw = dict(metric="loss", higher_is_better=False)
    x = hand_folder(tmp_path / "x", [("x1", "one-shot", 0, 0.5), ("x2", "one-shot", 1, 0.7)], **kw)
    y = hand_folder(tmp_path / "y", [("y1", "one-shot", 0, 0.4), ("y2", "one-shot", 1, 0.8)], **kw)
    row = kdbench.compare_results([x, y]).frame.set_index(["method", "folder"]).loc[("one-shot", "y")]
    assert row.delta == pytest.approx(0.0) and row.better == 1 and row.pairs == 2  # 0.4 < 0.5 is the one better


def test_bad_inputs_exit_2_naming_the_folder_or_option(tmp_path):
    x = hand_folder(tmp_path / "x", [("x1", "one-shot", 0, 0.5)])
    loss = hand_folder(tmp_path / "l", [("l1", "one-shot", 0, 0.5)], metric="loss", higher_is_better=False)
    (tmp_path / "empty").mkdir()
    cases = [((x, tmp_path / "empty"), f"folder 2 (empty): {tmp_path / 'empty'}: not a kdbench results folder"),
             ((x,), "give two or more"),
             ((x, loss), f"task parity-mlp: its metric is accuracy in {x} (x) but loss in {loss} (l)"),
             ((x, x, "--labels", "a,b,c"), "--labels: 3 label(s) for 2 folders"),
             ((x, x, "--labels", "a,a"), "--labels: a,a: every label must be non-empty and differ"),
             ((x, x, "-f", "html"), "--format: unknown format 'html'; allowed: md, latex, csv, json")]
    for args, message in cases:
        result = cli("compare", *args, expect=2)
        assert message in " ".join(result.output.split()), result.output


def test_default_labels_are_the_folder_names_told_apart(tmp_path):
    assert folder_labels([tmp_path / "x" / "out", tmp_path / "y" / "out"]) == ["x/out", "y/out"]
    assert folder_labels([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]
    assert folder_labels([tmp_path / "a", tmp_path / "a"]) == ["a (1)", "a (2)"]
