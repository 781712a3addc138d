"""The committed results/ folders are results folders: the Python API reads them (the CLI's commands read
through it), and
the leaderboard they re-aggregate to is the one committed beside them."""

import shutil
import subprocess
from pathlib import Path

import pytest

from kdbench import load_results

from conftest import ROOT, kdbench

PUBLISHED = sorted(p.parent for p in (ROOT / "results").glob("**/runs") if p.is_dir())


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_every_reference_suite_is_published_with_its_runs():
    names = {p.relative_to(ROOT / "results").as_posix() for p in PUBLISHED}
    assert {"quickstart", "tuned-parity-mlp", "teachers-parity-mlp", "cpu-parity-transformer", "cpu-pcfg-bert",
            "cpu-wikipedia-bert", "cpu-parity-transformer/check", "zoo-parity-mlp", "zoo-pcfg-bert",
            "lm-pcfg-lm", "lm-wikitext"} <= names


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.relative_to(ROOT / "results").as_posix())
def test_published_folder_re_aggregates_to_its_leaderboard(folder: Path):
    weights = [p for p in folder.rglob("*") if p.suffix in (".pt", ".safetensors")]
    assert not weights, weights
    res = load_results(folder)
    assert not res.runs().empty and res.unreadable().empty
    assert table_rows(res.leaderboard(fmt="md")) == table_rows((folder / "leaderboard.md").read_text())


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout")
def test_a_suite_run_leaves_the_clone_clean(tmp_path, monkeypatch):
    """The main job writes where git does not track (out/<suite>), so a clone stays clean: a report made
    afterwards does not stamp "with uncommitted changes"."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    monkeypatch.chdir(clone)
    kdbench("run", "suites/smoke.yaml", "--quiet")
    assert (clone / "out" / "smoke" / "leaderboard.md").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""
