"""Progress while work runs: plain lines when the output is not a terminal (at least every tenth
of a job's steps and every minute), the events of ``run_suite(progress=...)``, and the warning
on a job estimated over an hour."""

import re
from collections import defaultdict

import pytest

import kdbench
from kdbench.progress import ProgressEvent, Reporter
from tests.conftest import kdbench as cli, tiny_suite

TWO_METHODS = "  - name: one-shot\n  - name: labels"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRun:
    run_id, task_label, method_label, seed, teacher_id, teacher_seed = "abc123", "parity-mlp", "one-shot", 0, "t-1", 0


def reporter_with(clock, **kw):
    """A Reporter printing lines (as if piped) into a list instead of the console."""
    printed, warned = [], []
    reporter = Reporter(lines=True, clock=clock, warn=warned.append, **kw)
    reporter.log = printed.append
    return reporter, printed, warned


def test_piped_run_prints_a_line_every_tenth_of_each_run(write_suite, tmp_path):
    out = tmp_path / "out"
    result = cli("run", write_suite(tiny_suite(TWO_METHODS)), "--output", out)
    run_ids = [d.name for d in (out / "runs").iterdir()]
    assert len(run_ids) == 2
    for run_id in run_ids:
        lines = [line for line in result.output.splitlines() if line.startswith(f"run {run_id} parity-mlp/")]
        assert len(lines) >= 10, result.output
        steps = [int(m.group(1)) for m in (re.search(r": step (\d+)/(\d+) \(\d+%\)", line) for line in lines)]
        assert steps == sorted(steps) and steps[-1] == int(re.search(r"/(\d+) ", lines[-1]).group(1))
        assert all("accuracy " in line and "ETA " in line for line in lines[1:])
    lines = result.output.splitlines()
    teacher = [line for line in lines if line.startswith("teacher parity-mlp-") and ": step " in line]
    assert len(teacher) >= 10 and "step 50/50 (100%)" in teacher[-1]


def test_quiet_prints_no_progress_lines(write_suite, tmp_path):
    result = cli("run", write_suite(tiny_suite()), "--output", tmp_path / "out", "--quiet")
    assert ": step " not in result.output


def test_a_line_every_minute_between_tenths():
    clock = FakeClock()
    reporter, printed, _ = reporter_with(clock)
    with reporter.run(FakeRun()) as job:
        for step in range(1, 100):  # 100 steps of 10 000: under 1%, one every 30 s
            clock.now += 30
            job(step, 10_000)
    assert len(printed) == 1 + 99 // 2  # the first report, then every other one (60 s)
    assert printed[0] == "run abc123 parity-mlp/one-shot seed 0: step 1/10000 (0%), ETA ?"
    assert printed[1] == "run abc123 parity-mlp/one-shot seed 0: step 3/10000 (0%), ETA 83:18:30"


def test_lines_name_the_task_metric_once_evaluated():
    clock = FakeClock()
    reporter, printed, _ = reporter_with(clock)
    with reporter.run(FakeRun()) as job:
        job.record({"step": 0, "flops": 0, "train_loss": None, "accuracy": 0.5, "agreement": 0.25}, "accuracy")
        job(1, 10)
    assert printed == ["run abc123 parity-mlp/one-shot seed 0: step 1/10 (10%), accuracy 0.5, ETA ?"]


def test_a_job_estimated_over_the_threshold_is_warned_about_once():
    clock = FakeClock()
    reporter, _, warned = reporter_with(clock)
    reporter.device, reporter.suite = "cpu", "suites/x.yaml"
    with reporter.teacher(FakeRun(), 10_000) as job:
        for step in range(0, 500, 100):
            job(step, 10_000)
            clock.now += 100  # a second a step: 10 000 steps = 2:46:40
    assert warned == ["teacher t-1 parity-mlp seed 0: estimated 2:46:40 for 10000 steps on cpu (over 1:00:00); "
                      "`kdbench plan suites/x.yaml` gives the details"]
    reporter, _, warned = reporter_with(FakeClock(), warn_seconds=1e9)
    with reporter.run(FakeRun()) as job:
        job(1, 10)
        job(2, 10)
    assert warned == []


def test_the_hour_warning_on_the_command_line(write_suite, tmp_path, monkeypatch):
    suite = write_suite(tiny_suite())
    quiet = cli("run", suite, "--output", tmp_path / "a", "--quiet")
    assert "warning:" not in quiet.output  # the tiny runs take well under an hour
    monkeypatch.setenv("KDBENCH_WARN_SECONDS", "0")
    result = cli("run", suite, "--output", tmp_path / "b", "--quiet")  # warned even with --quiet
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.output  # the teacher and the run, each once
    assert all("estimated" in w and "on cpu" in w and f"`kdbench plan {suite}` gives the details" in w
               for w in warnings)
    monkeypatch.setenv("KDBENCH_WARN_SECONDS", "an hour")
    bad = cli("run", suite, "--output", tmp_path / "c", expect=2)
    assert "KDBENCH_WARN_SECONDS='an hour'" in bad.output


def test_run_suite_sends_progress_events(write_suite, tmp_path):
    events: list[ProgressEvent] = []
    res = kdbench.run_suite(write_suite(tiny_suite(TWO_METHODS)), tmp_path / "out", progress=events.append)
    by_job = defaultdict(list)
    for e in events:
        by_job[e.run_id].append(e)
    run_ids = {s["run_id"] for s in res.executed}
    teacher_ids = set(by_job) - run_ids
    assert len(run_ids) == 2 and len(teacher_ids) == 1
    for run_id in run_ids:
        kinds = [e.kind for e in by_job[run_id]]
        assert kinds[0] == "run_start" and kinds[-1] == "run_end" and kinds.count("run_start") == 1
        assert {"step", "eval"} <= set(kinds) and set(kinds) <= {"run_start", "step", "eval", "run_end"}
        steps = [e.step for e in by_job[run_id] if e.kind == "step"]
        assert steps == sorted(steps) and steps[-1] == by_job[run_id][-1].steps > 0
        end = by_job[run_id][-1]
        assert end.status == "finished" and end.job == "run" and end.seed == 0
        assert end.task == "parity-mlp" and end.method in ("one-shot", "labels") and "accuracy" in end.metrics
    teacher = by_job[teacher_ids.pop()]
    assert [teacher[0].kind, teacher[-1].kind] == ["teacher_start", "teacher_end"]
    assert teacher[-1].method is None and teacher[-1].steps == 50 and teacher[-1].status == "finished"
    # the teacher is trained before the runs start
    assert events.index(teacher[-1]) < min(events.index(by_job[r][0]) for r in run_ids)


@pytest.mark.parametrize("jobs", [2])
def test_progress_events_from_worker_processes(write_suite, tmp_path, jobs):
    events: list[ProgressEvent] = []
    res = kdbench.run_suite(write_suite(tiny_suite(TWO_METHODS)), tmp_path / "out", jobs=jobs, progress=events.append)
    ends = {e.run_id: e for e in events if e.kind == "run_end"}
    assert set(ends) == {s["run_id"] for s in res.executed}
    assert all(e.status == "finished" and "accuracy" in e.metrics for e in ends.values())
