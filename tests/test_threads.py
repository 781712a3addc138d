"""The local launcher's default threads: 1 unless a timed probe finds the cores a job owns
at least SPEEDUP_NEEDED times faster; -L threads=T overrides; the choice is logged."""

import json

import pytest
import torch

from conftest import curves, kdbench, tiny_suite
from kdbench.launchers import local, threads
from kdbench.launchers.local import free_cores


@pytest.fixture
def seen(monkeypatch):
    """Four cores, and the torch threads each run trained with (recorded around execute_run)."""
    monkeypatch.setattr(local, "available_cores", lambda: 4)
    record, original = [], local.execute_run

    def execute_run(*args, **kwargs):
        record.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(local, "execute_run", execute_run)
    return record


def fake_probe(monkeypatch, seconds: dict):
    """Step times per thread count, instead of timing this (shared, noisy) machine."""
    probed = []

    def step_seconds(job, n):
        probed.append(n)
        return seconds[n]

    monkeypatch.setattr(threads, "step_seconds", step_seconds)
    return probed


@pytest.mark.parametrize("one,four,chosen", [(2.0, 1.0, 4), (1.0, 0.9, 1), (1.0, 3.0, 1)])
def test_more_threads_only_when_the_probe_finds_them_faster(write_suite, tmp_path, monkeypatch, seen,
                                                            one, four, chosen):
    probed = fake_probe(monkeypatch, {1: one, 4: four})
    before = torch.get_num_threads()
    result = kdbench("run", write_suite(tiny_suite("  - name: one-shot\n  - name: labels")), "-o", tmp_path / "out")
    assert seen == [chosen, chosen]
    assert probed == [1, 4, 1, 4]  # interleaved rounds
    assert f"threads: {chosen} per job (a step of teacher " in result.output.replace("\n", " ")
    assert torch.get_num_threads() == before  # the caller's setting is restored


def test_given_threads_are_used_without_a_probe(write_suite, tmp_path, monkeypatch, seen):
    probed = fake_probe(monkeypatch, {1: 1.0, 4: 1.0})
    result = kdbench("run", write_suite(tiny_suite()), "-o", tmp_path / "out", "-L", "threads=3")
    assert seen == [3] and probed == [] and "threads:" not in result.output
    # CPU numbers depend on the thread count (not bit for bit), so every record says which it was
    summaries = [*(tmp_path / "out").glob("runs/*/summary.json"), *(tmp_path / "out").glob("teachers/*/summary.json")]
    assert len(summaries) == 2 and all(json.loads(p.read_text())["threads"] == 3 for p in summaries)


def test_the_probe_leaves_the_results_unchanged(write_suite, tmp_path, monkeypatch):
    """The probe trains throwaway models: the runs' curves equal those of a run with -L threads=1."""
    monkeypatch.setattr(local, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "SPEEDUP_NEEDED", float("inf"))  # the real probe runs, and chooses 1
    suite = write_suite(tiny_suite("  - name: one-shot\n  - name: curriculum-extraction"))
    result = kdbench("run", suite, "-o", tmp_path / "probed")
    assert "threads: 1 per job (a step of teacher" in result.output.replace("\n", " ")
    kdbench("run", suite, "-o", tmp_path / "given", "-L", "threads=1")
    probed, given = curves(tmp_path / "probed"), curves(tmp_path / "given")
    assert len(probed) == 2 and probed == given


def test_a_worker_pool_with_one_core_per_job_needs_no_probe(write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(local, "available_cores", lambda: 2)
    probed = fake_probe(monkeypatch, {1: 1.0, 2: 1.0})
    result = kdbench("run", write_suite(tiny_suite("  - name: one-shot\n  - name: labels")), "-o", tmp_path / "out",
                     "--jobs", "2")
    assert probed == [] and "2 worker processes x 1 thread(s)" in result.output


def test_plan_measures_with_the_threads_run_would_choose_and_says_when_the_machine_is_busy(write_suite, monkeypatch):
    from kdbench import commands

    monkeypatch.setattr(local, "available_cores", lambda: 4)
    monkeypatch.setattr(local, "free_cores", free_cores)  # the real one: conftest pins one core
    fake_probe(monkeypatch, {1: 1.0, 2: 3.0, 4: 3.0})  # more threads slower: as on a busy machine
    monkeypatch.setattr(local, "cpu_times", lambda: None)  # no /proc/stat: the load average is read
    monkeypatch.setattr(local.os, "getloadavg", lambda: (6.0, 5.0, 4.0))
    suite = write_suite(tiny_suite("  - name: one-shot\n  - name: labels"))
    plan = commands.plan_suite(suite, probe_steps=5)
    assert plan.threads == 1 and plan.busy and plan.load == (6.0, 4)
    for row in plan.runs:
        assert 0 < row.estimate.low <= row.estimate.mid <= row.estimate.high
    low, high = plan.spread_left
    assert low <= plan.seconds_left <= high
    out = kdbench("plan", suite, "--probe-steps", "5").output.replace("\n", " ")
    assert "threads: 1, as `kdbench run` would choose" in out
    assert "the machine looked busy (6.0 cores busy of 4)" in out
    monkeypatch.setattr(local.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert "looked busy" not in kdbench("plan", suite, "--probe-steps", "5").output
