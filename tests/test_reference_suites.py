"""The reference suites (suites/cpu/*.yaml and suites/lm/*.yaml, up to an hour each) stay valid: each validates at its
real sizes, and its first steps run end to end through the CLI with every model and step count
shrunk to seconds. wikipedia-bert reads the corpus named by KDBENCH_WIKI_CORPUS: here the
WikiText-2 excerpt shipped in data/."""

import pytest
import yaml

from conftest import DATA, SUITES, kdbench

REFERENCE = sorted((SUITES / "cpu").glob("*.yaml")) + sorted((SUITES / "lm").glob("*.yaml"))
STEPS = 8  # student steps of every shrunk run
TEACHER_STEPS, EVERY = 20, 5


def shrink(suite: dict) -> dict:
    """``suite`` at a tiny size: the same tasks, methods and tuning, with 16-wide models, a
    20-step teacher, 8 student steps, one seed and one trial per tuned method."""
    suite = {**suite, "seeds": suite["seeds"][:1], "teacher_seeds": suite["teacher_seeds"][:1],
             "eval": {"points": 2}}
    budget = suite["budget"]
    suite["budget"] = {"student_steps": STEPS} if "student_steps" in budget else {**budget, "steps": STEPS}
    for task in suite["tasks"]:
        params = task["params"]
        for key in params:
            if key.endswith("_width"):
                params[key] = 16
            elif key.endswith("_heads"):
                params[key] = 2
        params["eval_size"] = 32
        for key, small in (("seq_len", 32), ("vocab_size", 300), ("n", 8), ("samples", 16)):
            if key in params:
                params[key] = min(params[key], small)
        task["teacher"] = {**task["teacher"], "steps": TEACHER_STEPS, "checkpoint_every": EVERY, "batch_size": 8}
        task["student"] = {**task.get("student", {}), "batch_size": 8}
    for method in suite["methods"]:
        if "every" in method.get("params", {}):
            method["params"]["every"] = EVERY
    if "tune" in suite:
        tune = suite["tune"]
        tune.update(trials=1, dev_seeds=tune["dev_seeds"][:1])
        for space in tune["space"].values():
            if "every" in space:
                space["every"] = [EVERY]
    return suite


@pytest.fixture(autouse=True)
def bundled_corpus(monkeypatch):
    monkeypatch.setenv("KDBENCH_WIKI_CORPUS", str(DATA / "wikitext-2-excerpt"))


def test_there_is_a_reference_suite_per_task():
    assert [p.stem for p in REFERENCE] == ["parity-transformer", "pcfg-bert", "wikipedia-bert", "pcfg-lm",
                                           "wikitext-lm"]


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_suite_validates_at_its_real_size(path):
    result = kdbench("validate", path)
    assert "valid" in result.output


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_suite_runs_its_first_steps(path, tmp_path):
    suite = yaml.safe_load(path.read_text())
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(shrink(suite), sort_keys=False))
    out = tmp_path / "out"
    result = kdbench("run", small, "--output", out, "--quiet")
    assert " 0 failed, 0 diverged" in result.output
    board = (out / "leaderboard.md").read_text()
    for method in suite["methods"]:
        assert f"| {method.get('label', method['name'])} " in board
