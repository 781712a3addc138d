"""Faults injected on purpose: failing and diverging methods, corrupt folders,
SIGKILL and SIGINT mid-run and mid-teacher, two processes on one folder. Every
signal is sent by the process to itself from a given training step (see
tests/data/plugins/faulty.py), never after a delay."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, kdbench, without_time

FAULTY = ROOT / "tests" / "data" / "plugins" / "faulty.py"

SUITE = """
name: rel
seeds: [0]
budget: {{flops: {flops}}}
eval: {{points: 6}}
save_every_s: {save}
plugins: [{plugin}]
tasks:
  - name: {task}
    params: {{n: 16, k: 2, teacher_width: {tw}, student_width: 32, eval_size: 256{task_params}}}
    teacher: {{optimizer: adam, lr: 0.005, batch_size: 32, steps: {tsteps}, checkpoint_every: {tsteps_half}}}
    student: {{optimizer: adam, lr: 0.005, batch_size: 32}}
methods:
{methods}
"""


def suite(tmp_path, methods, flops=3e6, save=60, tsteps=40, tw=64, name="suite.yaml", task="parity-mlp",
          task_params=""):
    path = tmp_path / name
    path.write_text(SUITE.format(flops=flops, save=save, plugin=FAULTY, tw=tw, tsteps=tsteps,
                                 tsteps_half=max(1, tsteps // 2), methods=methods, task=task,
                                 task_params=task_params))
    return path


def summaries(out):
    found = {}
    for d in (Path(out) / "runs").iterdir():
        if (d / "summary.json").exists():
            config = json.loads((d / "config.json").read_text())
            found[config["method_label"]] = json.loads((d / "summary.json").read_text())
    return found


def curve(out, label):
    for d in (Path(out) / "runs").iterdir():
        if json.loads((d / "config.json").read_text())["method_label"] == label:
            return without_time(json.loads((d / "curve.json").read_text()))
    raise KeyError(label)


def test_method_that_raises_is_recorded_and_others_go_on(tmp_path):
    out = tmp_path / "out"
    result = kdbench("run", suite(tmp_path, "  - name: explodes\n  - name: labels"), "-o", out, "-q", expect=1)
    found = summaries(out)
    assert found["explodes"]["status"] == "failed" and "boom" in found["explodes"]["error"]
    tb = next(d for d in (out / "runs").iterdir() if (d / "traceback.txt").exists()) / "traceback.txt"
    assert "RuntimeError: boom from the explodes method" in tb.read_text()
    assert found["labels"]["status"] == "finished"
    assert "1 failed" in result.output and "traceback" in result.output
    assert "1 failed" in (out / "leaderboard.md").read_text()
    # a failed run is retried on the next invocation (it may have been fixed), finished ones are not
    again = kdbench("run", suite(tmp_path, "  - name: explodes\n  - name: labels"), "-o", out, "-q", expect=1)
    assert "1 runs executed, 1 skipped" in again.output


def test_divergence_is_recorded_and_the_suite_goes_on(tmp_path):
    out = tmp_path / "out"
    result = kdbench("run", suite(tmp_path, "  - name: goes-nan\n  - name: labels"), "-o", out, "-q")
    found = summaries(out)
    # the FLOP probe is call 1, so training steps 0..3 are finite and step 4 is NaN
    assert found["goes-nan"]["status"] == "diverged" and found["goes-nan"]["diverged_at"] == 4
    assert found["labels"]["status"] == "finished"
    assert "1 diverged" in result.output
    assert "diverged" in (out / "leaderboard.md").read_text()
    again = kdbench("run", suite(tmp_path, "  - name: goes-nan\n  - name: labels"), "-o", out, "-q")
    assert "0 runs executed, 2 skipped" in again.output  # divergence is a result, not retried


@pytest.mark.parametrize("damage", ["truncate", "delete-curve", "garbage"])
def test_corrupt_run_folders_are_rerun_not_read(tmp_path, damage):
    out = tmp_path / "out"
    path = suite(tmp_path, "  - name: labels\n  - name: one-shot")
    kdbench("run", path, "-o", out, "-q")
    victim = next((out / "runs").iterdir())
    if damage == "truncate":
        text = (victim / "summary.json").read_text()
        (victim / "summary.json").write_text(text[: len(text) // 2])
    elif damage == "delete-curve":
        (victim / "curve.json").unlink()
    else:
        (victim / "summary.json").write_text("\x00\x01 not json")
    result = kdbench("run", path, "-o", out, "-q")
    assert "1 runs executed, 1 skipped" in result.output
    assert json.loads((victim / "summary.json").read_text())["status"] == "finished"


def test_same_suite_same_curves(tmp_path):
    path = suite(tmp_path, "  - name: progressive\n  - name: curriculum-extraction")
    kdbench("run", path, "-o", tmp_path / "a", "-q")
    kdbench("run", path, "-o", tmp_path / "b", "-q")
    for label in ("progressive", "curriculum-extraction"):
        assert curve(tmp_path / "a", label) == curve(tmp_path / "b", label)


def cli(*args):
    """``kdbench run ...`` in a subprocess, its runs in that process (``-j 1``, not on the cores free):
    these tests kill or interrupt the process a run trains in."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdbench.cli", *map(str, args), "-j", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    """Wait for ``proc`` (and anything holding its output pipes) to end; its stderr."""
    _, err = proc.communicate(timeout=timeout)
    return err


EVERY_STEP = 1e-9  # save_every_s: a resumable state after every step


def test_sigkill_mid_run_resumes_bit_for_bit(tmp_path):
    """one-shot runs first and finishes; the progressive run kills its own process during step 30,
    after a state was saved at every step."""
    flag = tmp_path / "kill-now"
    methods = f"  - name: one-shot\n  - name: signals-progressive\n    params: {{flag: {flag}, at: 30}}"
    path = suite(tmp_path, methods, flops=2e7, save=EVERY_STEP)
    reference = tmp_path / "reference"
    kdbench("run", path, "-o", reference, "-q")
    out = tmp_path / "out"
    flag.touch()
    proc = cli("run", path, "-o", out, "-q")
    finish(proc)
    assert proc.returncode == -signal.SIGKILL and not flag.exists()
    first_done = summaries(out)["one-shot"]
    finished_mtime = next(d for d in (out / "runs").iterdir() if not (d / "state.pt").exists()) / "summary.json"
    before = finished_mtime.stat().st_mtime_ns
    kdbench("run", path, "-o", out, "-q")
    assert finished_mtime.stat().st_mtime_ns == before  # the finished run was not redone
    resumed = summaries(out)["signals-progressive"]
    assert resumed["resumed_from"] == 30  # the state saved when 30 steps were done
    assert first_done["status"] == "finished"
    for label in ("one-shot", "signals-progressive"):
        assert curve(out, label) == curve(reference, label)


def test_sigkill_mid_teacher_resumes_bit_for_bit(tmp_path):
    """The teacher kills its own process on its 150th training forward (of 300 steps)."""
    flag = tmp_path / "kill-now"
    path = suite(tmp_path, "  - name: progressive", tsteps=300, tw=256, save=EVERY_STEP, task="faulty-parity",
                 task_params=f", teacher_fault: kill, fault_at: 150, flag: {flag}")
    reference = tmp_path / "reference"
    kdbench("run", path, "-o", reference, "-q")
    out = tmp_path / "out"
    flag.touch()
    proc = cli("run", path, "-o", out, "-q")
    finish(proc)
    assert proc.returncode == -signal.SIGKILL and not flag.exists()
    assert not list(out.glob("teachers/*/summary.json"))  # killed before the teacher finished
    (state,) = out.glob("teachers/*/state.pt")
    assert 0 < torch.load(state, weights_only=True)["step"] < 300
    kdbench("run", path, "-o", out, "-q")
    (t_ref,), (t_out,) = list(reference.glob("teachers/*")), list(out.glob("teachers/*"))
    a = torch.load(t_ref / "final.pt", weights_only=True)
    b = torch.load(t_out / "final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_time(json.loads((t_ref / "curve.json").read_text())) == without_time(json.loads((t_out / "curve.json").read_text()))
    assert curve(out, "progressive") == curve(reference, "progressive")


def test_sigint_stops_cleanly_after_saving(tmp_path):
    """Ctrl-C during step 40: the step finishes, its state is saved (40 + 1 steps done), exit 130."""
    flag = tmp_path / "interrupt-now"
    path = suite(tmp_path, f"  - name: signals\n    params: {{flag: {flag}, at: 40, signal: SIGINT}}",
                 flops=3e8, save=1e6)
    out = tmp_path / "out"
    flag.touch()
    proc = cli("run", path, "-o", out, "-q")
    err = finish(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    (state,) = out.glob("runs/*/state.pt")  # no periodic save in a 1e6 s cadence: saved on the way out
    assert torch.load(state, weights_only=True)["step"] == 41
    assert not list(out.glob("runs/*/summary.json"))


def test_two_processes_share_one_folder(tmp_path):
    path = suite(tmp_path, "  - name: one-shot\n  - name: labels\n  - name: progressive", flops=1e7, tsteps=400)
    out = tmp_path / "out"
    procs = [cli("run", path, "-o", out) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    errs = "".join(err for _, err in outputs)
    assert errs.count("(trained)") == 1  # the teacher was trained by exactly one process
    executed = sum(int(err.split(" runs executed")[0].split()[-1]) for _, err in outputs)
    assert executed == 3  # each run ran in exactly one process
    assert all(s["status"] == "finished" for s in summaries(out).values())


def test_interrupt_inside_a_step_saves_no_half_step(tmp_path):
    """A KeyboardInterrupt after a step's update but before its evaluation is recorded must
    not save that half-done step: the last consistent save stands, and the resumed run ends
    on the uninterrupted curve (the evaluation row is not lost)."""
    from kdbench.run.engine import train
    from kdbench.plugins import load_plugins
    from kdbench.run.runner import build_task, prepare
    from kdbench.run.pricing import load_suite

    path = suite(tmp_path, "  - name: labels", flops=2e7)
    loaded, registry = load_suite(path, load_plugins)
    (run,) = loaded.runs

    def job(state_path=None):
        task = build_task(run, registry, torch.device("cpu"), None)
        return prepare(run, registry, task, None, torch.device("cpu"), state_path=state_path).job

    reference = train(job())
    interrupted = job(tmp_path / "state.pt")
    interrupted.save_every_s = 0.0  # a consistent save after every step
    mark = interrupted.eval_at[2]  # an evaluation step

    def on_step(clock):
        if clock.step == mark:
            raise KeyboardInterrupt  # the step is counted, its evaluation not yet recorded

    interrupted.on_step = on_step
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == mark - 1
    resumed = train(job(tmp_path / "state.pt"))
    assert resumed.resumed_from == mark - 1
    assert without_time(resumed.curve) == without_time(reference.curve)
