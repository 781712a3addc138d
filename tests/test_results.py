"""The results layer: a folder read once into DataFrames, and leaderboards that never mix
suite versions or configs, never drop a run folder silently, and never overwrite what
they should not."""

import dataclasses
import hashlib
import json
import statistics
import subprocess
import sys

import pandas as pd
import pytest

from conftest import kdbench, tiny_suite
from kdbench import load_results
from kdbench.results.plots import plot_task
from kdbench.run.store import RUN_CONFIG_KEYS, write_manifest
from kdbench.files import atomic_write_json
from kdbench.suite.identity import Run
from test_leaderboard import add_teacher, curve_of, make_run, table
from test_report import results_folder

ONE_SHOT_AND_LABELS = "  - name: labels\n  - name: one-shot\n    params: {{temperature: {t}}}"


def test_runs_curves_teachers_and_the_leaderboard_frame(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.5, curve=curve_of([0.4, 0.5]))
    make_run(tmp_path, "b", "one-shot", 1, 0.7, curve=curve_of([0.4, 0.6, 0.7]))
    make_run(tmp_path, "c", "labels", 0, None, status="failed")
    add_teacher(tmp_path)
    atomic_write_json(tmp_path / "teachers" / "t-1" / "curve.json", curve_of([0.5, 1.0]))
    res = load_results(tmp_path)
    runs = res.runs().set_index("run_id")
    assert list(runs.index) == ["a", "b", "c"] and list(runs.status) == ["finished", "finished", "failed"]
    assert runs.loc["b", "value"] == 0.7 and runs.loc["b", "auc"] == pytest.approx((0.5 + 0.65) / 2)
    assert runs.loc["a", "config_key"] == runs.loc["b", "config_key"] != runs.loc["c", "config_key"]
    curves = res.curves()
    assert list(curves.columns[:11]) == ["run_id", "task", "method", "seed", "teacher_seed", "step", "samples", "flops",
                                         "phase", "time", "train_loss"]
    assert list(curves.run_id) == ["a"] * 2 + ["b"] * 3  # a failed run has no curve
    assert list(curves.accuracy) == [0.4, 0.5, 0.4, 0.6, 0.7]
    teachers = res.teachers().set_index("teacher_id")
    assert teachers.loc["t-1", "flops"] == 3e9 and teachers.loc["t-1", "steps"] == 500
    assert list(res.teacher_curves().accuracy) == [0.5, 1.0]
    assert res.unreadable().empty
    board = res.leaderboard().set_index("method")
    assert list(board.index) == ["one-shot", "labels"] and set(board.task) == {"parity-mlp"}
    assert board.loc["one-shot", "mean"] == pytest.approx(0.6) and board.loc["one-shot", "n"] == 2
    assert board.loc["labels", "statuses"] == {"failed": 1}


def test_import_kdbench_leaves_pandas_for_later(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.5)
    code = ("import sys, kdbench; assert 'pandas' not in sys.modules; "
            f"print(kdbench.load_results({str(tmp_path)!r}).leaderboard(fmt='csv'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("task,role,")


def test_the_run_folder_check_asks_for_what_a_run_needs():
    needed = {f.name for f in dataclasses.fields(Run)
              if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert set(RUN_CONFIG_KEYS) == needed


def test_a_changed_suite_shows_only_its_own_runs(write_suite, tmp_path):
    """Changing one-shot's temperature and running again into the same folder: the leaderboard
    shows the new runs only, compares against them, and --all keeps the two configs apart."""
    out = tmp_path / "out"
    kdbench("run", write_suite(tiny_suite(ONE_SHOT_AND_LABELS.format(t=1.0))), "-o", out, "-q")
    old = set(p.name for p in (out / "runs").iterdir())
    suite = write_suite(tiny_suite(ONE_SHOT_AND_LABELS.format(t=4.0)), name="v2.yaml")
    kdbench("run", suite, "-o", out, "-q")
    new = {p.name: json.loads((p / "summary.json").read_text()) for p in (out / "runs").iterdir()
           if p.name not in old}
    assert len(new) == 1  # labels is unchanged: skipped
    board = (out / "leaderboard.md").read_text()
    t = table(board)
    assert t.loc["one-shot", "Seeds"] == "1" and list(t.index).count("one-shot") == 1
    labels = next(json.loads((d / "summary.json").read_text())["metrics"]["accuracy"]
                  for d in (out / "runs").iterdir() if json.loads((d / "config.json").read_text())["method"] == "labels")
    (one_shot,) = new.values()
    assert t.loc["labels", "Δ vs one-shot"] == f"{labels - one_shot['metrics']['accuracy']:+.4f}"
    assert "holds 1 other run folder(s)" in board and "`kdbench leaderboard RESULTS --all`" in board
    everything = kdbench("leaderboard", out, "--all").output
    rows = table(everything)
    split = [m for m in rows.index if m.startswith("one-shot [cfg ")]
    assert len(split) == 2 and all(rows.loc[m, "Seeds"] == "1" for m in split)
    assert "method_params.temperature=1.0" in everything and "method_params.temperature=4.0" in everything
    manifest = json.loads((out / "suite.json").read_text())
    assert manifest["suite"] == "tiny" and manifest["sha256"] == hashlib.sha256(suite.read_bytes()).hexdigest()
    assert set(new) < set(manifest["run_ids"]) and len(manifest["run_ids"]) == 2


def test_rows_never_merge_configs_and_the_manifest_picks_the_suite(tmp_path):
    for seed, v in enumerate((0.50, 0.52)):  # an earlier version of the suite: temperature 1
        make_run(tmp_path, f"old{seed}", "one-shot", seed, v, params={"temperature": 1.0})
    for seed, v in enumerate((0.80, 0.90)):
        make_run(tmp_path, f"new{seed}", "one-shot", seed, v, params={"temperature": 4.0})
        make_run(tmp_path, f"lab{seed}", "labels", seed, 0.6)
    # no manifest (older results folders): every run, one row per config
    rows = table(load_results(tmp_path).leaderboard(fmt="md"))
    (old,) = [m for m in rows.index if "cfg" in m and rows.loc[m, "accuracy ↑"].startswith("0.5100")]
    (new,) = [m for m in rows.index if "cfg" in m and m != old]
    assert rows.loc[new, "accuracy ↑"] == f"**0.8500 ± {statistics.stdev([0.8, 0.9]):.4f}**"
    assert rows.loc[old, "Seeds"] == rows.loc[new, "Seeds"] == "2" and rows.loc["labels", "Seeds"] == "2"
    (tmp_path / "suite.yaml").write_text("name: demo\n")
    write_manifest(tmp_path, "demo", tmp_path / "suite.yaml", ["new0", "new1", "lab0", "lab1", "gone"])
    res = load_results(tmp_path)
    board = res.leaderboard(fmt="md")
    rows = table(board)
    assert list(rows.index) == ["one-shot", "labels"] and rows.loc["one-shot", "Seeds"] == "2"
    assert rows.loc["labels", "Δ vs one-shot"] == f"{statistics.mean([0.6 - 0.8, 0.6 - 0.9]):+.4f} ± " \
                                                 f"{statistics.stdev([0.6 - 0.8, 0.6 - 0.9]):.4f}"
    assert "holds 2 other run folder(s)" in board and "1 run(s) of suite `demo` have no folder yet" in board
    labels = {line.split(" (n=")[0] for line in
              (ln.get_label() for ln in plot_task(res.runs(), res.curves()).axes[0].get_lines())}
    assert labels == {"one-shot", "labels"}
    doc = json.loads(res.leaderboard(fmt="json"))
    assert doc["runs_outside_suite"] == 2 and doc["runs_not_started"] == 1
    assert table(load_results(tmp_path, all_runs=True).leaderboard(fmt="md")).shape[0] == 3  # 2 configs + labels
    (tmp_path / "suite.json").write_text("[1, 2]")
    assert "suite.json is not a kdbench suite manifest" in load_results(tmp_path).leaderboard(fmt="md")


DAMAGE = {
    "config.json missing": lambda d: (d / "config.json").unlink(),
    "summary.json lacks steps": lambda d: atomic_write_json(
        d / "summary.json", {k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k != "steps"}),
    "curve.json is not a non-empty list": lambda d: (d / "curve.json").write_text("{}"),
    "curve.json point 0 is not a JSON object": lambda d: (d / "curve.json").write_text("[1, 2, 3]"),
}


def test_unreadable_run_folders_are_listed_and_redone(write_suite, tmp_path):
    suite = write_suite(tiny_suite("  - name: labels\n  - name: one-shot").replace("seeds: [0]", "seeds: [0, 1, 2]"))
    out = tmp_path / "out"
    kdbench("run", suite, "-o", out, "-q")
    folders = sorted((out / "runs").iterdir())
    for d, damage in zip(folders, DAMAGE.values()):
        damage(d)
    board = kdbench("leaderboard", out).output
    for d, reason in zip(folders, DAMAGE):
        assert f"runs/{d.name}: {reason}" in board
    assert sum(int(s.split()[0]) for s in table(board).Seeds) == 2  # the two intact runs
    status = kdbench("status", out).output
    rows = json.loads(kdbench("status", out, "--format", "json").stdout)["runs"]
    assert "2 finished, 4 unreadable" in status and sum(r["state"] == "unreadable" for r in rows) == 4
    assert "lacks steps" in status  # the reason, in the detail column
    rerun = kdbench("run", suite, "-o", out, "-q")
    assert "4 runs executed, 2 skipped" in rerun.output
    board = (out / "leaderboard.md").read_text()
    assert "could not be read" not in board and list(table(board).Seeds) == ["3", "3"]


def test_leaderboard_of_a_folder_without_runs_writes_nothing(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "leaderboard.md").write_text("my table\n")
    result = kdbench("leaderboard", tmp_path, expect=2)
    assert "no runs to show; nothing written" in result.output
    make_run(tmp_path, "a", "one-shot", 0, 0.5)
    (tmp_path / "runs" / "a" / "curve.json").write_text("[]")
    result = kdbench("leaderboard", tmp_path, "-f", "csv", expect=2)
    assert "runs/a: curve.json is not a non-empty list" in result.output
    assert (tmp_path / "leaderboard.md").read_text() == "my table\n" and not (tmp_path / "leaderboard.csv").exists()


def test_report_writes_only_into_a_new_folder_or_an_earlier_report(tmp_path):
    results = results_folder(tmp_path / "results")
    mine = tmp_path / "mine"
    (mine / "tables").mkdir(parents=True)
    (mine / "README.md").write_text("my notes\n")
    result = kdbench("report", results, mine, expect=2)
    assert str(mine) in result.output and "not a kdbench report" in result.output
    assert (mine / "README.md").read_text() == "my notes\n" and not any((mine / "tables").iterdir())
    kdbench("report", results, mine, "--force")
    assert (mine / "README.md").read_text().startswith("# kdbench report")
    # an earlier report is rewritten, and nothing of the earlier results stays in it
    other = tmp_path / "other"
    make_run(other, "z", "progressive", 0, 0.9)
    kdbench("report", other, mine)
    assert [p.name for p in (mine / "results" / "runs").iterdir()] == ["z"]
    assert list(table((mine / "tables" / "leaderboard.md").read_text()).index) == ["progressive"]
    (tmp_path / "file").write_text("x")
    result = kdbench("report", results, tmp_path / "file", expect=2)
    assert "is a file" in result.output and (tmp_path / "file").read_text() == "x"
    result = kdbench("report", results, tmp_path, expect=2)  # would hold the results it copies
    assert "must not contain the results folder" in result.output
