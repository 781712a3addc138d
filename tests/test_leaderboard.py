"""Leaderboard tables are computed from run folders alone."""

import json
import statistics

from kdbench.leaderboard import render_markdown
from kdbench.store import atomic_write_json


def make_run(out, run_id, method, seed, value, status="finished", task="parity-mlp"):
    d = out / "runs" / run_id
    atomic_write_json(d / "config.json", {"task_label": task, "method_label": method, "method": method,
                                          "method_version": "3", "seed": seed, "teacher_seed": 0,
                                          "teacher_id": "t-1"})
    atomic_write_json(d / "summary.json", {"status": status, "metric": "accuracy",
                                           "metrics": {"accuracy": value} if value is not None else {},
                                           "flops": 1e6, "budget_flops": 1.2e6, "steps": 100, "wall_time": 2.0})
    atomic_write_json(d / "curve.json", [])


def test_mean_std_and_failed_runs_shown(tmp_path):
    make_run(tmp_path, "a", "one-shot", 0, 0.5)
    make_run(tmp_path, "b", "one-shot", 1, 0.7)
    make_run(tmp_path, "c", "one-shot", 2, 0.9)
    make_run(tmp_path, "d", "labels", 0, 0.6)
    make_run(tmp_path, "e", "labels", 1, None, status="failed")
    atomic_write_json(tmp_path / "teachers" / "t-1" / "summary.json",
                      {"metrics": {"accuracy": 1.0}, "steps": 500, "flops": 3e9, "wall_time": 12.5})
    board = render_markdown(tmp_path)
    lines = [l for l in board.splitlines() if l.startswith("| ")]
    one_shot = next(l for l in lines if l.startswith("| one-shot"))
    std = statistics.stdev([0.5, 0.7, 0.9])
    assert f"0.7000 ± {std:.4f}" in one_shot and "| 3 " in one_shot
    labels = next(l for l in lines if l.startswith("| labels"))
    assert "0.6000 ± 0.0000" in labels and "1 failed" in labels
    assert lines.index(one_shot) < lines.index(labels)  # best first
    assert "Teacher `t-1`: accuracy 1.0000; trained 500 steps, 3e+09 FLOPs" in board
    assert "Budget: 1.2e+06 FLOPs" in board
