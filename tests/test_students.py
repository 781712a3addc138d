"""Every finished run keeps its student; `kdbench export` turns it (or a teacher) into a folder a
user loads without kdbench's internals, and the loaded model scores what the run recorded."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdbench.models import MLP, load_exported
from kdbench.plugins import load_plugins
from kdbench.formats import fmt_bytes
from kdbench.run.runner import build_task
from kdbench.suite.identity import Run
from kdbench.run.pricing import load_suite

from conftest import kdbench, tiny_suite

CPU = torch.device("cpu")


def task_of(out: Path, run_folder: Path):
    """The task instance the run in ``run_folder`` trained on (its evaluation set)."""
    run = Run.from_config(json.loads((run_folder / "config.json").read_text()))
    return build_task(run, load_plugins(), CPU, out)


def kept_files(run_folder: Path) -> list[Path]:
    return [run_folder / name for name in ("student.safetensors", "student.json", "tokenizer.json")
            if (run_folder / name).exists()]


def test_finished_runs_keep_their_student_and_the_leaderboard_counts_it(smoke_results):
    out, _ = smoke_results
    runs = sorted((out / "runs").iterdir())
    total = 0
    for d in runs:
        record = json.loads((d / "student.json").read_text())
        config = json.loads((d / "config.json").read_text())
        assert record["model"] == {"class": "kdbench.models.MLP", "args": {
            "n_in": config["task_params"]["n"], "hidden": [config["task_params"]["student_width"]], "n_out": 2}}
        assert record["weights"] == "student.safetensors" and record["tokenizer"] is None
        size = sum(f.stat().st_size for f in kept_files(d))
        assert json.loads((d / "summary.json").read_text())["student_bytes"] == size
        total += size
    board = (out / "leaderboard.md").read_text()
    assert f"Students kept: {len(runs)} of {len(runs)} runs, {fmt_bytes(total)} in all" in board


def test_an_exported_student_loads_in_one_line_and_scores_what_the_run_recorded(smoke_results, tmp_path):
    out, _ = smoke_results
    for d in sorted((out / "runs").iterdir()):
        recorded = json.loads((d / "summary.json").read_text())
        kdbench("export", d.name, tmp_path / d.name, "--results", out)
        config = json.loads((tmp_path / d.name / "config.json").read_text())
        assert config["class"] == "kdbench.models.MLP"
        model = MLP(**config["args"])  # the load README documents, without kdbench's helpers
        model.load_state_dict(load_file(tmp_path / d.name / "model.safetensors"))
        task = task_of(out, d)
        with torch.no_grad():
            assert task.evaluate(model.eval()) == task.evaluate(load_exported(tmp_path / d.name))
            assert task.evaluate(model)[recorded["metric"]] == recorded["metrics"][recorded["metric"]]


def test_an_exported_teacher_scores_what_its_summary_recorded(smoke_results, tmp_path):
    out, _ = smoke_results
    (teacher,) = (out / "teachers").iterdir()
    kdbench("export", "--teacher", teacher.name, tmp_path / "teacher", "--results", out)
    model = load_exported(tmp_path / "teacher")
    assert isinstance(model, MLP) and model.config["hidden"] == [128]
    run_folder = next((out / "runs").iterdir())
    with torch.no_grad():
        metrics = task_of(out, run_folder).evaluate(model)
    assert metrics["accuracy"] == json.loads((teacher / "summary.json").read_text())["metrics"]["accuracy"]


def test_export_refuses_what_it_cannot_write(smoke_results, tmp_path):
    out, _ = smoke_results
    run_id = next((out / "runs").iterdir()).name
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    result = kdbench("export", run_id, busy, "--results", out, expect=2)
    assert "not empty" in result.output and (busy / "mine.txt").read_text() == "keep me"
    kdbench("export", run_id, busy, "--results", out, "--force")
    assert {p.name for p in busy.iterdir()} == {"mine.txt", "config.json", "model.safetensors"}
    assert "no such run" in kdbench("export", "nope", tmp_path / "x", "--results", out, expect=2).output
    assert "--results" in kdbench("export", run_id, tmp_path / "x", expect=2).output
    assert "no such teacher" in kdbench("export", "--teacher", "nope", tmp_path / "x", "--results", out,
                                            expect=2).output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("how", ["suite", "cli"])
def test_students_are_not_kept_when_the_suite_or_the_cli_says_so(write_suite, tmp_path, how):
    text = tiny_suite("  - name: labels")
    if how == "suite":
        text = "keep_students: false\n" + text
    path = write_suite(text)
    out = tmp_path / "out"
    kdbench("run", path, "-o", out, "-q", *(["--no-keep-students"] if how == "cli" else []))
    (run,) = (out / "runs").iterdir()
    assert kept_files(run) == [] and json.loads((run / "summary.json").read_text())["student_bytes"] == 0
    assert "Students kept" not in (out / "leaderboard.md").read_text()
    assert "1 skipped" in kdbench("run", path, "-o", out, "-q").output  # done without them: not redone
    assert "kept no student" in kdbench("export", run.name, tmp_path / "x", "--results", out, expect=2).output
    default, _ = load_suite(write_suite(tiny_suite("  - name: labels"), "default.yaml"), load_plugins)
    assert default.runs[0].run_id == run.name  # keeping students is not part of the run's identity
