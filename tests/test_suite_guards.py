"""Issue 30, "writes confined" and "smaller": a suite's ``output:`` stays in the working directory,
plugins cannot give one name twice, a relabelled method takes its new label, an interrupt says what
was saved, and a pickled checkpoint gets kdbench's message only (the other cases are bad suites in
tests/data/bad_suites)."""

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, kdbench, tiny_suite

FAULTY = ROOT / "tests" / "data" / "plugins" / "faulty.py"
BROKEN_PHASES = ROOT / "tests" / "data" / "plugins" / "broken_phases.py"
RULE = "a suite's output is a folder inside the working directory"


def one_line_error(result, *needles):
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output


# ------------------------------------------------------------------ output: confined


@pytest.mark.parametrize("output, why", [
    ("{outside}/results", "is an absolute path"),
    ("~/results", "starts at the home folder"),
    ("../results", "climbs out with '..'"),
    ("results/../../escaped", "climbs out with '..'"),
    ("link/results", "leads to '{outside}/results' through a symlink"),
])
def test_a_suite_output_outside_the_working_directory_is_refused(tmp_path, monkeypatch, output, why):
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir(), outside.mkdir()
    (work / "link").symlink_to(outside)
    monkeypatch.chdir(work)
    output, why = output.format(outside=outside), why.format(outside=outside)
    suite = work / "suite.yaml"
    suite.write_text(tiny_suite("  - name: labels") + f"output: '{output}'\n")
    for command in (("validate", suite), ("run", suite, "-q"), ("plan", suite, "--probe-steps", "0")):
        one_line_error(kdbench(*command, expect=2), str(suite), f"output: {output!r} {why}", RULE, "-o/--output")
    assert list(outside.iterdir()) == [] and sorted(p.name for p in work.iterdir()) == ["link", "suite.yaml"]


def test_a_suite_output_inside_the_working_directory_and_any_o_are_allowed(tmp_path, monkeypatch):
    """``output:`` relative to the working directory (through a symlink that stays inside, too) is
    fine, and so is the default ``out/<name>``; ``-o`` (the user's own choice) may be anywhere."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere" / "results"
    (work / "real").mkdir(parents=True)
    (work / "inside").symlink_to(work / "real")
    monkeypatch.chdir(work)
    for output in ("results/tiny", "inside/tiny", "./a/b"):
        suite = work / "suite.yaml"
        suite.write_text(tiny_suite("  - name: labels") + f"output: '{output}'\n")
        assert "= 1 runs" in kdbench("validate", suite).output
    kdbench("run", suite, "-o", elsewhere, "-q")
    assert (elsewhere / "leaderboard.md").is_file() and not (work / "a").exists()


# ------------------------------------------------------------------ plugins


DUPLICATE = """
import torch.nn.functional as F
from kdbench import Method, Phase, hookimpl, logits


class First(Method):
    name, version, needs_teacher = "{name}", "1", False

    def phases(self, ctx, params):
        return [Phase("a", loss=lambda b: F.cross_entropy(logits(ctx.student, b), b.labels))]


class Second(First):
    version = "2"


class Other(First):
    name = "{other}"


@hookimpl
def kdbench_register_methods():
    return [{classes}]
"""


def test_two_classes_of_one_plugin_giving_one_name_are_refused(tmp_path, write_suite):
    """The last one silently won; now the plugin fails to load, naming both classes, as a plugin
    clashing with a built-in does; a suite naming the plugin file ends with exit 2."""
    plugin = tmp_path / "dup.py"
    plugin.write_text(DUPLICATE.format(name="dup", other="other-dup", classes="First, Second, Other, First"))
    suite = write_suite(tiny_suite("  - name: dup"))
    result = kdbench("validate", suite, "--plugin", plugin, expect=2)
    one_line_error(result, str(plugin), "failed to load",
                   "method 'dup' is registered twice by this plugin (First, Second)")
    listing = kdbench("list", "--plugin", plugin).output
    assert "registered twice by this plugin" in listing and " dup " not in listing
    from kdbench.plugins import load_plugins

    registry = load_plugins((str(plugin),))
    assert "dup" not in registry.methods and registry.methods["other-dup"].cls.__name__ == "Other"


def test_a_second_plugin_giving_a_name_already_taken_is_refused(tmp_path, write_suite):
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text(DUPLICATE.format(name="shared", other="only-first", classes="First, Other"))
    second.write_text(DUPLICATE.format(name="shared", other="only-second", classes="Second, Other"))
    suite = write_suite(tiny_suite("  - name: shared"))
    result = kdbench("validate", suite, "--plugin", first, "--plugin", second, expect=2)
    one_line_error(result, str(second), f"method 'shared' is already provided by file {first}")


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_method_without_phases_is_named(write_suite, command):
    path = write_suite(tiny_suite("  - name: no-phases") + f"plugins: [{BROKEN_PHASES}]\n")
    args = ["--probe-steps", "0"] if command == "plan" else []
    one_line_error(kdbench(command, path, *args, expect=2), str(path), "methods[0] (no-phases) on tasks[0]",
                   "phases() returned an empty list; a method trains in at least one Phase")


# ------------------------------------------------------------------ labels


def test_a_relabelled_method_takes_its_new_label_without_training_again(tmp_path, write_suite):
    """Labels are not part of a run id: the finished runs are reused, and the leaderboard, the Python
    API and ``kdbench status`` show the suite's current label (from OUT/suite.json), not the one the
    runs were made under."""
    from kdbench import load_results

    out = tmp_path / "out"
    kdbench("run", write_suite(tiny_suite("  - name: labels\n    label: old-name")), "-o", out, "-q")
    result = kdbench("run", write_suite(tiny_suite("  - name: labels\n    label: new-name")), "-o", out, "-q")
    assert "0 runs executed, 1 skipped" in result.output
    board = (out / "leaderboard.md").read_text()
    assert "| new-name " in board and "old-name" not in board
    runs = load_results(out).runs()
    assert list(runs.method) == ["new-name"] and list(runs.method_label) == ["new-name"]
    assert "new-name" in kdbench("status", out).output
    (run_id,) = runs.run_id
    assert json.loads((out / "runs" / run_id / "config.json").read_text())["method_label"] == "old-name"
    labels = json.loads((out / "suite.json").read_text())["labels"]
    assert list(labels) == [run_id] and (labels[run_id]["task"], labels[run_id]["method"]) == ("parity-mlp", "new-name")


def test_two_labels_for_the_same_runs_are_refused(write_suite):
    path = write_suite(tiny_suite("  - name: labels\n    label: a\n  - name: labels\n    label: b"))
    one_line_error(kdbench("validate", path, expect=2), str(path), "methods: 'a' and 'b' are the same runs")


# ------------------------------------------------------------------ interrupts


@pytest.mark.parametrize("save_every, said", [
    (60, "nothing saved (it stopped before its first save); the next `kdbench run` starts it over"),
    (1e-9, "state saved at step 20; the next `kdbench run` resumes it from there"),
])
def test_an_interrupt_inside_a_step_says_what_was_saved(tmp_path, write_suite, save_every, said):
    """A plugin hung inside a step and interrupted again stops without saving: the message said
    "the run in progress saved its state" even when no state file existed. Now each run says what is
    on disk: nothing, or the state of the last periodic save."""
    flag = tmp_path / "flag"
    flag.touch()
    methods = f"  - name: interrupted-mid-step\n    params: {{flag: '{flag}', at: 20}}"
    path = write_suite(tiny_suite(methods) + f"plugins: [{FAULTY}]\nsave_every_s: {save_every}\n")
    out = tmp_path / "out"
    result = kdbench("run", path, "-o", out, "-q", expect=130)
    (folder,) = (out / "runs").iterdir()
    assert f"run {folder.name} (parity-mlp / interrupted-mid-step, seed 0): {said}" in result.output
    assert "saved its state" not in result.output
    assert (folder / "state.pt").exists() == (save_every < 1)
    if save_every < 1:
        assert torch.load(folder / "state.pt", weights_only=True)["step"] == 20
    assert "1 runs executed" in kdbench("run", path, "-o", out, "-q").output


# ------------------------------------------------------------------ checkpoints


def test_a_pickled_teacher_checkpoint_gets_kdbench_message_only(tmp_path, write_suite):
    """torch warned of the pickle protocol before kdbench's exit-2 message."""
    checkpoint = tmp_path / "pickled.pt"
    with open(checkpoint, "wb") as f:
        pickle.dump({"weight": torch.zeros(2)}, f)
    text = tiny_suite("  - name: one-shot").replace("    student:", f"    teacher_checkpoint: {checkpoint}\n"
                                                                  "    student:")
    path = write_suite(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = kdbench("validate", path, expect=2)
    assert [str(w.message) for w in caught] == []
    one_line_error(result, str(path), "tasks[0].teacher_checkpoint", f"{checkpoint} is not a PyTorch state dict",
                   "torch.save(model.state_dict())")
    assert "UserWarning" not in result.output and "protocol" not in result.output
