"""The local launcher's default jobs: without --jobs, -L jobs= or the suite's launcher jobs, as
many as cores are free (the cores usable less those busy now, rounded), at least 1
and at most the runs to do; 1 is in-process; an explicit value, 1 included, is obeyed; the
choice is logged, read once per suite. The load and the core count are faked: the machine is shared."""

import os

import pytest
from conftest import kdbench, tiny_suite

import kdbench as api
from kdbench.launchers import LaunchContext, local
from kdbench.launchers.local import FreeCores, LocalLauncher, LocalParams, free_cores

TWO_RUNS = tiny_suite("  - name: one-shot\n  - name: labels")


@pytest.fixture
def machine(monkeypatch):
    """The real local.free_cores (conftest pins one core) on a faked machine: ``machine(cores, load)``;
    the worker pool is replaced by a record of its jobs that runs them here (no spawn in a test)."""
    monkeypatch.setattr(local, "free_cores", free_cores)
    pools = []

    def launch_pool(runs, ctx, jobs, threads, units=None):
        pools.append(jobs)
        return LocalLauncher.launch_here(runs, ctx)

    monkeypatch.setattr(local, "launch_pool", launch_pool)

    def fake(cores: int, load):
        monkeypatch.setattr(local, "available_cores", lambda: cores)
        monkeypatch.setattr(local, "cpu_times", lambda: None)  # no /proc/stat: the load average is read
        if load is None:
            monkeypatch.delattr(os, "getloadavg", raising=False)
        else:
            monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
        return pools

    return fake


@pytest.mark.parametrize("cores, load, runs, jobs, reason", [
    (2, 0.2, 12, 2, "2 of 2 cores free, 0.2 busy; --jobs N sets it"),
    (2, 1.2, 12, 1, "1 of 2 cores free, 1.2 busy; --jobs N sets it"),
    (2, 3.4, 12, 1, "0 of 2 cores free, 3.4 busy; --jobs N sets it"),
    (8, 1.6, 3, 3, "6 of 8 cores free, 1.6 busy, 3 runs to do; --jobs N sets it"),
    (8, 0.0, 1, 1, "8 of 8 cores free, 0.0 busy, 1 run to do; --jobs N sets it"),
    (4, None, 12, 4, "4 of 4 cores free; --jobs N sets it"),  # no load average on this system
])
def test_the_default_is_the_free_cores_at_most_the_runs(machine, cores, load, runs, jobs, reason):
    machine(cores, load)
    assert free_cores() == FreeCores(cores, load)
    assert free_cores().jobs(runs) == (jobs, reason)


def test_two_free_cores_run_two_jobs_and_say_so(machine, write_suite, tmp_path):
    pools = machine(2, 0.1)
    result = kdbench("run", write_suite(TWO_RUNS), "-o", tmp_path / "out", "-L", "threads=1")
    assert pools == [2]
    assert "jobs: 2 (2 of 2 cores free, 0.1 busy; --jobs N sets it)" in result.output
    assert "2 runs executed" in result.output


def test_one_free_core_runs_in_process(machine, write_suite, tmp_path):
    pools = machine(2, 1.4)
    result = kdbench("run", write_suite(TWO_RUNS), "-o", tmp_path / "out", "-L", "threads=1")
    assert pools == []
    assert "jobs: 1 (1 of 2 cores free, 1.4 busy; --jobs N sets it)" in result.output


def test_one_run_to_do_runs_in_process(machine, write_suite, tmp_path):
    pools = machine(2, 0.0)
    result = kdbench("run", write_suite(tiny_suite()), "-o", tmp_path / "out", "-L", "threads=1")
    assert pools == [] and "jobs: 1 (2 of 2 cores free, 0.0 busy, 1 run to do;" in result.output


@pytest.mark.parametrize("given", [["--jobs", "1"], ["-L", "jobs=1"], ["suite"], ["python"]])
def test_an_explicit_1_is_obeyed(machine, write_suite, tmp_path, given):
    pools = machine(2, 0.0)
    if given == ["suite"]:
        suite = write_suite(TWO_RUNS + "launcher: {name: local, options: {jobs: 1}}\n")
    else:
        suite = write_suite(TWO_RUNS)
    if given == ["python"]:
        done = api.run_suite(suite, tmp_path / "out", jobs=1, launcher_options=["threads=1"])
        assert len(done.executed) == 2 and pools == []
        return
    args = [] if given == ["suite"] else given
    result = kdbench("run", suite, "-o", tmp_path / "out", "-L", "threads=1", *args)
    assert pools == [] and "jobs:" not in result.output


def test_the_free_cores_are_read_once_per_suite_and_each_new_choice_logged(monkeypatch):
    reads, lines = [], []
    monkeypatch.setattr(local, "free_cores", lambda: reads.append(1) or FreeCores(4, 1.0))
    reporter = type("Log", (), {"log": staticmethod(lines.append)})()
    ctx = LaunchContext(out=None, registry=None, run_options=None, reporter=reporter)
    # a tuning sweep launches round after round; the last rounds may have fewer runs
    assert [LocalLauncher.default_jobs([None] * n, ctx) for n in (6, 6, 2, 6)] == [3, 3, 2, 3]
    assert reads == [1]
    assert lines == ["jobs: 3 (3 of 4 cores free, 1.0 busy; --jobs N sets it)",
                     "jobs: 2 (3 of 4 cores free, 1.0 busy, 2 runs to do; --jobs N sets it)",
                     "jobs: 3 (3 of 4 cores free, 1.0 busy; --jobs N sets it)"]


def test_jobs_not_given_is_none_and_given_values_stay():
    assert LocalParams().jobs is None and LocalParams(jobs=1).jobs == 1


def test_plan_says_what_run_would_choose(machine, write_suite):
    machine(2, 0.0)
    out = kdbench("plan", write_suite(TWO_RUNS), "--probe-steps", "0").output.replace("\n", " ")
    assert "jobs: 2 at once, as `kdbench run` would choose (2 of 2 cores free, 0.0 busy;" in out
    suite = write_suite(TWO_RUNS + "launcher: {name: local, options: {jobs: 1}}\n", "pinned.yaml")
    out = kdbench("plan", suite, "--probe-steps", "0", "-f", "json").output
    assert '"jobs": 1' in out and "the suite's launcher options" in out


def test_busy_cores_are_measured_now_from_cpu_times(monkeypatch):
    """/proc/stat's busy share over the sample times the cores, not the load average (which still
    counts a run that ended seconds ago)."""
    samples = iter([(1000, 4000), (1150, 4200)])  # 150 of 200 jiffies busy across the machine
    monkeypatch.setattr(local, "cpu_times", lambda: next(samples))
    monkeypatch.setattr(local.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(local.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    monkeypatch.setattr(local.time, "sleep", lambda s: None)
    assert local.busy_cores() == pytest.approx(1.5)
    assert local.FreeCores(2, 1.5).jobs(12) == (1, "0 of 2 cores free, 1.5 busy; --jobs N sets it")
