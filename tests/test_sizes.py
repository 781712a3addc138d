"""Issue 30, "every size bounded before anything trains" (:mod:`kdbench.run.sizes`): a size that
cannot run is exit 2 from ``validate``, ``plan`` and ``run``, one line naming the field and the
allowed range, before a teacher trains. ``KDBENCH_MEMORY_LIMIT`` caps the memory kdbench believes
the device has, so that the memory cases do not depend on this machine's."""

import os
import subprocess
import sys
import time

from pathlib import Path

import pytest
import torch
from conftest import kdbench

import kdbench as package
from kdbench.errors import UserError

SUITE = """
name: sizes
seeds: [0]
budget: {budget}
tasks:
  - name: parity-mlp
    params: {{{params}}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: {teacher_batch}, steps: {teacher_steps}}}
    student: {{optimizer: adam, lr: 0.01, batch_size: {student_batch}}}
methods:
  - name: one-shot
"""


def suite_file(tmp_path, params="n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256",
               budget="{flops: 2e6}", teacher_batch=16, teacher_steps=50, student_batch=16):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(params=params, budget=budget, teacher_batch=teacher_batch,
                                 teacher_steps=teacher_steps, student_batch=student_batch))
    return path


def refused(tmp_path, suite, *needles, commands=("validate", "plan", "run")):
    """Each command exits 2 with one line holding ``needles``, and trains (writes) nothing."""
    out = tmp_path / "out"
    for command in commands:
        extra = {"validate": (), "plan": ("--probe-steps", "1"), "run": ("-q", "-o", out)}[command]
        result = kdbench(command, suite, *extra, expect=2)
        assert "Traceback" not in result.output
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        for needle in (str(suite), *needles):
            assert needle in result.output, result.output
        assert not (out / "teachers").exists() and not (out / "runs").exists()
    return result.output


def test_a_student_batch_size_that_cannot_fit_is_refused_before_the_teacher_trains(tmp_path):
    """10^13 examples a step: validation used to pass (the budget is in steps), the run failed after
    the teacher trained."""
    suite = suite_file(tmp_path, budget="{steps: 100, method: one-shot}", student_batch=10**13)
    message = refused(tmp_path, suite, "tasks[0].student.batch_size: 10000000000000 examples a step of one-shot",
                      "an example); the cpu has", "(allowed: 1 to ")
    assert "GB" in message


def test_teacher_steps_of_1e11_are_refused(tmp_path):
    """The teacher trained until killed: the "more than 10^9 steps" check covered budgets only."""
    suite = suite_file(tmp_path, teacher_steps=10**11)
    refused(tmp_path, suite, "tasks[0].teacher.steps: 1e+11 steps of the teacher of parity-mlp",
            "(allowed: 1 to 1e+09)")


@pytest.mark.parametrize("budget, field", [
    ("{flops: 2e6}", "tasks[0].params (n: 10, k: 2, depth: 100000, eval_size: 256)"),
    # a budget in steps is priced when the suite is loaded, which builds the models: sized there first
    ("{steps: 100, method: one-shot}", "tasks (parity-mlp).params"),
])
def test_depth_100000_is_refused_at_once_without_building_it(tmp_path, monkeypatch, budget, field):
    """100000 hidden layers of 1000: ~400 GB of weights, which hung with no output; sized on the
    meta device, the build stops as soon as it passes the limit."""
    monkeypatch.setenv("KDBENCH_MEMORY_LIMIT", "2GB")
    suite = suite_file(tmp_path, params="n: 10, k: 2, depth: 100000, eval_size: 256", budget=budget)
    start = time.perf_counter()
    refused(tmp_path, suite, f"{field}: ", "the teacher of parity-mlp alone needs over ~501 MB for its weights",
            "the cpu has 2 GB (KDBENCH_MEMORY_LIMIT)", "(allowed: a model, its training state and a batch under 2 GB)")
    assert time.perf_counter() - start < 30  # three commands; each took minutes, then hung


def test_a_huge_n_is_one_short_line_without_cpp_stack_frames(tmp_path):
    """n = 10^12: torch's allocation error used to be the message, with its C++ stack frames where
    torch shows them (TORCH_SHOW_CPP_STACKTRACES=1: 14 KB)."""
    suite = suite_file(tmp_path, params="n: 1000000000000, k: 2, teacher_width: 8, student_width: 4, "
                                        "eval_size: 64")
    env = {**os.environ, "TORCH_SHOW_CPP_STACKTRACES": "1", "TORCH_DISABLE_ADDR2LINE": "1",
           "PYTHONPATH": str(Path(package.__file__).parents[1])}  # the kdbench under test, in a fresh process
    done = subprocess.run([sys.executable, "-m", "kdbench.cli", "validate", str(suite)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr[-2000:]
    # torch may warn on stderr that it symbolizes the frames; kdbench's message is one short line
    [message] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(message) < 400 and "frame #" not in done.stderr, done.stderr[-2000:]
    for needle in ("tasks[0].params (n: 1000000000000,", "parity-mlp cannot be built with these params: its data "
                   "does not fit:", "GB in one tensor", "(allowed: a model, its training state and a batch under"):
        assert needle in message, message


def test_plan_refuses_a_teacher_step_that_does_not_fit_before_timing_it(tmp_path, monkeypatch):
    """``kdbench plan suites/paper/pcfg-bert.yaml`` was killed by the kernel on a 24 GB machine while
    timing its steps; here a batch of 20000 examples (~5 MB) under a 4 MB limit: refused before any step."""
    monkeypatch.setenv("KDBENCH_MEMORY_LIMIT", "4MB")
    suite = suite_file(tmp_path, params="n: 100, k: 2, teacher_width: 64, student_width: 16, eval_size: 256",
                       teacher_batch=20000)
    refused(tmp_path, suite, "tasks[0].teacher.batch_size: 20000 examples a step of the teacher of parity-mlp need",
            "the cpu has 4 MB (KDBENCH_MEMORY_LIMIT) (allowed: 1 to ", commands=("plan", "validate"))


def test_the_same_suite_fits_without_the_limit(tmp_path, monkeypatch):
    """The estimates do not refuse a size that fits: the suite above is valid under 1 GB."""
    monkeypatch.setenv("KDBENCH_MEMORY_LIMIT", "1GB")
    suite = suite_file(tmp_path, params="n: 100, k: 2, teacher_width: 64, student_width: 16, eval_size: 256",
                       teacher_batch=20000)
    assert "= 1 runs" in kdbench("validate", suite).output


@pytest.mark.parametrize("text, size", [("2GB", 2 * 10**9), ("512MiB", 2**29), ("1e9", 10**9), ("123", 123),
                                        ("20 mb", 2 * 10**7)])
def test_memory_limit_spellings(text, size):
    from kdbench.run.sizes import parse_bytes

    assert parse_bytes(text) == size


def test_a_memory_limit_that_is_not_a_size_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_MEMORY_LIMIT", "lots")
    result = kdbench("validate", suite_file(tmp_path), expect=2)
    assert "KDBENCH_MEMORY_LIMIT: 'lots' is not a size" in result.output
    from kdbench.run.sizes import parse_bytes

    with pytest.raises(UserError):
        parse_bytes("-1GB")


def test_a_memory_limit_above_the_device_memory_overrides_an_estimate_that_overshoots(tmp_path, monkeypatch):
    """The variable is the user's word, both ways: what a 4 MB limit refuses, a 100 TB one (more than this
    machine has) lets through, so an estimate that overshoots (attention measured in full) never blocks a run."""
    suite = suite_file(tmp_path, params="n: 100, k: 2, teacher_width: 64, student_width: 16, eval_size: 256",
                       teacher_batch=20000)
    monkeypatch.setenv("KDBENCH_MEMORY_LIMIT", "4MB")
    kdbench("validate", suite, expect=2)
    monkeypatch.setenv("KDBENCH_MEMORY_LIMIT", "100TB")
    from kdbench.run.sizes import memory_limit

    assert memory_limit(torch.device("cpu")) == 10**14
    assert "= 1 runs" in kdbench("validate", suite).output
