"""The local launcher (in-process and --jobs N worker processes), launcher options from the
suite and the command line, the engine's stop-and-resume, device/precision/compile options,
`kdbench status` and `kdbench plan`'s time estimate."""

import json
import os

import pytest
import torch
from conftest import SUITES, curves, kdbench, tiny_suite, without_time

from kdbench.run.options import effective_precision, resolve_device
from kdbench.run.engine import train
from kdbench.errors import UserError
from kdbench.launchers import choose_launcher, parse_option
from kdbench.launchers.local import LocalParams, environment, threads_per_job, worker_environment
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, prepare
from kdbench.run.stop import StopRequested, clear_stop, request_stop
from kdbench.run.pricing import load_suite
from kdbench.run.teachers import ProbeTeacher

TWO_METHODS = "  - name: labels\n  - name: one-shot"


def two_seed_suite(write_suite, **kw):
    return write_suite(tiny_suite(TWO_METHODS, **kw).replace("seeds: [0]", "seeds: [0, 1]"))


def test_jobs_2_matches_in_process_and_trains_the_teacher_once(write_suite, tmp_path):
    suite = two_seed_suite(write_suite)
    kdbench("run", suite, "-o", tmp_path / "one", "-q", "--device", "cpu")
    result = kdbench("run", suite, "-o", tmp_path / "two", "--jobs", "2", "--device", "cpu")
    assert "2 worker processes x" in result.output
    assert "4 runs executed, 0 skipped, 0 failed" in result.output
    one, two = curves(tmp_path / "one"), curves(tmp_path / "two")
    assert len(two) == 4 and one == two  # same seeds, same device: same curves, bit for bit
    assert len(list((tmp_path / "two" / "teachers").iterdir())) == 1
    lines = result.output.splitlines()
    ready = [line for line in lines if line.startswith("teacher parity-mlp-") and ": step " not in line]
    assert len(ready) == 1  # trained (and reported ready) once; the other lines are its progress when piped


def test_jobs_rerun_skips_finished_runs(write_suite, tmp_path):
    suite = two_seed_suite(write_suite)
    kdbench("run", suite, "-o", tmp_path, "-q", "-j", "2", "--device", "cpu")
    result = kdbench("run", suite, "-o", tmp_path, "-q", "-j", "2", "--device", "cpu")
    assert "4 of 4 runs already finished" in result.output and "0 runs executed" in result.output


def test_threads_are_divided_between_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads_per_job(1) == 8 and threads_per_job(2) == 4 and threads_per_job(3) == 2
    assert threads_per_job(16) == 1
    env = worker_environment(4)
    assert env["OMP_NUM_THREADS"] == "4" and env["MKL_NUM_THREADS"] == "4"
    assert "MALLOC_MMAP_THRESHOLD_" in env and "MALLOC_TRIM_THRESHOLD_" in env


def test_environment_is_restored():
    os.environ.pop("KDBENCH_TEST_VAR", None)
    with environment({"KDBENCH_TEST_VAR": "1"}):
        assert os.environ["KDBENCH_TEST_VAR"] == "1"
    assert "KDBENCH_TEST_VAR" not in os.environ


def _loaded(write_suite, launcher_yaml=""):
    path = write_suite(tiny_suite() + launcher_yaml)
    return load_suite(path, load_plugins)


def test_suite_launcher_section_and_command_line_merge(write_suite):
    loaded, registry = _loaded(write_suite, "launcher: {name: local, options: {jobs: 2}}\n")
    cls, params = choose_launcher(loaded, registry)
    assert cls.name == "local" and params == LocalParams(jobs=2)
    cls, params = choose_launcher(loaded, registry, jobs=3, options=("threads=1",))
    assert params == LocalParams(jobs=3, threads=1)
    cls, params = choose_launcher(loaded, registry, name="slurm", jobs=5,
                                  options=("partition=gpu", "time_min=120"), sbatch=("--qos=high",))
    assert cls.name == "slurm"  # the suite's options belong to `local`: not applied to slurm
    assert (params.partition, params.time_min, params.array_parallelism, params.sbatch) == \
        ("gpu", 120, 5, ["--qos=high"])
    assert parse_option("sbatch=[--qos=high, --exclusive]") == ("sbatch", ["--qos=high", "--exclusive"])


@pytest.mark.parametrize("section, message", [
    ("launcher: {name: lokal}", "launcher.name: unknown launcher 'lokal' (did you mean 'local'?)"),
    ("launcher: {name: local, options: {jobs: 0}}", "launcher.options.jobs"),
    ("launcher: {name: local, options: {partition: gpu}}", "launcher.options.partition: unknown field"),
    ("launcher: {name: slurm, options: {sbatch: [qos=high]}}", "sbatch options are long options"),
])
def test_bad_launcher_section_is_a_user_error(write_suite, section, message):
    path = write_suite(tiny_suite() + section + "\n")
    result = kdbench("validate", path, expect=2)
    assert str(path) in result.output and message in result.output.replace("\n", "")


@pytest.mark.parametrize("args, message", [
    (["--sbatch=--qos=high"], "--sbatch: only for a launcher that submits sbatch jobs"),
    (["--detach"], "--detach: the 'local' launcher runs here"),
    (["-L", "nope=1"], "nope"),
    (["-L", "jobs"], "is not KEY=VALUE"),
    (["--launcher", "nowhere"], "unknown launcher 'nowhere'"),
    (["--device", "gpu"], "--device: 'gpu' is not a device; allowed: auto, cpu, cuda, cuda:N"),
    (["--precision", "fp8"], "--precision: 'fp8' is not a precision; allowed: fp32, bf16"),
])
def test_bad_run_options_are_user_errors(write_suite, tmp_path, args, message):
    result = kdbench("run", write_suite(tiny_suite()), "-o", tmp_path, "-q", *args, expect=2)
    assert message in result.output.replace("\n", "")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_user_error(write_suite, tmp_path):
    result = kdbench("run", write_suite(tiny_suite()), "-o", tmp_path, "-q", "--device", "cuda", expect=2)
    assert "--device cuda: CUDA is not available here" in result.output


def test_bf16_is_fp32_on_cpu(write_suite, tmp_path):
    assert effective_precision("bf16", torch.device("cpu")) == "fp32"
    assert effective_precision("bf16", torch.device("cuda")) == "bf16"
    suite = write_suite(tiny_suite())
    kdbench("run", suite, "-o", tmp_path / "fp32", "-q", "--device", "cpu")
    result = kdbench("run", suite, "-o", tmp_path / "bf16", "-q", "--device", "cpu", "--precision", "bf16")
    assert "bf16 autocast runs on CUDA only" in result.output
    assert curves(tmp_path / "fp32") == curves(tmp_path / "bf16")
    (run,) = (tmp_path / "bf16" / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["precision"] == "fp32"


def _tiny_job(write_suite, tmp_path, name):
    loaded, registry = load_suite(write_suite(tiny_suite("  - name: labels")), load_plugins)
    (run,) = loaded.runs
    dev = torch.device("cpu")
    task = build_task(run, registry, dev, None)
    return prepare(run, registry, task, ProbeTeacher(task, 0), dev, state_path=tmp_path / name).job


def test_stop_request_saves_state_and_resume_is_exact(write_suite, tmp_path):
    reference = train(_tiny_job(write_suite, tmp_path, "ref.pt"))
    job = _tiny_job(write_suite, tmp_path, "state.pt")
    job.on_step = lambda clock: request_stop() if clock.step == 37 else None
    try:
        with pytest.raises(StopRequested, match="stopped at step 37"):
            train(job)
    finally:
        clear_stop()
    saved = torch.load(job.state_path, weights_only=True)
    assert saved["step"] == 37
    resumed = train(_tiny_job(write_suite, tmp_path, "state.pt"))  # a fresh process would do exactly this
    assert resumed.steps == reference.steps and without_time(resumed.curve) == without_time(reference.curve)


def test_compile_counts_the_same_flops(write_suite, tmp_path):
    suite = write_suite(tiny_suite("  - name: labels", flops=5e5))
    kdbench("run", suite, "-o", tmp_path / "eager", "-q", "--device", "cpu")
    kdbench("run", suite, "-o", tmp_path / "compiled", "-q", "--device", "cpu", "--compile")
    (eager,), (compiled,) = (list((tmp_path / d / "runs").iterdir()) for d in ("eager", "compiled"))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (eager, compiled))
    assert b["compiled"] is True and a["compiled"] is False
    assert (a["steps"], a["flops"], a["phases"]) == (b["steps"], b["flops"], b["phases"])
    assert b["status"] == "finished"


def test_status_of_a_results_folder_and_a_suite(write_suite, tmp_path):
    suite = two_seed_suite(write_suite)
    result = kdbench("status", suite, "-o", tmp_path)
    assert "4 not started" in result.output
    kdbench("run", suite, "-o", tmp_path, "-q", "--device", "cpu")
    run = sorted((tmp_path / "runs").iterdir())[0]
    (run / "summary.json").unlink()
    (run / "state.pt").write_bytes(b"")
    result = kdbench("status", tmp_path)
    assert "3 finished, 1 interrupted" in result.output
    assert "finished" in result.output and "accuracy" in result.output
    assert kdbench("status", tmp_path / "nothing", expect=2).output.startswith("error:")


def test_plan_estimates_time_from_a_probe(write_suite):
    result = kdbench("plan", write_suite(tiny_suite(TWO_METHODS)), "--device", "cpu", "--probe-steps", "3")
    text = result.output.replace("\n", " ")
    assert "teacher parity-mlp-" in text and "(trained once, if not cached)" in text
    assert "estimated time of the unfinished runs, one after another on cpu (fp32, " in text and " thread(s)): " in text
    assert "estimated time" not in kdbench("plan", SUITES / "smoke.yaml", "--probe-steps", "0").output


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match=r"only 2 GPU\(s\) here \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


INTERRUPTER = '''
"""A method whose loss sends SIGINT to its own process (as Ctrl-C would) once, if a flag file exists."""
import os, signal
from pathlib import Path
import torch.nn.functional as F
from kdbench import Method, Params, Phase, hookimpl, logits

class P(Params):
    flag: str = ""

class Interrupts(Method):
    name, version, Params, needs_teacher = "interrupts", "1", P, False

    def phases(self, ctx, params):
        calls = {"n": 0}

        def loss(batch):
            calls["n"] += 1
            if calls["n"] == 300 and Path(params.flag).exists():
                Path(params.flag).unlink()
                os.kill(os.getpid(), signal.SIGINT)
            return F.cross_entropy(logits(ctx.student, batch), batch.labels)

        return [Phase("main", loss=loss)]

@hookimpl
def kdbench_register_methods():
    return [Interrupts]
'''


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_at_a_step_boundary_and_resumes_exactly(write_suite, tmp_path, jobs):
    (tmp_path / "interrupter.py").write_text(INTERRUPTER)
    flag = tmp_path / "interrupt-now"
    methods = f"  - name: interrupts\n    params: {{flag: {flag}}}"
    text = tiny_suite(methods, flops=2e7).replace("seeds: [0]", "seeds: [0, 1]") + "plugins: [interrupter.py]\n"
    suite = write_suite(text)
    kdbench("run", suite, "-o", tmp_path / "reference", "-q", "--device", "cpu")
    flag.touch()
    result = kdbench("run", suite, "-o", tmp_path / "out", "-q", "--device", "cpu", "-j", jobs, expect=130)
    assert "interrupted" in result.output and not flag.exists()
    states = list((tmp_path / "out").glob("runs/*/state.pt"))
    assert states and all(torch.load(s, weights_only=True)["step"] > 0 for s in states)
    kdbench("run", suite, "-o", tmp_path / "out", "-q", "--device", "cpu", "-j", jobs)
    assert curves(tmp_path / "out") == curves(tmp_path / "reference")  # bit for bit, though interrupted
