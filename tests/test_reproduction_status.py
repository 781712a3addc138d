"""README.md's Reproduction status table is generated from the committed results/*/claims.json
(scripts/reproduction_status.py): README and the results cannot disagree."""

import importlib.util
import json

import pytest

from conftest import ROOT

SPEC = importlib.util.spec_from_file_location("reproduction_status", ROOT / "scripts" / "reproduction_status.py")
status = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(status)

README = """# a project

## Reproduction status

<!-- claims:begin -->
stale
<!-- claims:end -->

The hand-written table.
"""
CLAIMS = {"kdbench_version": "0.2.0", "suite": "tiny-claims", "claims": [
    {"name": "labels learns sooner", "task": "parity-mlp", "better": "labels", "than": "one-shot", "metric": "auc",
     "higher_is_better": True, "holds_on": 0.5, "min_seeds": 2, "held": 1, "teacher_seeds": [0, 1, 2],
     "student_seeds": "3", "summary": "holds on 1 of 3 teacher seeds (3 student seeds each)", "verdict": "holds",
     "teachers": [{"teacher_seed": 0, "status": "does not hold"}, {"teacher_seed": 1, "status": "holds"},
                  {"teacher_seed": 2, "status": "does not hold"}]},
    {"name": "a | b", "task": "parity-mlp", "better": "one-shot", "than": "labels", "metric": "accuracy",
     "higher_is_better": True, "holds_on": 1.0, "min_seeds": 2, "held": 0, "teacher_seeds": [0],
     "student_seeds": "1-3", "summary": "", "verdict": "not enough runs", "margin": 0.1,
     "teachers": [{"teacher_seed": 0, "status": "not enough runs"}]}]}


def test_readme_agrees_with_the_committed_results(capsys):
    assert status.main(["--check"]) == 0, capsys.readouterr().out


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "claims.json").write_text(json.dumps(CLAIMS))
    return tmp_path


def test_the_table_has_a_row_per_claim(repo, capsys):
    assert status.main(["--check", "--root", str(repo)]) == 1
    assert "differs from the committed results" in capsys.readouterr().err
    assert status.main(["--root", str(repo)]) == 0
    text = (repo / "README.md").read_text()
    assert text == README.replace("stale\n", "\n" + "\n".join([
        "| suite | claim | task | metric | teacher seeds | verdict |",
        "|---|---|---|---|---|---|",
        "| [tiny-claims](results/tiny/claims.json) | labels learns sooner: labels > one-shot | parity-mlp | auc | "
        "holds on 1 of 3 teacher seeds (does not hold: 0, 2; holds: 1; 3 student seeds each) | **holds** |",
        "| [tiny-claims](results/tiny/claims.json) | a \\| b: one-shot > labels by > 0.1 | parity-mlp | accuracy | "
        "holds on 0 of 1 teacher seeds (not enough runs: 0; 1-3 student seeds each) | **not enough runs** |"]) + "\n\n")
    assert status.main(["--check", "--root", str(repo)]) == 0  # rewritten: up to date


def test_no_claims_files_give_an_empty_table(repo):
    (repo / "results" / "tiny" / "claims.json").unlink()
    assert status.main(["--root", str(repo)]) == 0
    section = (repo / "README.md").read_text().split("<!-- claims:begin -->")[1].split("<!-- claims:end -->")[0]
    assert section.strip().splitlines() == [status.NONE_YET, "", *status.HEADER]
    assert "The hand-written table." in (repo / "README.md").read_text()


def test_a_readme_without_the_markers_is_refused(repo):
    (repo / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit, match="needs one <!-- claims:begin --> line"):
        status.main(["--root", str(repo)])
