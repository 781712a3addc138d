"""A suite's claims (``claims:``) judged on its runs: per teacher seed the paired difference over student
seeds, the three verdicts, `kdbench check` (table, --json, --strict), claims.json and the leaderboard's
claims table at the end of `kdbench run`; claims never change a run's id."""

import json
import math
import shutil

import pandas as pd
import pytest

import kdbench
from conftest import kdbench as cli
from conftest import tiny_suite
from kdbench.plugins import load_plugins
from kdbench.results.claims import evaluate_claims
from kdbench.run.pricing import load_suite
from kdbench.suite.model import Suite

# Two teacher seeds x two student seeds of a tiny parity task; every run reaches accuracy 1.0 (the final
# accuracies tie), labels' AUC is ~0.11-0.13 above one-shot's on every pair and one-shot reaches 0.6 first.
SUITE = """
name: tiny-claims
seeds: [0, 1]
teacher_seeds: [0, 1]
budget: {flops: 2.0e+6}
eval: {points: 4, target: 0.6}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}
    teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 50}
    student: {optimizer: adam, lr: 0.01, batch_size: 16}
methods:
  - name: labels
  - name: one-shot
claims:
  - {name: labels learns sooner, better: labels, than: one-shot, metric: auc, holds_on: 0.5}
  - {name: one-shot learns sooner, better: one-shot, than: labels, metric: auc}
  - {name: labels learns sooner on every teacher, better: labels, than: one-shot, metric: auc}
  - {name: one-shot reaches the target first, better: one-shot, than: labels, metric: flops_to_target}
  - {name: labels ends more accurate, better: labels, than: one-shot}
"""
NAMES = ["labels learns sooner", "one-shot learns sooner", "labels learns sooner on every teacher",
         "one-shot reaches the target first", "labels ends more accurate"]


@pytest.fixture(scope="module")
def claimed(tmp_path_factory):
    """The tiny suite run once: (results folder, the run command's output)."""
    root = tmp_path_factory.mktemp("claims")
    (root / "suite.yaml").write_text(SUITE)
    result = cli("run", root / "suite.yaml", "--output", root / "out")
    return root / "out", result.output


def paired_auc(runs: pd.DataFrame, teacher_seed: int) -> list[float]:
    """labels' AUC minus one-shot's per student seed at ``teacher_seed``, computed here from the runs."""
    at = runs[runs.teacher_seed == teacher_seed].pivot(index="seed", columns="method", values="auc")
    return list(at["labels"] - at["one-shot"])


def test_every_claim_is_judged_on_the_paired_differences(claimed):
    out, _ = claimed
    runs = kdbench.load_results(out).runs()
    report = kdbench.check_claims(out)
    assert [c.name for c in report.claims] == NAMES and report.suite == "tiny-claims"
    sooner = report.claims[0]
    for t in sooner.teachers:
        expected = paired_auc(runs, t.teacher_seed)
        assert t.seeds == [0, 1] and t.differences == pytest.approx(expected)
        assert t.mean == pytest.approx(sum(expected) / 2) and t.mean > 0.05
        assert t.std == pytest.approx(abs(expected[0] - expected[1]) / math.sqrt(2))
    verdicts = [(c.metric, c.higher_is_better, c.held, c.verdict) for c in report.claims]
    assert verdicts == [("auc", True, 2, "holds"), ("auc", True, 0, "does not hold"), ("auc", True, 2, "holds"),
                        ("flops_to_target", False, 2, "holds"),  # fewer FLOPs is better
                        ("accuracy", True, 0, "does not hold")]  # a tie (1.0 and 1.0) is not better
    assert [t.mean for t in report.claims[1].teachers] == [-t.mean for t in sooner.teachers]
    assert sooner.summary() == "holds on 2 of 2 teacher seeds (2 student seeds each)"


def test_the_three_verdicts_with_a_run_missing(claimed, tmp_path):
    """Without labels' run on (teacher 0, seed 1), teacher 0 has one pair: not enough runs there. Teacher 1
    alone then decides a claim that holds on half the teachers (holds) and refutes one that must hold on all
    (does not hold); one that must hold on all and holds on teacher 1 waits for teacher 0 (not enough runs)."""
    out = tmp_path / "out"
    shutil.copytree(claimed[0], out)
    runs = kdbench.load_results(out).runs()
    gone = runs[(runs.method == "labels") & (runs.seed == 1) & (runs.teacher_seed == 0)].run_id.item()
    shutil.rmtree(out / "runs" / gone)
    report = kdbench.check_claims(out)
    first, second, third = report.claims[:3]
    assert [t.status for t in first.teachers] == ["not enough runs", "holds"]
    assert first.teachers[0].seeds == [0] and first.teachers[0].differences == pytest.approx(paired_auc(runs, 0)[:1])
    assert [first.verdict, second.verdict, third.verdict] == ["holds", "does not hold", "not enough runs"]
    assert third.summary() == "holds on 1 of 2 teacher seeds (1-2 student seeds each)"
    assert [c.name for c in report.failed] == ["one-shot learns sooner", "labels ends more accurate"]


def test_run_writes_claims_json_and_prints_the_verdicts(claimed):
    out, output = claimed
    assert ("claim labels learns sooner (parity-mlp, auc): holds on 2 of 2 teacher seeds (2 student seeds each): "
            "holds") in output
    assert "claim one-shot learns sooner (parity-mlp, auc): holds on 0 of 2" in output
    saved = json.loads((out / "claims.json").read_text())
    assert saved == json.loads(json.dumps(kdbench.check_claims(out).to_json()))
    first = saved["claims"][0]
    assert (first["verdict"], first["held"], first["teacher_seeds"], first["student_seeds"]) == ("holds", 2, [0, 1], "2")
    assert [t["pairs"] for t in first["teachers"]] == [2, 2]


def test_the_leaderboard_ends_with_the_claims_table(claimed):
    out, _ = claimed
    board = (out / "leaderboard.md").read_text()
    table = board.split("### Claims\n", 1)[1]
    assert "### " not in table  # the last section
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 2 * len(NAMES)  # the header, then a row per claim and teacher seed
    first = kdbench.check_claims(out).claims[0].teachers[0]
    assert [cell.strip() for cell in rows[1].split("|")[1:9]] == [
        "labels learns sooner", "parity-mlp", "auc ↑", "0", f"{first.mean:+.4f} ± {first.std:.4f}", "2/2", "holds",
        "holds on 2 of 2 teacher seeds (2 student seeds each): **holds**"]
    assert "**does not hold**" in rows[3]
    data = json.loads(kdbench.load_results(out).leaderboard(fmt="json"))
    assert [c["name"] for c in data["claims"]] == NAMES and data["claims"][1]["verdict"] == "does not hold"


def test_check_prints_the_table_and_writes_json(claimed, tmp_path):
    out, _ = claimed
    result = cli("check", out, "--json", tmp_path / "c.json")
    assert "the claims of suite tiny-claims" in result.output
    assert "labels learns sooner (parity-mlp, auc): holds on 2 of 2 teacher seeds (2 student seeds each): holds" \
        in result.output
    assert "one-shot reaches the target first (parity-mlp, flops_to_target): holds on 2 of 2" in result.output
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads((out / "claims.json").read_text())
    strict = cli("check", out, "--strict", expect=1)  # two claims do not hold
    assert "labels ends more accurate (parity-mlp, accuracy): holds on 0 of 2 teacher seeds" in strict.output


def test_check_without_claims_is_exit_2(tmp_path, smoke_results):
    out, _ = smoke_results
    result = cli("check", out, expect=2)
    assert f"{out / 'suite.yaml'}: claims: the suite states no claims to check" in result.output
    assert not kdbench.load_results(out).claims().claims


def test_claims_do_not_change_run_ids(write_suite):
    plain = tiny_suite("  - name: labels\n  - name: one-shot")
    claimed = plain + "claims:\n  - {name: a, better: labels, than: one-shot, holds_on: 0.8}\n"
    ids = [{r.run_id for r in load_suite(write_suite(text, f"{i}.yaml"), load_plugins)[0].runs}
           for i, text in enumerate((plain, claimed))]
    assert ids[0] == ids[1] and len(ids[0]) == 2


def frame(rows: list[tuple]) -> pd.DataFrame:
    """runs() rows of one task for evaluate_claims: (method, teacher seed, seed, to_target)."""
    return pd.DataFrame([{"task": "t", "method_label": m, "teacher_seed": ts, "seed": s, "status": "finished",
                          "metric": "accuracy", "higher_is_better": True, "value": 1.0, "auc": 1.0, "to_target": f,
                          "metrics": {}} for m, ts, s, f in rows])


def test_a_run_that_never_reached_the_target_counts_as_infinitely_many_flops():
    suite = Suite.model_validate({
        "name": "s", "seeds": [0, 1], "teacher_seeds": [0, 1], "eval": {"target": 0.9},
        "tasks": [{"name": "parity-mlp", "label": "t"}], "methods": [{"name": "a"}, {"name": "b"}],
        "claims": [{"name": "a first", "better": "a", "than": "b", "metric": "flops_to_target"},
                   {"name": "teacher_kl", "better": "a", "than": "b", "metric": "teacher_kl"}]})
    nan = math.nan  # never reached
    runs = frame([("a", 0, 0, 5.0), ("b", 0, 0, nan), ("a", 0, 1, 7.0), ("b", 0, 1, 6.0),  # teacher 0: -inf, 1
                  ("a", 1, 0, nan), ("b", 1, 0, nan), ("a", 1, 1, 2.0), ("b", 1, 1, 3.0)])  # teacher 1: tie, -1
    first, kl = evaluate_claims(suite, runs)
    assert first.teachers[0].differences == [-math.inf, 1.0] and first.teachers[0].mean == -math.inf
    assert first.teachers[1].differences == [0.0, -1.0] and first.teachers[1].mean == -0.5
    assert first.verdict == "holds" and first.to_json()["teachers"][0]["mean"] == "-inf"
    assert [t.status for t in kl.teachers] == ["not enough runs"] * 2 and kl.verdict == "not enough runs"
    assert kl.higher_is_better is False  # lower KL to the teacher is better


def test_editing_the_claims_reruns_nothing_and_rejudges(claimed, tmp_path):
    """Claims are not part of a run's identity: a suite that drops two claims runs nothing again, and its
    claims.json and leaderboard hold the claims left; one that drops them all has no claims.json."""
    out = tmp_path / "out"
    shutil.copytree(claimed[0], out)
    fewer = SUITE.replace("  - {name: labels ends more accurate, better: labels, than: one-shot}\n", "") \
        .replace("  - {name: one-shot learns sooner, better: one-shot, than: labels, metric: auc}\n", "")
    (tmp_path / "fewer.yaml").write_text(fewer)
    result = cli("run", tmp_path / "fewer.yaml", "--output", out, "--quiet")
    assert "0 runs executed, 8 skipped" in result.output
    assert [c["name"] for c in json.loads((out / "claims.json").read_text())["claims"]] == [
        NAMES[0], NAMES[2], NAMES[3]]
    assert "labels ends more accurate" not in (out / "leaderboard.md").read_text()
    (tmp_path / "none.yaml").write_text(SUITE.split("claims:")[0])
    cli("run", tmp_path / "none.yaml", "--output", out, "--quiet")
    assert not (out / "claims.json").exists() and "### Claims" not in (out / "leaderboard.md").read_text()


def test_a_margin_keeps_chance_level_noise_from_winning():
    """Two methods at chance differ by noise: without a margin the noise's sign decides the claim; with
    ``margin: 0.1`` only a difference above 0.1 holds (the mean must exceed it, in the metric's direction)."""
    suite = Suite.model_validate({
        "name": "s", "seeds": [0, 1], "teacher_seeds": [0, 1],
        "tasks": [{"name": "parity-mlp", "label": "t"}], "methods": [{"name": "a"}, {"name": "b"}],
        "claims": [{"name": "any", "better": "a", "than": "b"},
                   {"name": "by 0.1", "better": "a", "than": "b", "margin": 0.1}]})
    values = {(0, 0): (0.502, 0.498), (0, 1): (0.500, 0.497),  # teacher 0: a at chance, 0.0035 above b
              (1, 0): (1.0, 0.5), (1, 1): (0.95, 0.49)}  # teacher 1: a learned
    runs = pd.DataFrame([{"task": "t", "method_label": m, "teacher_seed": ts, "seed": s, "status": "finished",
                          "metric": "accuracy", "higher_is_better": True, "value": v[i], "auc": 0.5,
                          "to_target": math.nan, "metrics": {}}
                         for (ts, s), v in values.items() for i, m in enumerate("ab")])
    plain, margin = evaluate_claims(suite, runs)
    assert [t.status for t in plain.teachers] == ["holds", "holds"] and plain.verdict == "holds"
    assert [t.status for t in margin.teachers] == ["does not hold", "holds"] and margin.verdict == "does not hold"
    assert margin.to_json()["margin"] == 0.1 and plain.to_json()["margin"] == 0.0
    with pytest.raises(ValueError, match="margin"):
        Suite.model_validate({**suite.model_dump(), "claims": [{"name": "x", "better": "a", "than": "b",
                                                               "margin": -1}]})
