"""Tuning on dev teacher seeds: a sweep's trials distil from teachers of ``tune.dev_teacher_seeds``
(default: the suite's first teacher seed + 100), never from the suite's ``teacher_seeds``, which only
the test runs use; the dev teachers are trained once each, and what they cost is reported."""

import json
import re
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, kdbench

import kdbench as api
from kdbench.commands import load, suite_status
from kdbench.results.plots import plot_tuning
from kdbench.run.validation import check_runs
from kdbench.tuning.report import task_tuning
from kdbench.tuning.sweep import Sweep

PLUGINS = ROOT / "tests" / "data" / "plugins"
SUITE = """
name: dev-teachers
seeds: [0]
teacher_seeds: {teacher_seeds}
budget: {{flops: 2e6}}
eval: {{points: 4}}
plugins: {plugins}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 50, checkpoint_every: 10}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
methods:
{methods}
tune:
  trials: {trials}
  dev_seeds: [100]
{dev_teachers}  objective: auc
  sampler: random
  space:
{space}
"""
METHODS = "  - name: labels\n  - name: one-shot"
SPACE = ('    one-shot: {temperature: {low: 0.5, high: 4}}\n'
         '    "*": {student.lr: {low: 1.0e-3, high: 3.0e-2, log: true}}')


def suite_file(path: Path, teacher_seeds=(0,), dev_teachers=None, methods=METHODS, space=SPACE, trials=2,
               plugins=()) -> Path:
    """Write a tiny tuned suite (``dev_teachers``: its ``tune.dev_teacher_seeds``, None: left out)."""
    line = "" if dev_teachers is None else f"  dev_teacher_seeds: {json.dumps(dev_teachers)}\n"
    path.write_text(SUITE.format(teacher_seeds=list(teacher_seeds), dev_teachers=line, methods=methods, space=space,
                                 trials=trials, plugins=[str(p) for p in plugins]))
    return path


def configs(out: Path, ids) -> list[dict]:
    return [json.loads((out / "runs" / i / "config.json").read_text()) for i in ids]


def expanded_teacher_ids(path: Path, teacher_seeds: list[int]) -> dict[int, str]:
    """{teacher seed: teacher id} of the runs of the same suite, untuned, with ``teacher_seeds``: the
    ids that expansion gives those teachers, against which the trials' are checked."""
    text = re.sub(r"(?m)^teacher_seeds: .*$", f"teacher_seeds: {teacher_seeds}", path.read_text().split("tune:")[0])
    plain = path.with_name("untuned.yaml")
    plain.write_text(text)
    loaded, _ = load(plain)
    return {r.teacher_seed: r.teacher_id for r in loaded.runs}


# ---------------------------------------------------------------- the block


@pytest.mark.parametrize("teacher_seeds, given, resolved", [((0,), None, [100]), ((3, 4), None, [103]),
                                                            ((0,), [7, 9], [7, 9])])
def test_dev_teacher_seeds_default_to_the_first_teacher_seed_plus_100(tmp_path, teacher_seeds, given, resolved):
    path = suite_file(tmp_path / "suite.yaml", teacher_seeds, given)
    assert load(path)[0].tune.spec.dev_teacher_seeds == resolved
    trials = 2 * 2 * len(resolved)  # 2 methods x 2 trials x 1 dev seed x the dev teacher seeds
    text = " ".join(kdbench("validate", path).output.split())
    assert f"x {len(resolved)} dev teacher seed(s) {resolved} = {trials} trial runs" in text


@pytest.mark.parametrize("teacher_seeds, given, says", [
    ((0, 5), [5, 6], "tune.dev_teacher_seeds: [5] are also test teacher seeds (teacher_seeds: [0, 5])"),
    ((0, 100), None, "tune.dev_teacher_seeds: [100] (the default: the first teacher seed + 100) are also test "
                     "teacher seeds (teacher_seeds: [0, 100])"),
    ((0,), [6, 6], "dev teacher seeds must be distinct and >= 0, got [6, 6]"),
    ((0,), [-1], "dev teacher seeds must be distinct and >= 0, got [-1]"),
    ((0,), [], "List should have at least 1 item"),
])
def test_bad_dev_teacher_seeds_exit_2_before_anything_trains(tmp_path, teacher_seeds, given, says):
    path = suite_file(tmp_path / "suite.yaml", teacher_seeds, given)
    result = kdbench("run", path, "-o", tmp_path / "out", expect=2)
    text = " ".join(result.output.split())
    assert text.startswith(f"error: {path}: tune.dev_teacher_seeds: ") and says in text
    assert not (tmp_path / "out" / "runs").exists()


def test_the_study_key_holds_the_dev_teacher_seeds_not_the_test_teacher_seeds(tmp_path):
    """Changing the dev teachers starts a new study; changing the test teachers keeps the sweep."""
    def names(teacher_seeds, dev_teachers) -> list[str]:
        loaded, registry = load(suite_file(tmp_path / "suite.yaml", teacher_seeds, dev_teachers))
        sweep = Sweep(loaded, registry, tmp_path / "out", check_runs(loaded, registry), jobs=1)
        return [s.study.study_name for s in sweep.studies]

    default = names((0,), None)
    assert names((0,), [100]) == default  # the default, given: the same sweep
    assert names((0, 1), [100]) == default  # more test teachers: the same sweep (they are not tuned on)
    moved = names((0,), [50])
    assert all(a != b for a, b in zip(moved, default)) and len(moved) == 2


# ---------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Two teacher seeds, two dev teacher seeds: 2 methods x 2 trials x 1 dev seed x 2 dev teachers."""
    folder = tmp_path_factory.mktemp("dev-teachers")
    suite = suite_file(folder / "suite.yaml", teacher_seeds=(0, 1), dev_teachers=[50, 51])
    result = kdbench("run", suite, "-o", folder / "out", "-q")
    return suite, folder / "out", result


def test_trials_run_on_the_dev_teachers_and_test_runs_on_the_suites(swept):
    suite, out, result = swept
    manifest = json.loads((out / "suite.json").read_text())
    assert "12 runs executed" in result.output  # 8 trial runs + 2 methods x 1 seed x 2 teacher seeds
    dev_ids, test_ids = expanded_teacher_ids(suite, [50, 51]), expanded_teacher_ids(suite, [0, 1])
    trials = api.load_results(out).tuning()
    assert len(trials) == 4
    for row in trials.itertuples():
        runs = configs(out, row.run_ids)
        assert [(c["seed"], c["teacher_seed"]) for c in runs] == [(100, 50), (100, 51)]
        assert [c["teacher_id"] for c in runs] == [dev_ids[50], dev_ids[51]]
        assert row.objectives.keys() == {"seed 100 (teacher 50)", "seed 100 (teacher 51)"}
    tests = configs(out, manifest["run_ids"])
    assert sorted((c["method_label"], c["teacher_seed"], c["teacher_id"]) for c in tests) == [
        (m, t, test_ids[t]) for m in ("labels", "one-shot") for t in (0, 1)]
    assert {c["seed"] for c in tests} == {0}
    for c in tests:  # with the settings chosen on the dev teachers
        chosen = trials[trials.chosen & (trials.method == c["method_label"])].settings.iloc[0]
        assert c["student_recipe"]["lr"] == chosen["student.lr"]


def test_the_results_folder_holds_the_dev_teachers_and_their_cost(swept):
    _, out, _ = swept
    dev_ids = expanded_teacher_ids(swept[0], [50, 51])
    summaries = {tid: json.loads((out / "teachers" / tid / "summary.json").read_text()) for tid in dev_ids.values()}
    assert all(s["status"] == "finished" and s["flops"] > 0 for s in summaries.values())
    assert len(list((out / "teachers").iterdir())) == 4  # 2 dev teachers (one-shot's trials) + 2 test teachers
    record = json.loads((out / "tuning" / "parity-mlp" / "one-shot.json").read_text())
    assert record["protocol"]["dev_teacher_seeds"] == [50, 51] and record["protocol"]["teacher_seeds"] == [0, 1]
    assert record["protocol"]["dev_teachers"] == [
        {"teacher_id": dev_ids[s], "teacher_seed": s, "flops": summaries[dev_ids[s]]["flops"], "given": False}
        for s in (50, 51)]
    labels = json.loads((out / "tuning" / "parity-mlp" / "labels.json").read_text())
    assert labels["protocol"]["dev_teachers"] == []  # labels reads no teacher
    text = " ".join((out / "leaderboard.md").read_text().split())
    flops = sum(s["flops"] for s in summaries.values())
    assert "over dev seeds [100] on dev teacher seeds [50, 51]" in text
    assert "run on the test seeds (teacher seed(s) [0, 1]) shown here" in text
    assert f"not in that column: 2 trained, {flops:.3g} FLOPs." in text
    fig = plot_tuning(task_tuning(api.load_results(out).tuning(), "parity-mlp"), ["labels", "one-shot"])
    assert "dev seeds [100] on dev teacher seeds [50, 51]" in fig.axes[0].get_title()


def test_plan_validate_and_status_count_the_trials_and_dev_teachers(swept):
    suite, out, _ = swept
    plan = " ".join(kdbench("plan", suite, "-o", out, "--probe-steps", "0").output.split())
    assert ("the sweep adds 8 trial runs (2 trials x 1 dev seed(s) [100] x 2 dev teacher seed(s) [50, 51] per tuned "
            "method and task) and 2 dev teacher(s)") in plan
    assert "= 8 trial runs" in " ".join(kdbench("validate", suite).output.split())
    _, rows, teachers = suite_status(suite, out)
    assert sorted(t.method for t in teachers) == ["dev teacher"] * 2 + ["teacher"] * 2
    assert {t.run_id for t in teachers if t.method == "dev teacher"} == set(expanded_teacher_ids(suite, [50, 51])
                                                                             .values())
    assert sorted((r.trial, r.seed) for r in rows) == [(False, 0)] * 4 + [(True, 100)] * 8
    assert "12 finished; 8 of these runs are tuning trials (dev seeds on 2 dev teacher(s))" in " ".join(
        kdbench("status", out).output.split())
    assert "0 runs executed" in kdbench("run", suite, "-o", out, "-q").output


def test_an_interrupted_sweep_resumes_to_what_an_uninterrupted_one_chooses(tmp_path, monkeypatch):
    """Ctrl-C in round 2 (after the dev teacher is trained); the rerun trains no dev teacher again,
    redoes no trial, and ends with the trials and settings of a sweep never interrupted."""
    methods = "  - name: one-shot\n  - name: interrupts"
    space = ('    one-shot: {temperature: {low: 0.5, high: 4}}\n'
             '    interrupts: {knob: {low: 0.5, high: 2}}')
    suite = suite_file(tmp_path / "suite.yaml", methods=methods, space=space, trials=3,
                       plugins=[PLUGINS / "interrupts.py"])
    kdbench("run", suite, "-o", tmp_path / "whole", "-q")
    counter = tmp_path / "interrupt-at"
    counter.write_text("2")  # the interrupts trial of round 2 sends Ctrl-C
    monkeypatch.setenv("KDBENCH_TEST_INTERRUPT", str(counter))
    out = tmp_path / "out"
    first = kdbench("run", suite, "-o", out, expect=130).output
    assert int(counter.read_text()) == 0
    dev_id = expanded_teacher_ids(suite, [100])[100]
    assert f"teacher {dev_id}: accuracy" in first and first.count("(trained)") == 1  # the dev teacher only
    monkeypatch.delenv("KDBENCH_TEST_INTERRUPT")
    second = kdbench("run", suite, "-o", out).output
    dev_lines = [line for line in second.splitlines() if line.startswith(f"teacher {dev_id}: accuracy")]
    assert dev_lines and all(line.endswith("(cached)") for line in dev_lines)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out / "tuning" / "optuna.journal")))
    for summary in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
        assert [t.number for t in trials] == [0, 1, 2]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    columns = ["method", "trial", "settings", "objective", "chosen"]
    whole, resumed = (api.load_results(tmp_path / d).tuning()[columns].to_dict("records") for d in ("whole", "out"))
    assert resumed == whole
    assert sorted(json.loads((out / "suite.json").read_text())["run_ids"]) == sorted(
        json.loads((tmp_path / "whole" / "suite.json").read_text())["run_ids"])
