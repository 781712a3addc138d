"""What a run leaves behind for its reader: phase info in summary.json, log lines whole in a CI log."""

import json
import re
from pathlib import Path

import torch.nn.functional as F

from kdbench import Method, Phase, logits
from kdbench.testing import run_method

from conftest import kdbench, tiny_suite


class Annotated(Method):
    """Two phases with free-form info, one value of which JSON cannot hold."""

    name, version, needs_teacher = "annotated", "1", False

    def phases(self, ctx, params):
        loss = lambda b: F.cross_entropy(logits(ctx.student, b), b.labels)  # noqa: E731
        return [Phase("first", loss=loss, steps=3, info={"layers": [1], "note": Path("a/b")}),
                Phase("second", loss=loss)]


def test_phase_info_is_recorded_in_the_summary(tmp_path):
    result = run_method(Annotated, out=tmp_path, budget_flops=1e6)
    summary = json.loads((tmp_path / "runs" / result.run.run_id / "summary.json").read_text())
    assert [p["info"] for p in summary["phases"]] == [{"layers": [1], "note": "a/b"}, {}]


def test_log_lines_are_not_wrapped_when_output_is_not_a_terminal(tmp_path, write_suite):
    label = "a-task-label-long-enough-that-every-log-line-of-its-runs-is-wider-than-eighty-columns"
    suite = write_suite(tiny_suite().replace("  - name: parity-mlp\n", f"  - name: parity-mlp\n    label: {label}\n"))
    out = tmp_path / "results-in-a-folder-whose-name-makes-the-last-line-longer-than-eighty-columns"
    lines = kdbench("run", suite, "--output", out).output.splitlines()  # CliRunner: not a terminal
    run_line = [line for line in lines if line.startswith(f"  {label} / one-shot / seed 0: accuracy")]
    assert len(run_line) == 1 and len(run_line[0]) > 80
    assert re.search(r"\(\d+ steps, \d+\.\d s\)$", run_line[0])
    assert f"1 runs executed, 0 skipped, 0 failed, 0 diverged; leaderboard: {out / 'leaderboard.md'}" in lines
