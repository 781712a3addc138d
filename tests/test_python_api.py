"""The Python API: the CLI's commands as functions, returning DataFrames (docs/python-api.md's example runs here)."""

import re

import pandas as pd
import pytest

import kdbench
from conftest import ROOT, SUITES, kdbench as cli, tiny_suite


def docs_example() -> str:
    """The first Python block of docs/python-api.md."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    section = text.split("# Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = docs_example().replace("suites/quickstart.yaml", str(SUITES / "smoke.yaml"))
    code = code.replace("jobs=2", "jobs=1")  # the same result (tested elsewhere), faster here
    namespace = {}
    exec(compile(code, "docs/python-api.md", "exec"), namespace)
    res = namespace["res"]
    board = res.leaderboard()
    assert isinstance(board, pd.DataFrame) and set(board.method) == {"labels", "one-shot"}
    assert board.n.tolist() == [2, 2]  # two seeds each
    curves = res.curves()
    assert {"run_id", "step", "flops", "phase", "accuracy"} <= set(curves.columns)
    assert list(curves.columns[:5]) == ["run_id", "task", "method", "seed", "teacher_seed"]  # no join needed
    runs = res.runs().set_index("run_id")
    for column in ("task", "method", "seed", "teacher_seed"):
        assert (curves[column].to_numpy() == runs.loc[curves.run_id, column].to_numpy()).all()
    assert curves.groupby("method").seed.nunique().to_dict() == {"labels": 2, "one-shot": 2}
    assert res.executed and not res.failed and res.skipped == []


def test_run_suite_matches_the_cli(write_suite, tmp_path):
    suite = write_suite(tiny_suite("  - name: labels\n  - name: one-shot"))
    res = kdbench.run_suite(suite, output=tmp_path / "api")
    cli("run", suite, "-o", tmp_path / "cli", "-q")
    assert len(res.executed) == 2
    assert kdbench.load_results(tmp_path / "api").leaderboard(fmt="md") == (tmp_path / "api" / "leaderboard.md").read_text()
    api, by_cli = (kdbench.load_results(tmp_path / d).leaderboard().drop(columns=["wall_time"]) for d in ("api", "cli"))
    pd.testing.assert_frame_equal(api, by_cli)  # the same numbers, bar wall-clock times
    again = kdbench.run_suite(suite, output=tmp_path / "api")
    assert sorted(again.skipped) == sorted(s["run_id"] for s in res.executed) and not again.executed
    with pytest.warns(DeprecationWarning, match="list of run ids since kdbench 0.3"):
        assert again.skipped == 2 and again.skipped > 1 and 1 + again.skipped == 3  # the old count, for 0.3


def test_the_same_user_errors_as_the_cli(write_suite, tmp_path):
    bad = write_suite(tiny_suite("  - name: one-shot\n    params: {temperature: -1}"))
    message = cli("run", bad, "-o", tmp_path / "cli", "-q", expect=2).output
    with pytest.raises(kdbench.UserError) as err:
        kdbench.run_suite(bad, output=tmp_path / "api")
    assert "methods[0].params.temperature" in str(err.value)
    assert str(err.value).split(":", 1)[1].split()[0] in message.replace("\n", "")
    with pytest.raises(kdbench.UserError, match="no such suite file"):
        kdbench.validate_suite(tmp_path / "nothing.yaml")
