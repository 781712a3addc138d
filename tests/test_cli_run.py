"""The whole path through the CLI: list, run, resume, leaderboard, plan, validate."""

import json
import shutil

from conftest import SUITES, kdbench

from kdbench.run.integrity import record


def test_list_shows_builtins():
    out = kdbench("list").output
    for name in ("parity-mlp", "one-shot", "labels", "local"):
        assert name in out
    assert "built-in" in out


def test_smoke_run_writes_runs_and_leaderboard(smoke_results):
    out, result = smoke_results
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4  # 2 methods x 2 seeds
    for d in runs:
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert summary["flops"] <= summary["budget_flops"]
        curve = json.loads((d / "curve.json").read_text())
        assert curve[0]["step"] == 0 and curve[-1]["step"] == summary["steps"]
        assert not (d / "state.pt").exists()
    board = (out / "leaderboard.md").read_text()
    method_rows = [line for line in board.splitlines() if line.startswith("| ") and "Method" not in line]
    assert sorted(r.split("|")[1].strip() for r in method_rows) == ["labels", "one-shot"]
    assert "Teacher `parity-mlp-" in board and "Budget:" in board


def test_rerun_trains_nothing(smoke_results, tmp_path):
    out = tmp_path / "smoke"  # a copy: the session's fixture is read-only
    shutil.copytree(smoke_results[0], out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    result = kdbench("run", SUITES / "smoke.yaml", "--output", out, "--quiet")
    assert "4 of 4 runs already finished" in result.output
    assert "0 runs executed" in result.output
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    assert before == after


def test_rerun_leaves_up_to_date_outputs_and_redraws_what_changed(smoke_results, tmp_path):
    """Nothing new: the leaderboard and figures are left as they are (the rerun's fixed cost);
    a figure deleted or a run changed: they are written again."""
    out = tmp_path / "smoke"
    shutil.copytree(smoke_results[0], out)
    outputs = [out / "leaderboard.md", out / "figures" / "parity-mlp.png", out / "figures" / "parity-mlp.pdf",
               out / "report.html"]
    kdbench("run", SUITES / "smoke.yaml", "--output", out, "--quiet")
    drawn = {p: p.stat().st_mtime_ns for p in outputs}
    result = kdbench("run", SUITES / "smoke.yaml", "--output", out)
    assert {p: p.stat().st_mtime_ns for p in outputs} == drawn
    assert "| one-shot" in result.output  # still printed
    outputs[1].unlink()
    kdbench("run", SUITES / "smoke.yaml", "--output", out, "--quiet")
    assert outputs[1].is_file() and outputs[0].stat().st_mtime_ns != drawn[outputs[0]]
    board = outputs[0].read_text()
    summary = next(out.glob("runs/*/summary.json"))
    summary.write_text(summary.read_text().replace('"wall_time": ', '"wall_time": 7000'))
    record(summary.parent, summary)  # as kdbench would record a file it rewrote (a hand edit is redone)
    kdbench("run", SUITES / "smoke.yaml", "--output", out, "--quiet")
    assert outputs[0].read_text() != board

    import kdbench as api
    again = api.run_suite(SUITES / "smoke.yaml", out)  # up to date: its results are read when asked
    assert again.executed == [] and len(again.runs()) == 4
    assert list(again.leaderboard().method) == list(api.load_results(out).leaderboard().method)


def test_plan_marks_done_runs(smoke_results):
    out, _ = smoke_results
    result = kdbench("plan", SUITES / "smoke.yaml", "--output", out)
    assert result.output.count("yes") == 4
    assert "one-shot" in result.output


def test_validate_counts_runs():
    result = kdbench("validate", SUITES / "smoke.yaml")
    assert "valid" in result.output and "= 4 runs" in result.output


def test_leaderboard_command_rewrites_file(smoke_results, tmp_path):
    out = tmp_path / "smoke"  # a copy: the session's fixture is read-only
    shutil.copytree(smoke_results[0], out)
    written = (out / "leaderboard.md").read_text()
    (out / "leaderboard.md").unlink()
    result = kdbench("leaderboard", out)
    assert "| one-shot" in result.output
    assert (out / "leaderboard.md").read_text() == written  # rebuilt from the run folders alone
    assert result.output.strip() == written.strip()


def test_leaderboard_on_non_results_folder_is_user_error(tmp_path):
    result = kdbench("leaderboard", tmp_path, expect=2)
    assert "not a kdbench results folder" in result.output
