import importlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdbench.cli.app import app
from kdbench.launchers import local

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
DATA = ROOT / "data"  # small data shipped with the repository: a clone needs nothing beside it

torch.set_num_threads(1)  # tiny models: one thread is as fast and immune to oversubscription


def without_time(curve: list[dict]) -> list[dict]:
    """A curve without its wall-clock column: what must match bit for bit between runs."""
    return [{k: v for k, v in row.items() if k != "time"} for row in curve]


def curves(out) -> dict:
    """{run id: curve without wall-clock times} of every run under ``out``."""
    return {d.name: without_time(json.loads((d / "curve.json").read_text()))
            for d in sorted((Path(out) / "runs").iterdir())}


def kdbench(*args, expect: int | None = 0):
    """Invoke the CLI in-process; assert the exit code unless expect is None."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


@pytest.fixture(autouse=True, scope="session")
def one_core_for_the_default_jobs():
    """Without --jobs, `kdbench run` runs as many jobs as cores are free (local.free_cores): tests,
    session fixtures included, read one core there, so that their runs stay in this process (where
    they monkeypatch) whatever the shared machine's load. Tests of that default put back the real
    local.free_cores with their own monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "free_cores", lambda: local.FreeCores(cores=1, load=None))
        yield


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """The smoke suite run once for the whole session (read-only for tests)."""
    out = tmp_path_factory.mktemp("smoke")
    result = kdbench("run", SUITES / "smoke.yaml", "--output", out, "--quiet")
    return out, result


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite YAML (text) into tmp_path and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


TINY_SUITE = """
name: tiny
seeds: [0]
budget: {{flops: {flops}}}
eval: {{points: 4}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 50}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
methods:
{methods}
"""


def tiny_suite(methods: str = "  - name: one-shot", flops: float = 2e6) -> str:
    """A suite of one tiny parity task with ``methods`` (YAML list items) under ``flops``."""
    return TINY_SUITE.format(methods=methods, flops=flops)


def resolve(dotted: str):
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)
