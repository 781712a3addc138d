"""A lower-is-better primary metric end to end: an `lm` suite (perplexity) tuned on a dev seed, its
leaderboard, paired deltas, figures and tuning choice all read "lower is better"."""

import pytest
from conftest import ROOT, kdbench

import kdbench as api

SUITE = f"""
name: lm-tiny
seeds: [0, 1]
budget: {{steps: 40, method: one-shot}}
eval: {{points: 3}}
tasks:
  - name: lm
    params: {{corpus: {ROOT / "data" / "wikitext-2-excerpt"}, vocab_size: 300, seq_len: 16, eval_size: 16,
             teacher_layers: 1, teacher_width: 32, teacher_heads: 2, student_layers: 1, student_width: 8,
             student_heads: 2}}
    teacher: {{steps: 60, batch_size: 16, lr: 0.01}}
    student: {{batch_size: 16}}
methods:
  - name: labels
  - name: one-shot
tune:
  trials: 2
  dev_seeds: [100]
  objective: final
  sampler: random
  space:
    "*": {{student.lr: {{low: 1.0e-4, high: 3.0e-2, log: true}}}}
"""


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    (folder / "suite.yaml").write_text(SUITE)
    kdbench("run", folder / "suite.yaml", "-o", folder / "out", "-q")
    return folder / "out"


def test_tuning_chooses_the_lowest_perplexity(lm_run):
    trials = api.load_results(lm_run).tuning()
    assert len(trials) == 4
    for _, g in trials.groupby("method"):
        assert g.objective.nunique() == 2  # the two learning rates differ
        assert bool(g.loc[g.objective.idxmin()].chosen) and g.chosen.sum() == 1


def test_leaderboard_ranks_and_bolds_the_lowest_perplexity(lm_run):
    runs = api.load_results(lm_run).runs()
    tests = runs[runs.seed.isin([0, 1])]
    means = tests.groupby("method").value.mean()
    board = (lm_run / "leaderboard.md").read_text()
    assert "perplexity ↓" in board and "perplexity: lower is better" in board
    table = board.split("### lm", 1)[1].strip().split("\n\n")[0]  # the leaderboard (tuning tables follow)
    order = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert order == sorted(means.index, key=lambda m: means[m])  # ascending perplexity
    best_row = next(line for line in table.splitlines() if line.startswith(f"| {means.idxmin()} "))
    worst_row = next(line for line in table.splitlines() if line.startswith(f"| {means.idxmax()} "))
    assert "**" in best_row.split("|")[3] and "**" not in worst_row.split("|")[3]  # the lowest is bold


def test_paired_delta_counts_lower_as_better(lm_run):
    runs = api.load_results(lm_run).runs()
    value = {(r.method, r.seed): r.value for r in runs[runs.seed.isin([0, 1])].itertuples()}
    board = api.load_results(lm_run).leaderboard()
    labels = board[(board.task == "lm") & (board.method == "labels")].iloc[0]
    assert labels["better"] == sum(value[("labels", s)] < value[("one-shot", s)] for s in (0, 1))
    assert labels["delta"] == pytest.approx(sum(value[("labels", s)] - value[("one-shot", s)] for s in (0, 1)) / 2)


def test_figures_say_lower_is_better(lm_run):
    from kdbench.results.plots import plot_task  # noqa: PLC0415

    results = api.load_results(lm_run)
    runs = results.runs()
    fig = plot_task(runs[runs.seed.isin([0, 1])], results.curves())
    assert fig.axes[0].get_ylabel() == "perplexity (lower is better)"
