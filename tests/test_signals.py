"""SIGTERM and a dying parent: SIGTERM stops like Ctrl-C (state saved at a step boundary, exit
143), and the worker processes of `--jobs 2` never outlive the `kdbench run` that started them,
even one killed by SIGKILL; the runs resume bit for bit. The signal is sent from a training step
(tests/data/plugins/faulty.py's `signals` method), never after a delay."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, curves, kdbench, tiny_suite

FAULTY = ROOT / "tests" / "data" / "plugins" / "faulty.py"


def signalling_suite(tmp_path, flag, sig, target, together=1):
    """Two runs of the `signals` method; one sends ``sig`` during step 60, or with ``together``
    = 2 at the first step from 60 on when both runs have begun (both are then in flight)."""
    methods = (f"  - name: signals\n    params: {{flag: {flag}, at: 60, signal: {sig}, target: {target}, "
               f"together: {together}}}")
    text = tiny_suite(methods, flops=3e7).replace("seeds: [0]", "seeds: [0, 1]")
    path = tmp_path / "suite.yaml"
    path.write_text(text + f"plugins: [{FAULTY}]\nsave_every_s: 1000000\n")
    return path


def run_cli(*args, timeout=240):
    """`kdbench` in a subprocess of its own session; wait until it ends AND nothing holds its output
    pipes (its workers included); its return code and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdbench.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left over (the bug this file tests for)
    return proc.returncode, err


@pytest.mark.parametrize("sig, jobs, target, code", [
    ("SIGTERM", "1", "self", 143),  # in-process: stops at the end of the step, like Ctrl-C
    ("SIGTERM", "2", "parent", 143),  # `kill` of kdbench run: its workers save and exit too
    ("SIGKILL", "2", "parent", -signal.SIGKILL),  # the parent dies at once: the workers notice, save, exit
])
def test_signal_saves_state_and_resumes_exactly(tmp_path, sig, jobs, target, code):
    flag = tmp_path / "signal-now"
    suite = signalling_suite(tmp_path, flag, sig, target, together=int(jobs))
    kdbench("run", suite, "-o", tmp_path / "reference", "-q", "--device", "cpu")
    flag.touch()
    returncode, err = run_cli("run", suite, "-o", tmp_path / "out", "-q", "--device", "cpu", "-j", jobs,
                              "-L", "threads=1")
    assert returncode == code, err
    assert not flag.exists() and "Traceback" not in err
    if code > 0:
        assert "interrupted" in err
    saved = sorted(torch.load(s, weights_only=True)["step"] for s in (tmp_path / "out").glob("runs/*/state.pt"))
    if jobs == "1":  # the signal came during step 60: that step finished, then the state was saved
        assert saved == [61]
    else:  # both runs in flight saved where they stopped (no periodic save in 1e6 s)
        assert len(saved) == 2 and saved[-1] > 60 and saved[0] > 0
    assert not list((tmp_path / "out").glob("runs/*/summary.json"))
    kdbench("run", suite, "-o", tmp_path / "out", "-q", "--device", "cpu", "-j", jobs, "-L", "threads=1")
    assert curves(tmp_path / "out") == curves(tmp_path / "reference")
