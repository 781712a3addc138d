"""One failure stops nothing else: a teacher that fails, a plugin that raises or calls
sys.exit, a worker that dies, a write that fails, a corrupt cached file. Each fails (or
rebuilds) only what it touches; the other runs go on, the leaderboard is written and
`kdbench run` exits 1 with a summary. Faults fire from a training step or are set up
on disk before the run (tests/data/plugins/faulty.py)."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, curves, kdbench

FAULTY = ROOT / "tests" / "data" / "plugins" / "faulty.py"

SUITE = """
name: iso
seeds: [0]
budget: {{flops: 2e6}}
eval: {{points: 4}}
save_every_s: {save}
plugins: [{plugin}]
tasks:
  - name: {task}
    label: good
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 40, checkpoint_every: 20}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
{extra_task}methods:
{methods}
"""

BAD_TEACHER = """  - name: {name}
    label: bad
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256{params}}}
    teacher: {{optimizer: adam, lr: {lr}, batch_size: 16, steps: 40}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
"""


def write(tmp_path, methods, extra_task="", save=60, task="parity-mlp", name="suite.yaml"):
    path = tmp_path / name
    path.write_text(SUITE.format(plugin=FAULTY, methods=methods, extra_task=extra_task, save=save, task=task))
    return path


def runs(out) -> dict:
    """{(task label, method label, seed): summary} of every run folder with a summary."""
    found = {}
    for d in (Path(out) / "runs").iterdir():
        if (d / "summary.json").exists():
            config = json.loads((d / "config.json").read_text())
            key = (config["task_label"], config["method_label"], config["seed"])
            found[key] = json.loads((d / "summary.json").read_text())
    return found


def teacher_summaries(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in Path(out).glob("teachers/*/summary.json")]


# ---- a teacher that fails -----------------------------------------------------------------------

TEACHER_FAULTS = {
    # lr 1e30 is finite (so valid) but the first Adam step sends the loss to inf
    "diverges": (BAD_TEACHER.format(name="parity-mlp", lr=1.0e30, params=""), "FloatingPointError: diverged"),
    # the teacher's 5th training forward raises, or calls sys.exit(0)
    "raises": (BAD_TEACHER.format(name="faulty-parity", lr=0.01, params=", teacher_fault: raise, fault_at: 5"),
               "RuntimeError: boom from the teacher's forward"),
    "exits": (BAD_TEACHER.format(name="faulty-parity", lr=0.01, params=", teacher_fault: exit, fault_at: 5"),
              "SystemExit"),
}


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("fault", sorted(TEACHER_FAULTS))
def test_a_failed_teacher_fails_only_the_runs_that_need_it(tmp_path, fault, jobs):
    if jobs == "2" and fault == "raises":
        pytest.skip("diverges and exits check the worker path")
    extra, error = TEACHER_FAULTS[fault]
    path = write(tmp_path, "  - name: labels\n  - name: one-shot", extra_task=extra)
    out = tmp_path / "out"
    result = kdbench("run", path, "-o", out, "-q", "-j", jobs, "-L", "threads=1", expect=1)
    found = runs(out)
    assert found[("good", "labels", 0)]["status"] == "finished"
    assert found[("good", "one-shot", 0)]["status"] == "finished"
    failed = found[("bad", "one-shot", 0)]
    assert failed["status"] == "failed" and failed["error"].startswith("teacher ")
    assert " failed: " in failed["error"] and error in failed["error"]
    bad_teacher = [t for t in teacher_summaries(out) if t["status"] == "failed"]
    assert len(bad_teacher) == 1 and error in bad_teacher[0]["error"]
    assert (out / "teachers" / bad_teacher[0]["teacher_id"] / "traceback.txt").exists()
    assert (out / "leaderboard.md").exists() and "failed" in (out / "leaderboard.md").read_text()
    assert "failed" in result.output and "runs executed" in result.output


# ---- plugins that raise or exit -------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sys_exit_in_a_method_is_that_runs_failure(tmp_path, jobs):
    """(sys.exit in ``phases()`` is caught before anything trains: see test_bad_inputs.py)"""
    path = write(tmp_path, "  - name: exits\n  - name: labels")
    out = tmp_path / "out"
    result = kdbench("run", path, "-o", out, "-q", "-j", jobs, "-L", "threads=1", expect=1)
    found = runs(out)
    assert found[("good", "exits", 0)]["status"] == "failed"
    assert "SystemExit" in found[("good", "exits", 0)]["error"]
    assert found[("good", "labels", 0)]["status"] == "finished"
    assert (out / "leaderboard.md").exists()
    assert "1 failed" in result.output


def test_a_worker_that_dies_fails_its_jobs_and_the_pool_goes_on(tmp_path):
    """A plugin ends its worker process at once (as the OOM killer would): a fresh pool runs the rest;
    the next `kdbench run` retries what failed and ends on the same curves as an undisturbed run."""
    flag = tmp_path / "die-now"
    methods = f"  - name: dies-hard\n    params: {{flag: {flag}, at: 5}}\n  - name: labels\n  - name: one-shot"
    path = write(tmp_path, methods)
    kdbench("run", path, "-o", tmp_path / "reference", "-q", "-L", "threads=1")
    flag.touch()
    out = tmp_path / "out"
    result = kdbench("run", path, "-o", out, "-q", "-j", "2", "-L", "threads=1", expect=1)
    found = runs(out)
    died = [s for s in found.values() if s["status"] == "failed"]
    assert any(key[1] == "dies-hard" and s["status"] == "failed" for key, s in found.items())
    assert all("worker process died" in s["error"] for s in died)
    assert len(died) < len(found) == 3  # the others finished in a fresh pool
    assert (out / "leaderboard.md").exists() and "worker process died" in result.output
    kdbench("run", path, "-o", out, "-q", "-j", "2", "-L", "threads=1")
    assert curves(out) == curves(tmp_path / "reference")


# ---- write errors ---------------------------------------------------------------------------------

@pytest.fixture
def disk_fills_up(monkeypatch):
    """Every atomic write fails with ENOSPC once KDBENCH_TEST_DISK_FULL is set (the fills-disk method
    sets it from a training step), as on a disk that filled up; cleared afterwards."""
    monkeypatch.delenv("KDBENCH_TEST_DISK_FULL", raising=False)
    real = os.fsync

    def fsync(fd):
        if os.environ.get("KDBENCH_TEST_DISK_FULL"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_mid_run_is_one_message_and_nothing_is_lost(tmp_path, disk_fills_up):
    flag = tmp_path / "fill-the-disk"
    path = write(tmp_path, f"  - name: labels\n  - name: fills-disk\n    params: {{flag: {flag}, at: 3}}\n"
                 "  - name: one-shot", save=1e-9)
    out = tmp_path / "out"
    flag.touch()
    result = kdbench("run", path, "-o", out, "-q", expect=1)
    text = " ".join(result.output.split())
    assert text.count("disk full:") == 1 and "2 run(s) could not store their results" in text
    assert "No space left on device" in text and "leaderboard not written" in text
    assert "Traceback" not in result.output
    found = runs(out)
    assert found[("good", "labels", 0)]["status"] == "finished"  # stored before the disk filled
    os.environ.pop("KDBENCH_TEST_DISK_FULL")  # space was freed
    again = kdbench("run", path, "-o", out, "-q")
    assert "2 runs executed, 1 skipped, 0 failed" in again.output
    assert all(s["status"] == "finished" for s in runs(out).values())
    assert not list(out.glob("runs/*/traceback.txt"))


def test_a_run_folder_that_cannot_be_written_fails_that_run_only(tmp_path):
    """A file where a run's folder should be: the failure cannot be recorded there, so the
    console says so; the other runs go on."""
    from kdbench.plugins import load_plugins
    from kdbench.run.pricing import load_suite

    path = write(tmp_path, "  - name: labels\n  - name: one-shot")
    loaded, _ = load_suite(path, load_plugins)
    out = tmp_path / "out"
    victim = next(r for r in loaded.runs if r.method == "labels")
    (out / "runs").mkdir(parents=True)
    (out / "runs" / victim.run_id).write_text("not a folder")
    result = kdbench("run", path, "-o", out, "-q", expect=1)
    assert f"run {victim.run_id}" in result.output and "not recorded on disk" in result.output
    assert runs(out)[("good", "one-shot", 0)]["status"] == "finished"
    assert (out / "runs" / victim.run_id).read_text() == "not a folder"  # nothing was deleted


def test_a_stale_traceback_is_removed_when_the_run_succeeds(tmp_path):
    flag = tmp_path / "fail"
    path = write(tmp_path, f"  - name: fails-while\n    params: {{flag: {flag}, at: 2}}")
    out = tmp_path / "out"
    flag.touch()
    kdbench("run", path, "-o", out, "-q", expect=1)
    (tb,) = out.glob("runs/*/traceback.txt")
    assert "failing while the flag file exists" in tb.read_text()
    flag.unlink()
    kdbench("run", path, "-o", out, "-q")
    assert not tb.exists()


# ---- corrupt cached files -------------------------------------------------------------------------

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not a torch file" * 10)


def wrong_model(path: Path) -> None:
    torch.save({"weight": torch.zeros(3, 3)}, path)


DAMAGE = {"truncated": truncate, "garbage": garbage, "another-model": wrong_model}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("which", ["final.pt", "checkpoint"])
def test_a_corrupt_cached_teacher_file_is_discarded_and_rebuilt(tmp_path, damage, which):
    """A teacher file that does not load is named in a warning, discarded and rebuilt (to the same
    weights); the runs that read it finish, on the curves of an undamaged cache."""
    path = write(tmp_path, "  - name: progressive\n  - name: one-shot")
    kdbench("run", path, "-o", tmp_path / "reference", "-q")
    out = tmp_path / "out"
    kdbench("run", path, "-o", out, "-q")
    (teacher,) = (out / "teachers").iterdir()
    victim = teacher / "final.pt" if which == "final.pt" else next((teacher / "checkpoints").glob("step-*.pt"))
    DAMAGE[damage](victim)
    for d in (out / "runs").iterdir():  # both runs read the teacher again
        (d / "summary.json").unlink()
    result = kdbench("run", path, "-o", out, "-q")
    assert f"{victim}: unreadable teacher weights" in result.output and "discarded" in result.output
    reference = next((tmp_path / "reference" / "teachers").iterdir()) / victim.relative_to(teacher)
    a, b = torch.load(reference, weights_only=True), torch.load(victim, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert curves(out) == curves(tmp_path / "reference")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_saved_run_state_is_discarded_and_the_run_redone(tmp_path, damage):
    path = write(tmp_path, "  - name: labels")
    kdbench("run", path, "-o", tmp_path / "reference", "-q")
    out = tmp_path / "out"
    kdbench("run", path, "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    (run / "summary.json").unlink()
    torch.save({"step": 1, "junk": torch.zeros(100)}, run / "state.pt")
    DAMAGE[damage](run / "state.pt")
    result = kdbench("run", path, "-o", out, "-q")
    assert "state.pt" in result.output and "discarded" in result.output
    assert json.loads((run / "summary.json").read_text())["resumed_from"] is None
    assert curves(out) == curves(tmp_path / "reference")


def test_a_corrupt_saved_teacher_state_is_discarded(tmp_path):
    path = write(tmp_path, "  - name: one-shot")
    kdbench("run", path, "-o", tmp_path / "reference", "-q")
    out = tmp_path / "out"
    (out / "teachers").mkdir(parents=True)
    kdbench("run", path, "-o", out, "-q")
    (teacher,) = (out / "teachers").iterdir()
    for name in ("summary.json", "final.pt"):
        (teacher / name).unlink()
    garbage(teacher / "state.pt")  # as if a teacher had been interrupted and its state damaged
    for d in (out / "runs").iterdir():
        (d / "summary.json").unlink()
    result = kdbench("run", path, "-o", out, "-q")
    assert "state.pt" in result.output and "discarded" in result.output
    assert curves(out) == curves(tmp_path / "reference")
