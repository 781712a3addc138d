"""`kdbench report`: a folder for a paper, rebuilt from the run folders alone."""

import json

from conftest import kdbench
from kdbench import load_results
from test_leaderboard import add_teacher, curve_of, make_run

SUITE = "name: demo\nplugins: [mine.py]\nseeds: [0, 1]\ntasks: [{name: parity-mlp}]\nmethods: [{name: one-shot}]\n"


def results_folder(out):
    make_run(out, "a", "one-shot", 0, 0.5, curve=curve_of([0.4, 0.5]))
    make_run(out, "b", "one-shot", 1, 0.7, curve=curve_of([0.4, 0.7]))
    make_run(out, "c", "labels", 0, None, status="failed")
    (out / "runs" / "c" / "traceback.txt").write_text("Traceback: boom\n")
    (out / "runs" / "a" / "state.pt").write_bytes(b"weights")
    add_teacher(out)
    (out / "teachers" / "t-1" / "final.pt").write_bytes(b"weights")
    (out / "suite.yaml").write_text(SUITE)
    (out / "mine.py").write_text("# a plugin file\n")
    return out


def test_report_folder_contents(tmp_path):
    results = results_folder(tmp_path / "results")
    dest = tmp_path / "paper"
    kdbench("report", results, dest)
    for ext in ("md", "tex", "csv", "json"):
        assert (dest / "tables" / f"leaderboard.{ext}").stat().st_size > 100
    assert {p.name for p in (dest / "figures").iterdir()} == {"parity-mlp.png", "parity-mlp.pdf"}
    assert (dest / "suite.yaml").read_text() == SUITE and (dest / "mine.py").is_file()
    versions = json.loads((dest / "versions.json").read_text())
    for key in ("kdbench", "torch", "python", "git", "plugins", "suite_sha256"):
        assert key in versions
    assert {"kind": "method", "name": "one-shot", "version": "1", "from": "built-in"} in versions["plugins"]
    assert versions["used_by_runs"]["methods"] == ["labels 3", "one-shot 3"]
    readme = (dest / "README.md").read_text()
    assert "## Reproduce" in readme and "kdbench report results/" in readme and "How to cite" in readme
    # the run folders' JSON is copied, weights are not; failed runs keep their traceback
    copied = sorted(p.relative_to(dest / "results").as_posix() for p in (dest / "results").rglob("*") if p.is_file())
    assert copied == ["runs/a/config.json", "runs/a/curve.json", "runs/a/summary.json",
                      "runs/b/config.json", "runs/b/curve.json", "runs/b/summary.json",
                      "runs/c/config.json", "runs/c/curve.json", "runs/c/summary.json", "runs/c/traceback.txt",
                      "suite.yaml", "teachers/t-1/summary.json"]


def test_tables_rebuild_from_the_copied_run_folders(tmp_path):
    results = results_folder(tmp_path / "results")
    kdbench("report", results, tmp_path / "paper")
    kdbench("report", tmp_path / "paper" / "results", tmp_path / "again")
    for ext in ("md", "tex", "csv", "json"):
        first = (tmp_path / "paper" / "tables" / f"leaderboard.{ext}").read_text()
        assert (tmp_path / "again" / "tables" / f"leaderboard.{ext}").read_text() == first
    assert (tmp_path / "paper" / "tables" / "leaderboard.md").read_text() == load_results(results).leaderboard(fmt="md")
    assert "run c (labels, seed 0) failed" in (tmp_path / "paper" / "tables" / "leaderboard.md").read_text()


def test_report_errors(tmp_path):
    assert "not a kdbench results folder" in kdbench("report", tmp_path, tmp_path / "x", expect=2).output
    results = results_folder(tmp_path / "results")
    assert "must differ" in kdbench("report", results, results, expect=2).output
