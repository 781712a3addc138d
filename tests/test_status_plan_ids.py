"""Run ids as users copy them: never wrapped or cut in `status` and `plan`, on a narrow terminal or
piped; accepted by unique prefix wherever a command takes one; `status` and `plan` as JSON; and
`status` after an interruption naming every run and the teacher that was training."""

import itertools
import json
import sys

import pytest
from conftest import SUITES, kdbench, tiny_suite
from filelock import FileLock
from typer.testing import CliRunner

from kdbench.cli.app import app
from kdbench.errors import UserError
from kdbench.progress import LogConsole
from kdbench.run import runner, teachers
from kdbench.run.store import resolve_run_id, resolve_teacher_id

TWO_BY_TWO = tiny_suite("  - name: labels\n  - name: one-shot").replace("seeds: [0]", "seeds: [0, 1]")


def invoke(*args, env=None):
    """The CLI in-process with its stdout apart (what `| jq` reads); exit code 0 asserted."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def fake_folder(tmp_path, runs=(), teacher_ids=()):
    """A results folder holding empty run and teacher folders of these ids."""
    for run_id in runs:
        (tmp_path / "runs" / run_id).mkdir(parents=True)
    for tid in teacher_ids:
        (tmp_path / "teachers" / tid).mkdir(parents=True)
    (tmp_path / "runs").mkdir(exist_ok=True)
    return tmp_path


def test_an_exact_id_wins_a_unique_prefix_resolves_and_others_are_refused(tmp_path):
    out = fake_folder(tmp_path, ["ab12", "ab1234567890", "ab9999999999", "cd0000000000"],
                      ["parity-mlp-11111111", "parity-mlp-22222222"])
    assert resolve_run_id(out, "ab12") == "ab12"  # though "ab1234567890" begins with it too
    assert resolve_run_id(out, "ab9") == "ab9999999999"
    assert resolve_run_id(out, "cd0000000000") == "cd0000000000"
    assert resolve_teacher_id(out, "parity-mlp-2") == "parity-mlp-22222222"
    with pytest.raises(UserError) as ambiguous:
        resolve_run_id(out, "ab")
    assert str(ambiguous.value) == (f"ab: 3 runs in {out / 'runs'} begin with it: ab12, ab1234567890, ab9999999999; "
                                    "give more of the id")
    with pytest.raises(UserError) as missing:
        resolve_run_id(out, "ef")
    assert str(missing.value) == (f"ef: no such run in {out / 'runs'} (no run id is or begins with it); runs there: "
                                  "ab12, ab1234567890, ab9999999999, cd0000000000")
    with pytest.raises(UserError, match="2 teachers in .* begin with it: parity-mlp-11111111, parity-mlp-22222222"):
        resolve_teacher_id(out, "parity")
    with pytest.raises(UserError, match="no such run .*; runs there: ab12, "):
        resolve_run_id(out, "")  # an empty prefix names nothing


def test_an_ambiguous_prefix_lists_up_to_twenty_matches(tmp_path):
    out = fake_folder(tmp_path, [f"ab{i:010d}" for i in range(25)])
    result = kdbench("export", "ab", tmp_path / "model", "--results", out, expect=2)
    text = " ".join(result.output.split())
    assert text.startswith(f"error: ab: 25 runs in {out / 'runs'} begin with it: ab0000000000, ab0000000001, ")
    assert "ab0000000019 and 5 more; give more of the id" in text and "ab0000000020" not in text
    assert not (tmp_path / "model").exists()


def test_export_takes_a_run_id_prefix_and_a_teacher_id_prefix(smoke_results, tmp_path):
    out, _ = smoke_results
    ids = sorted(d.name for d in (out / "runs").iterdir())
    prefix = next(run_id[:n] for run_id in ids for n in range(3, 12)
                  if sum(i.startswith(run_id[:n]) for i in ids) == 1)
    full = next(i for i in ids if i.startswith(prefix))
    kdbench("export", prefix, tmp_path / "by-prefix", "--results", out)
    kdbench("export", full, tmp_path / "by-id", "--results", out)
    for name in ("config.json", "model.safetensors"):  # the same run's student
        assert (tmp_path / "by-prefix" / name).read_bytes() == (tmp_path / "by-id" / name).read_bytes()
    (teacher,) = (out / "teachers").iterdir()
    kdbench("export", "--teacher", teacher.name[:len("parity-mlp-") + 2], tmp_path / "teacher", "--results", out)
    assert (tmp_path / "teacher" / "model.safetensors").is_file()


@pytest.fixture
def interrupted_teacher(write_suite, tmp_path, monkeypatch):
    """A two-method, two-seed suite whose run was stopped while its teacher trained (its loop asked to
    stop at its 21st step boundary: state saved at step 21 of 50): no run folder is written yet."""
    suite = write_suite(TWO_BY_TWO)
    calls = itertools.count()
    with monkeypatch.context() as patch:
        patch.setattr(teachers, "stop_requested", lambda: next(calls) >= 20)
        result = kdbench("run", suite, "-o", tmp_path / "out", "-q", "--device", "cpu", expect=130)
    assert "interrupted" in result.output
    assert not any((tmp_path / "out" / "runs").iterdir())
    return suite, tmp_path / "out"


def test_status_after_an_interruption_names_every_run_and_the_teacher(interrupted_teacher):
    suite, out = interrupted_teacher
    doc = json.loads(invoke("status", out, "--format", "json").stdout)
    assert doc["results"] == str(out) and doc["counts"] == {"not started": 4}
    assert sorted((r["task"], r["method"], r["seed"], r["teacher_seed"], r["state"]) for r in doc["runs"]) == [
        ("parity-mlp", m, s, 0, "not started") for m in ("labels", "one-shot") for s in (0, 1)]
    (teacher,) = doc["teachers"]
    assert teacher["teacher_id"].startswith("parity-mlp-") and teacher["teacher_seed"] == 0
    assert (teacher["state"], teacher["detail"]) == ("interrupted", "step 21/50 saved; resumes on the next run")
    assert not teacher["dev"] and teacher["job"] == ""
    same = json.loads(invoke("status", suite, "-o", out, "-f", "json").stdout)  # from the suite: the same rows
    assert same["runs"] == doc["runs"] and same["teachers"] == doc["teachers"]
    with FileLock(str(out / "teachers" / teacher["teacher_id"] / ".lock")):  # as a `kdbench run` training it
        (training,) = json.loads(invoke("status", out, "-f", "json").stdout)["teachers"]
    assert (training["state"], training["detail"]) == ("training", "step 21/50 saved")
    text = invoke("status", out).output
    assert "?" not in text and "4 not started" in text
    assert kdbench("run", suite, "-o", out, "-q", "--device", "cpu").exit_code == 0  # resumes
    doc = json.loads(invoke("status", out, "-f", "json").stdout)
    assert doc["counts"] == {"finished": 4} and doc["teachers"][0]["state"] == "finished"


def test_a_run_interrupted_at_a_step_is_named_with_the_step_saved(write_suite, tmp_path, monkeypatch):
    suite = write_suite(tiny_suite("  - name: labels").replace("seeds: [0]", "seeds: [0, 1, 2]"))
    calls = itertools.count()
    with monkeypatch.context() as patch:  # students' loops only: the first run ends, the second stops mid-way
        patch.setattr(runner, "stop_requested", lambda: next(calls) >= 190)
        kdbench("run", suite, "-o", tmp_path / "out", "-q", "--device", "cpu", expect=130)
    doc = json.loads(invoke("status", tmp_path / "out", "-f", "json").stdout)
    states = sorted((r["method"], r["state"], r["detail"].split(" ")[0]) for r in doc["runs"])
    assert states == [("labels", "finished", "accuracy"), ("labels", "interrupted", "step"),
                      ("labels", "not started", "")]
    (stopped,) = [r for r in doc["runs"] if r["state"] == "interrupted"]
    step, total = map(int, stopped["detail"].split(" ")[1].split("/"))
    assert 0 < step < total and stopped["detail"].endswith(" saved; resumes on the next run")


def whole_ids(text: str, ids) -> None:
    """Every id appears whole in ``text``, on one line."""
    lines = text.splitlines()
    for i in ids:
        assert any(i in line for line in lines), (i, text)


@pytest.mark.parametrize("terminal", [False, True])
def test_ids_are_whole_on_a_narrow_console_and_piped(interrupted_teacher, monkeypatch, terminal):
    suite, out = interrupted_teacher
    doc = json.loads(invoke("status", out, "-f", "json").stdout)
    ids = [r["run_id"] for r in doc["runs"]] + [t["teacher_id"] for t in doc["teachers"]]
    if terminal:  # a 60-column terminal: the table is drawn wider rather than cut
        narrow = LogConsole(width=60, force_terminal=True, color_system=None)
        monkeypatch.setattr(sys.modules["kdbench.cli.app"], "out_console", narrow)
    env = {"COLUMNS": "60"}
    status = invoke("status", out, env=env).stdout
    whole_ids(status, ids)
    assert ("│" in status) == terminal  # piped: plain aligned columns
    plan = invoke("plan", suite, "-o", out, "--probe-steps", "0", env=env).stdout
    whole_ids(plan, [r["run_id"] for r in doc["runs"]])


def test_plan_as_json(write_suite, tmp_path):
    suite = write_suite(TWO_BY_TWO)
    result = invoke("plan", suite, "-o", tmp_path / "out", "--device", "cpu", "--probe-steps", "2", "-f", "json")
    doc = json.loads(result.stdout)  # nothing else on stdout
    assert doc["suite"] == "tiny" and doc["device"] == "cpu" and doc["probe_steps"] == 2
    assert sorted((r["method"], r["seed"], r["done"]) for r in doc["runs"]) == [
        (m, s, False) for m in ("labels", "one-shot") for s in (0, 1)]
    for row in doc["runs"]:
        assert row["budget_flops"] == 2e6 and row["teacher_seed"] == 0 and row["teacher_id"].startswith("parity-mlp-")
        assert row["steps"] == sum(p["steps"] for p in row["phases"]) > 0
        assert sum(p["steps"] * p["flops_per_step"] for p in row["phases"]) <= row["budget_flops"]
        assert 0 <= row["seconds"] and row["seconds_low"] <= row["seconds"] <= row["seconds_high"]
    (teacher,) = doc["teachers"]
    assert teacher["teacher_id"] == doc["runs"][0]["teacher_id"] and teacher["seconds"] > 0 and not teacher["dev"]
    totals = doc["totals"]
    assert (totals["runs"], totals["runs_left"], totals["trial_runs"]) == (4, 4, 0)
    assert totals["seconds_left"] == pytest.approx(sum(r["seconds"] for r in doc["runs"]))
    assert totals["seconds"] == pytest.approx(totals["seconds_left"] + teacher["seconds"])
    assert doc["headline"].startswith(f"tiny: 4 runs (0 done) -> {tmp_path / 'out'}; est. ")
    untimed = json.loads(invoke("plan", SUITES / "smoke.yaml", "--probe-steps", "0", "-f", "json").stdout)
    assert untimed["totals"]["seconds"] is None and all(r["seconds"] is None for r in untimed["runs"])


def test_plan_of_a_tuned_suite_puts_the_sweep_in_its_headline(write_suite, tmp_path):
    text = TWO_BY_TWO + (
        "tune:\n  trials: 3\n  dev_seeds: [100, 101]\n  sampler: random\n  space:\n"
        "    one-shot: {temperature: {low: 0.5, high: 4}}\n")
    suite = write_suite(text)
    doc = json.loads(invoke("plan", suite, "-o", tmp_path / "out", "--device", "cpu", "--probe-steps", "2",
                            "-f", "json").stdout)
    totals = doc["totals"]
    assert totals["trial_runs"] == 3 * 2  # one tuned method and task: trials x dev seeds x 1 dev teacher seed
    one_shot = next(r for r in doc["runs"] if r["method"] == "one-shot")
    assert totals["trial_seconds"] == pytest.approx(6 * one_shot["seconds"])
    assert [t["dev"] for t in doc["teachers"]] == [False, True]
    assert totals["seconds"] == pytest.approx(sum(r["seconds"] for r in doc["runs"]) + totals["trial_seconds"]
                                              + sum(t["seconds"] for t in doc["teachers"]))
    headline = doc["headline"]
    assert headline.startswith(f"tiny: 4 test runs (0 done) + the sweep's 6 trial runs -> {tmp_path / 'out'}; est. ")
    assert " + sweep " in headline and " + teachers " in headline
    untimed = invoke("plan", suite, "-o", tmp_path / "out", "--probe-steps", "0").stdout.splitlines()[0]
    assert untimed == f"tiny: 4 test runs (0 done) + the sweep's 6 trial runs -> {tmp_path / 'out'}"
