"""Fair tuning (a suite's tune: block): every tuned method gets the same number of trials, chosen on
dev seeds only, reported on the test seeds; sweeps resume, run in parallel, and are reported."""

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import ROOT, kdbench

import kdbench as api

PLUGINS = ROOT / "tests" / "data" / "plugins"
SEEDS, DEV = [0, 1], [100, 101]
SUITE = """
name: tuned
seeds: {seeds}
budget: {{flops: 2e6}}
eval: {{points: 4{target}}}
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
  dev_seeds: {dev}
  objective: {objective}
  sampler: {sampler}
  space:
{space}
"""
METHODS = "  - name: labels\n  - name: one-shot"
SPACE = ('    one-shot: {temperature: {low: 0.5, high: 4}}\n'
         '    "*": {student.lr: {low: 1.0e-3, high: 3.0e-2, log: true}}')


def tuned_suite(path: Path, methods=METHODS, space=SPACE, trials=3, objective="auc", sampler="random",
                seeds=SEEDS, dev=DEV, target="", plugins=()) -> Path:
    """Write a tiny tuned suite to ``path`` and return it."""
    path.write_text(SUITE.format(methods=methods, space=space, trials=trials, objective=objective, sampler=sampler,
                                 seeds=seeds, dev=dev, target=target, plugins=[str(p) for p in plugins]))
    return path


def studies(out: Path) -> dict[str, list]:
    """{study name: its trials} from the Optuna journal of results folder ``out``."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "tuning" / "optuna.journal")))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
            for s in optuna.get_all_study_summaries(storage)}


def configs(out: Path, ids) -> list[dict]:
    return [json.loads((out / "runs" / i / "config.json").read_text()) for i in ids]


def auc(curve: list[dict], metric: str = "accuracy") -> float:
    """The oracle: mean metric over the FLOPs spanned, by numpy's trapezoid rule."""
    x = np.array([p["flops"] for p in curve], float)
    y = np.array([p[metric] for p in curve], float)
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny sweep, run once through the CLI (read-only for the tests)."""
    folder = tmp_path_factory.mktemp("tuned")
    suite = tuned_suite(folder / "suite.yaml")
    result = kdbench("run", suite, "-o", folder / "out", "-q")
    return suite, folder / "out", result


def test_every_method_gets_the_same_number_of_trials(swept):
    _, out, result = swept
    found = studies(out)
    assert sorted(name.split("/")[1] for name in found) == ["labels", "one-shot"]
    for trials in found.values():
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for method in ("labels", "one-shot"):
        record = json.loads((out / "tuning" / "parity-mlp" / f"{method}.json").read_text())
        assert len(record["trials"]) == 3 and all(len(t["runs"]) == len(DEV) for t in record["trials"])
    assert "16 runs executed" in result.output  # 2 methods x 3 trials x 2 dev seeds + 2 methods x 2 test seeds


def test_no_test_seed_is_ever_in_a_trial(swept):
    _, out, _ = swept
    manifest = json.loads((out / "suite.json").read_text())
    trial_ids = manifest["tuning_run_ids"]
    assert len(trial_ids) == 12 and not set(trial_ids) & set(manifest["run_ids"])
    assert {c["seed"] for c in configs(out, trial_ids)} == set(DEV)
    assert {c["seed"] for c in configs(out, manifest["run_ids"])} == set(SEEDS)
    records = api.load_results(out).tuning()
    assert {r["seed"] for ids in records.run_ids for r in configs(out, ids)} == set(DEV)
    # trials distil from the dev teacher (default: the first teacher seed + 100), test runs from the suite's
    assert {c["teacher_seed"] for c in configs(out, trial_ids)} == {100}
    assert {c["teacher_seed"] for c in configs(out, manifest["run_ids"])} == {0}
    assert all(set(o) == {f"seed {s} (teacher 100)" for s in DEV} for o in records.objectives)


def test_a_trial_scores_the_mean_over_its_dev_runs_and_the_best_is_chosen(swept):
    _, out, _ = swept
    trials = api.load_results(out).tuning()
    for row in trials.itertuples():
        curves = [json.loads((out / "runs" / i / "curve.json").read_text()) for i in row.run_ids]
        assert row.objective == pytest.approx(np.mean([auc(c) for c in curves]), rel=1e-9)
    for method, g in trials.groupby("method"):
        journal = next(t for name, t in studies(out).items() if name.split("/")[1] == method)
        assert sorted(t.value for t in journal) == pytest.approx(sorted(g.objective))
        best = g.loc[g.objective.idxmax()]
        assert g.chosen.sum() == 1 and bool(best.chosen)
        # the test runs use the chosen settings, on the test seeds
        tests = [c for c in configs(out, json.loads((out / "suite.json").read_text())["run_ids"])
                 if c["method_label"] == method]
        assert sorted(c["seed"] for c in tests) == SEEDS
        for c in tests:
            assert c["student_recipe"]["lr"] == best.settings["student.lr"]
            if method == "one-shot":
                assert c["method_params"]["temperature"] == best.settings["temperature"]


def test_the_leaderboard_reports_test_seeds_only_with_the_protocol(swept):
    _, out, _ = swept
    board = json.loads(kdbench("leaderboard", out, "-f", "json").output)
    methods = board["tasks"][0]["methods"]
    assert {m["method"]: m["n"] for m in methods} == {"labels": 2, "one-shot": 2}  # test seeds only
    trials = api.load_results(out).tuning()
    for m in methods:  # tuning FLOPs: every trial run's student FLOPs
        ids = [i for ids in trials[trials.method == m["method"]].run_ids for i in ids]
        flops = sum(json.loads((out / "runs" / i / "summary.json").read_text())["flops"] for i in ids)
        assert m["tuning_flops"] == flops
    assert board["tuning_runs"] == 12
    text = (out / "leaderboard.md").read_text()
    assert "Tuning FLOPs" in text and "12 tuning runs on dev seeds, not shown" in text
    assert "other run folder" not in text
    assert "same budget of 3 trials (random sampler" in text and "dev seeds [100, 101]" in text
    assert "Sensitivity to settings" in text and "Chosen settings: labels: student.lr=" in text


def test_the_sensitivity_table_against_the_trials(swept):
    _, out, _ = swept
    trials = api.load_results(out).tuning()
    data = json.loads(kdbench("tune-report", out, "-f", "json").output)["tasks"][0]
    assert len(data["trials"]) == 6
    for row in data["sensitivity"]:
        values = sorted(trials[trials.method == row["method"]].objective)
        assert (row["best"], row["median"], row["worst"]) == pytest.approx((values[-1], values[1], values[0]))
        assert row["within"] == sum(values[-1] - v <= 0.05 for v in values)
    text = kdbench("tune-report", out).output
    assert text.count("| one-shot ") == 4 and "temperature=" in text and "(chosen)" in text  # 3 trials + 1 row
    csv = kdbench("tune-report", out, "-f", "csv").output.strip().splitlines()
    assert len(csv) == 7 and "method_within" in csv[0]


def test_report_and_figures_include_the_sweep(swept, tmp_path):
    _, out, _ = swept
    kdbench("report", out, tmp_path / "report")
    for ext in ("md", "tex", "csv", "json"):
        assert (tmp_path / "report" / "tables" / f"tuning.{ext}").is_file()
    assert (tmp_path / "report" / "figures" / "tuning-parity-mlp.png").stat().st_size > 0
    again = tmp_path / "again"  # the report's copy of the results rebuilds the tuning tables
    kdbench("report", tmp_path / "report" / "results", again)
    assert (again / "tables" / "tuning.md").read_text() == (tmp_path / "report" / "tables" / "tuning.md").read_text()


def test_a_rerun_runs_nothing_and_plan_counts_the_trials(swept):
    suite, out, _ = swept
    result = kdbench("run", suite, "-o", out, "-q")
    assert "0 runs executed" in result.output
    assert all(len(t) == 3 for t in studies(out).values())
    plan = kdbench("plan", suite, "-o", out, "--probe-steps", "0").output
    assert "the sweep adds 12 trial runs" in " ".join(plan.split())


def test_tune_report_without_a_sweep_exits_2(tmp_path, write_suite):
    from conftest import tiny_suite

    kdbench("run", write_suite(tiny_suite()), "-o", tmp_path / "plain", "-q")
    assert "no tuning sweep recorded" in kdbench("tune-report", tmp_path / "plain", expect=2).output


def test_an_interrupted_sweep_resumes_without_redoing_a_trial(tmp_path, monkeypatch):
    counter = tmp_path / "interrupt-at"
    # the 3rd run of `interrupts` to reach step 3 sends Ctrl-C: in round 3 (a labels trial and an
    # interrupts trial a round, in that order), after the labels trial of that round has finished
    counter.write_text("3")
    monkeypatch.setenv("KDBENCH_TEST_INTERRUPT", str(counter))
    methods = "  - name: labels\n  - name: interrupts"
    space = '    interrupts: {knob: {low: 0.5, high: 2}}\n    "*": {student.lr: {low: 1.0e-3, high: 3.0e-2, log: true}}'
    suite = tuned_suite(tmp_path / "suite.yaml", methods=methods, space=space, dev=[100], trials=4,
                        plugins=[PLUGINS / "interrupts.py"])
    out = tmp_path / "out"
    kdbench("run", suite, "-o", out, "-q", expect=130)
    assert int(counter.read_text()) == 0
    before = {d.name: (d / "summary.json").stat().st_mtime_ns for d in (out / "runs").iterdir()
              if (d / "summary.json").is_file()}
    assert len(before) == 5  # 3 labels trials, 2 interrupts trials
    assert any(t.state == optuna.trial.TrialState.RUNNING for trials in studies(out).values() for t in trials)
    status = json.loads(kdbench("status", out, "--format", "json").stdout)  # every run named, folder or not
    assert {(r["task"], r["method"], r["trial"]) for r in status["runs"]} == {
        ("parity-mlp", "labels", True), ("parity-mlp", "interrupts", True)}  # both tuned: no test run yet
    kdbench("run", suite, "-o", out, "-q")
    for name, trials in studies(out).items():  # exactly `trials` trials, none asked twice
        assert [t.number for t in trials] == [0, 1, 2, 3], name
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), name
    after = {d.name: (d / "summary.json").stat().st_mtime_ns for d in (out / "runs").iterdir()}
    assert {k: after[k] for k in before} == before  # no finished run was run again
    assert len(after) == 2 * 4 + 2 * 2  # each trial run once, then the test runs


def test_jobs_2_chooses_what_one_process_chooses(tmp_path):
    suite = tuned_suite(tmp_path / "suite.yaml", trials=2, dev=[100], seeds=[0])
    kdbench("run", suite, "-o", tmp_path / "one", "-q")
    kdbench("run", suite, "-o", tmp_path / "two", "-q", "--jobs", "2")
    one, two = (api.load_results(tmp_path / d).tuning() for d in ("one", "two"))
    columns = ["method", "trial", "settings", "objective", "chosen"]
    assert one[columns].to_dict("records") == two[columns].to_dict("records")
    assert one.chosen.sum() == 2


def test_failed_trials_count_and_an_unreached_target_scores_twice_the_budget(tmp_path):
    """A trial whose run fails is one of the method's trials and is never chosen; with
    flops_to_target, a dev run that never reaches the target scores twice its budget."""
    suite = tuned_suite(tmp_path / "suite.yaml", methods="  - name: explodes", dev=[100], seeds=[0], trials=2,
                        space="    explodes: {after: [3, 100000]}", sampler="grid", objective="flops_to_target",
                        target=", target: 1.01", plugins=[PLUGINS / "faulty.py"])
    kdbench("run", suite, "-o", tmp_path / "out", "-q", expect=1)  # a failed (trial) run: exit 1
    trials = api.load_results(tmp_path / "out").tuning().set_index("trial")
    failed = trials[trials.state == "failed"]
    assert len(trials) == 2 and len(failed) == 1 and failed.settings.iloc[0] == {"after": 3}
    assert "boom" in json.dumps(json.loads((tmp_path / "out" / "runs" / failed.run_ids.iloc[0][0]
                                            / "summary.json").read_text()))
    done = trials[trials.state == "complete"].iloc[0]
    assert done.objective == 2 * 2e6 and bool(done.chosen) and not failed.chosen.any()
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "Within 5% of best" in board and "| explodes |        2 |        1 |" in board


def test_the_teacher_is_trained_once_with_every_checkpoint_the_space_reads(tmp_path):
    space = "    progressive: {checkpoints: [[20], [10, 30]]}"
    suite = tuned_suite(tmp_path / "suite.yaml", methods="  - name: progressive", space=space, dev=[100], seeds=[0],
                        trials=2, sampler="grid")
    result = kdbench("run", suite, "-o", tmp_path / "out")
    out = tmp_path / "out"
    trials = api.load_results(out).tuning()
    dev = {c["teacher_id"] for ids in trials.run_ids for c in configs(out, ids)}
    test = {c["teacher_id"] for c in configs(out, json.loads((out / "suite.json").read_text())["run_ids"])}
    assert len(dev) == len(test) == 1 and dev != test
    # the dev teacher in the first round, with every checkpoint the space reads (the second finds it
    # "(cached)"); the test teacher with the test runs, with the chosen trial's checkpoints only
    dev_line = f"teacher {next(iter(dev))}: accuracy"
    lines = [line for line in result.output.splitlines() if line.startswith(dev_line)]
    assert [line.split("(")[-1] for line in lines] == ["trained)", "cached)"]
    assert result.output.count("(trained)") == 2
    summaries = [json.loads((d / "summary.json").read_text()) for d in sorted((out / "teachers").iterdir())]
    chosen = trials[trials.chosen].settings.iloc[0]["checkpoints"]
    assert sorted(s["checkpoints"] for s in summaries) == sorted([[10, 20, 30], chosen])
    assert sorted(s["checkpoints"] for s in trials.settings) == [[10, 30], [20]]  # the grid, each point once
    assert not math.isnan(trials.objective.sum())


def test_the_committed_tuned_suite_is_the_quickstart_with_equal_budgets():
    import yaml

    from conftest import SUITES

    tuned = yaml.safe_load((SUITES / "tuned" / "parity-mlp.yaml").read_text())
    quick = yaml.safe_load((SUITES / "quickstart.yaml").read_text())
    assert tuned["budget"] == quick["budget"] and tuned["eval"] == quick["eval"]
    (t,), (q,) = tuned["tasks"], quick["tasks"]
    assert t["params"] == q["params"] and t["student"] == q["student"]
    assert {**t["teacher"], "checkpoint_every": None} == {**q["teacher"], "checkpoint_every": None}
    assert [m["name"] for m in tuned["methods"]] == [m["name"] for m in quick["methods"]]
    spec = tuned["tune"]
    assert spec["trials"] >= 12 and not set(spec["dev_seeds"]) & set(tuned["seeds"]) and len(tuned["seeds"]) == 5
    assert "student.lr" in spec["space"]["*"]  # every method searches its learning rate
    assert all(name in spec["space"] for name in ("one-shot", "progressive", "curriculum-extraction"))
    kdbench("validate", SUITES / "tuned" / "parity-mlp.yaml")
