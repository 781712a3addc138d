"""The slurm launcher against a real Slurm: scripts/slurm-cluster.sh start (CI does) brings up a
single-node cluster on localhost. Without a reachable cluster these tests skip, saying why.

Slurm holds a requeued job for about two minutes (its BeginTime); the tests release it with
`scontrol update StartTime=now`, as an idle cluster's scheduler eventually would.
"""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, curves, kdbench

SCRIPTS = ROOT / "scripts"


def _cluster_problem() -> str:
    for tool in ("sbatch", "squeue", "sinfo", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH (start one with: sudo scripts/slurm-cluster.sh start)"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 10 s"
    states = state.stdout.split()
    if state.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")
                                        for s in states):
        return f"no Slurm node is up (sinfo: {state.stdout.strip() or state.stderr.strip()})"
    return ""


PROBLEM = _cluster_problem()
pytestmark = pytest.mark.skipif(bool(PROBLEM), reason=f"no Slurm cluster reachable: {PROBLEM}")


@pytest.fixture(autouse=True)
def sacct_stand_in(monkeypatch):
    """The test cluster has no accounting database: scripts/sacct answers from squeue."""
    monkeypatch.setenv("PATH", f"{SCRIPTS}{os.pathsep}{os.environ['PATH']}")


SUITE = """
name: {name}
seeds: [0]
budget: {{flops: {flops}}}
eval: {{points: 4}}
save_every_s: 3600
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 50}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
{extra}
methods:
{methods}
launcher:
  name: slurm
  options: {{poll_s: 0.5, time_min: {time_min}, signal_delay_s: {signal_delay}, max_requeues: 10}}
"""


def slurm_suite(write_suite, name="slurm", flops=2e6, methods="  - name: labels", extra="", time_min=10,
                signal_delay=90):
    return write_suite(SUITE.format(name=name, flops=flops, methods=methods, extra=extra, time_min=time_min,
                                    signal_delay=signal_delay))


def book(out):
    return json.loads((out / "slurm" / "jobs.json").read_text())


def squeue_state(job: str) -> str:
    done = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T|%r", "-j", job], capture_output=True, text=True)
    return done.stdout.strip()


def wait_until(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Releaser:
    """Releases requeued jobs of ``out`` that Slurm holds on BeginTime (a thread, while a test waits)."""

    def __init__(self, out: Path):
        self.out, self.stop, self.released = out, threading.Event(), 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.wait(0.5):
            path = self.out / "slurm" / "jobs.json"
            if not path.exists():
                continue
            for entry in json.loads(path.read_text())["runs"].values():
                if squeue_state(entry["job"]) == "PENDING|BeginTime":
                    subprocess.run(["scontrol", "update", f"JobId={entry['job']}", "StartTime=now"],
                                   capture_output=True)
                    self.released += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_dir_of(out: Path, method: str) -> Path:
    """The run folder of ``method``'s (only) run in results folder ``out``."""
    return next(d for d in (out / "runs").iterdir()
                if json.loads((d / "config.json").read_text())["method"] == method)


def test_slurm_runs_match_local_runs(write_suite, tmp_path):
    suite = slurm_suite(write_suite, methods="  - name: labels\n  - name: one-shot")
    result = kdbench("run", suite, "-o", tmp_path / "slurm")
    assert "2 run(s) submitted" in result.output
    assert "2 runs executed, 0 skipped, 0 failed" in result.output
    kdbench("run", suite, "-o", tmp_path / "local", "--launcher", "local", "-q", "--device", "cpu")
    assert curves(tmp_path / "slurm") == curves(tmp_path / "local")  # same results, bit for bit
    jobs = book(tmp_path / "slurm")
    (teacher,) = jobs["teachers"].values()
    by_method = {e["method"]: e for e in jobs["runs"].values()}
    assert by_method["one-shot"]["teacher_job"] == teacher["job"]  # distillation depends on the teacher job
    # labels waits for it too (afterany: it measures its fidelity against the teacher, never fails with it)
    assert by_method["labels"]["teacher_job"] == teacher["job"]
    assert all("agreement" in p for p in json.loads((run_dir_of(tmp_path / "slurm", "labels") / "curve.json")
                                                    .read_text()))
    assert list((tmp_path / "slurm" / "slurm").glob("*/*_log.out"))  # submitit's logs in the results folder
    for run in (tmp_path / "slurm" / "runs").iterdir():
        assert not (run / "progress.json").exists()
    again = kdbench("run", suite, "-o", tmp_path / "slurm", "-q")
    assert "2 of 2 runs already finished" in again.output and book(tmp_path / "slurm") == jobs


def test_detach_status_preemption_and_resume(write_suite, tmp_path):
    """Submit and detach; `status` sees the job; a preemption signal makes the job save its state
    and requeue; a later `kdbench run` waits for the same job, which resumes to the same curve."""
    suite = slurm_suite(write_suite, name="preempt", flops=8e7)
    out = tmp_path / "slurm"
    result = kdbench("run", suite, "-o", out, "--detach")
    assert "detached" in result.output and not (out / "leaderboard.md").exists()
    (entry,) = book(out)["runs"].values()
    (run_id,) = book(out)["runs"]
    job = entry["job"]
    status = kdbench("status", out).output
    assert job in status and ("pending" in status or "running" in status)

    run = out / "runs" / run_id
    wait_until(lambda: (run / "progress.json").exists(), 120, "the job to start training")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what Slurm sends before preempting
    wait_until(lambda: squeue_state(job).startswith("PENDING"), 60, "the job to requeue itself")
    saved = torch.load(run / "state.pt", weights_only=True)
    assert 0 < saved["step"] < json.loads((run / "progress.json").read_text())["total"]
    log = next((out / "slurm").glob("*/*_log.out")).read_text()
    assert "Requeued job" in log

    with Releaser(out) as releaser:
        result = kdbench("run", suite, "-o", out)
    assert releaser.released >= 1
    assert "0 run(s) submitted, 1 already queued or running" in result.output
    assert "1 runs executed, 0 skipped, 0 failed" in result.output
    assert book(out)["runs"][run_id]["job"] == job  # picked up, not submitted again
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and not (run / "state.pt").exists()
    kdbench("run", suite, "-o", tmp_path / "local", "--launcher", "local", "-q", "--device", "cpu")
    assert curves(out) == curves(tmp_path / "local")  # the resumed run is the uninterrupted run


def test_failed_teacher_job_cancels_its_runs(write_suite, tmp_path):
    suite = slurm_suite(write_suite, name="badteacher", methods="  - name: one-shot")
    text = suite.read_text().replace("lr: 0.01, batch_size: 16, steps: 50", "lr: 1.0e+30, batch_size: 16, steps: 50")
    suite.write_text(text)
    result = kdbench("run", suite, "-o", tmp_path / "out", expect=1)  # the teacher diverges: its job fails
    text = result.output.replace("\n", "")
    assert "1 runs executed, 0 skipped, 1 failed" in text
    assert "ended CANCELLED without a result (it depended on teacher job" in text
    (teacher,) = book(tmp_path / "out")["teachers"].values()
    assert "diverged" in next((tmp_path / "out" / "slurm").glob(f"{teacher['job']}/*_log.err")).read_text()
    status = kdbench("status", tmp_path / "out").output
    assert "lost" in status and "CANCELLED" in status


@pytest.mark.skipif(not os.environ.get("KDBENCH_SLOW_TESTS"),
                    reason="slow (~2-4 min): a real 1-minute time limit; set KDBENCH_SLOW_TESTS=1")
def test_time_limit_requeues_and_resumes(write_suite, tmp_path):
    """A job that reaches its time limit gets USR2 `signal_delay_s` before it, saves, requeues and
    resumes until done."""
    suite = slurm_suite(write_suite, name="timeout", flops=5e8, time_min=1, signal_delay=40)
    out = tmp_path / "out"
    with Releaser(out) as releaser:
        result = kdbench("run", suite, "-o", out)
    assert "1 runs executed, 0 skipped, 0 failed" in result.output
    assert releaser.released >= 1
    log = next((out / "slurm").glob("*/*_log.out")).read_text()
    assert "Requeued job" in log
    kdbench("run", suite, "-o", tmp_path / "local", "--launcher", "local", "-q", "--device", "cpu")
    assert curves(out) == curves(tmp_path / "local")
