"""Bad command-line input and bad places: each ends with exit code 2 and one message naming
the path (no traceback), before anything trains, and loses nothing already computed."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, kdbench, tiny_suite

FAULTY = ROOT / "tests" / "data" / "plugins" / "faulty.py"
NOT_PYTHON = ROOT / "tests" / "data" / "bad_suites" / "not_a_checkpoint.txt"


def clean_error(result, *needles):
    text = " ".join(result.output.split())
    assert "error:" in text and "Traceback" not in result.output, result.output
    for needle in needles:
        assert " ".join(str(needle).split()) in text, result.output


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for the block (chmod; as root, whom chmod does not stop, the
    immutable attribute), or the test is skipped where neither works."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    else:
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    try:
        with contextlib.suppress(OSError):
            (folder / ".probe").touch()
            (folder / ".probe").unlink()
            pytest.skip("the folder is still writable here")
        yield
    finally:
        undo()


@pytest.fixture
def suite(write_suite):
    return write_suite(tiny_suite("  - name: labels"))


def test_output_is_an_existing_file(suite, tmp_path):
    target = tmp_path / "results"
    target.write_text("precious")
    clean_error(kdbench("run", suite, "-o", target, "-q", expect=2), target)
    assert target.read_text() == "precious"


@pytest.mark.parametrize("inside", ["runs", "teachers"])
def test_output_whose_runs_or_teachers_is_a_file(suite, tmp_path, inside):
    out = tmp_path / "results"
    out.mkdir()
    (out / inside).write_text("precious")
    clean_error(kdbench("run", suite, "-o", out, "-q", expect=2), out / inside)
    assert (out / inside).read_text() == "precious"
    assert not (out / "suite.yaml").exists()


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_output_where_no_folder_can_be(suite):
    clean_error(kdbench("run", suite, "-o", "/proc/kdbench-results", "-q", expect=2), "/proc/kdbench-results")


def test_output_name_too_long(suite, tmp_path):
    out = tmp_path / ("r" * 300)
    clean_error(kdbench("run", suite, "-o", out, "-q", expect=2), "File name too long")


def test_output_read_only_folder(suite, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    with read_only(out):
        clean_error(kdbench("run", suite, "-o", out, "-q", expect=2), out, "cannot be written")
    assert not (out / "runs").exists()


def test_run_and_leaderboard_on_a_read_only_results_folder(suite, tmp_path):
    out = tmp_path / "results"
    kdbench("run", suite, "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    changed = suite.read_text().replace("seeds: [0]", "seeds: [0, 1]")  # a run still to do
    suite.write_text(changed)
    with read_only(out):
        clean_error(kdbench("run", suite, "-o", out, "-q", expect=2), out, "cannot be written")
        board = kdbench("leaderboard", out, expect=2)
        assert "labels" in board.output  # the table is still shown
        assert f"error: {out / 'leaderboard.md'}: " in board.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing lost or added
    assert len(list((out / "runs").iterdir())) == 1 and run.exists()


@pytest.mark.parametrize("command", ["run", "plan"])
def test_absurd_device_index(suite, tmp_path, command):
    result = kdbench(command, suite, "-o", tmp_path / "out", "--device", "cuda:99999999999999999999", expect=2)
    clean_error(result, "--device", "is not a device")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "plan", "validate"])
@pytest.mark.parametrize("method, error", [("explodes", "RuntimeError: boom"), ("exits", "SystemExit")])
def test_a_method_whose_phases_fail(write_suite, tmp_path, command, method, error):
    path = write_suite(tiny_suite(f"  - name: {method}\n    params: {{in_phases: true}}") + f"plugins: [{FAULTY}]\n")
    args = ["-o", tmp_path / "out", "-q"] if command == "run" else ["--probe-steps", "0"] if command == "plan" else []
    clean_error(kdbench(command, path, *args, expect=2), path, f"methods[0] ({method})", error)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_task_that_exits_when_built(write_suite, tmp_path, command):
    text = tiny_suite("  - name: labels").replace("name: parity-mlp", "name: faulty-parity")
    text = text.replace("eval_size: 256}", "eval_size: 256, exit_in_build: true}")
    path = write_suite(text + f"plugins: [{FAULTY}]\n")
    args = ["-o", tmp_path / "out", "-q"] if command == "run" else ["--probe-steps", "0"]
    clean_error(kdbench(command, path, *args, expect=2), path, "SystemExit")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "validate", "plan", "list"])
@pytest.mark.parametrize("plugin, message", [(NOT_PYTHON, "is not a Python file"),
                                             (ROOT / "no-such-plugin.py", "no such plugin file")])
def test_plugin_option_that_is_not_a_python_file(suite, tmp_path, command, plugin, message):
    args = [command] if command == "list" else [command, suite]
    if command == "run":
        args += ["-o", tmp_path / "out", "-q"]
    clean_error(kdbench(*args, "--plugin", plugin, expect=2), "--plugin", plugin, message)
    assert not (tmp_path / "out").exists()


def test_plugin_that_exits_when_imported(suite, tmp_path):
    plugin = tmp_path / "quits.py"
    plugin.write_text("import sys\nsys.exit(0)\n")
    clean_error(kdbench("run", suite, "-o", tmp_path / "out", "-q", "--plugin", plugin, expect=2),
                suite, "sys.exit(0)")
    assert not (tmp_path / "out").exists()


def test_suite_path_is_a_folder(tmp_path):
    clean_error(kdbench("run", tmp_path, "-o", tmp_path / "out", expect=2), tmp_path, "it is a folder")
