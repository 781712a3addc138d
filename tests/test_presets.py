"""Task presets: a task named with no params gets a laptop size; ``preset: paper`` gives the
papers' size, the entry's own params and recipes winning over it, and leaves no trace in run ids."""

import pytest

from kdbench.plugins import load_plugins
from kdbench.suite.expand import read_suite
from tests.conftest import DATA, kdbench

SUITE = """
name: presets
seeds: [0]
budget: {{flops: 1e9}}
tasks:
  - name: parity-mlp
    params: {params}
{extra}methods:
  - name: one-shot
"""


def runs_of(write_suite, params: str, extra: str = "", name: str = "suite.yaml"):
    path = write_suite(SUITE.format(params=params, extra=extra), name)
    return read_suite(path, load_plugins)[0].runs


def test_parity_mlp_defaults_are_the_quickstart_size(write_suite):
    (run,) = runs_of(write_suite, "{}")
    p = run.task_params
    assert (p.n, p.k, p.teacher_width, p.student_width) == (100, 4, 1000, 100)
    t = run.teacher_recipe
    assert (t.optimizer, t.lr, t.batch_size, t.steps, t.checkpoint_every) == ("adam", 0.002, 64, 14_000, 250)


def test_paper_preset_is_the_papers_size_and_spelled_out_gives_the_same_run(write_suite):
    (preset,) = runs_of(write_suite, "{preset: paper}", name="a.yaml")
    p, t, s = preset.task_params, preset.teacher_recipe, preset.student_recipe
    assert (p.n, p.k, p.teacher_width, p.student_width) == (100, 6, 50_000, 100)
    assert (t.optimizer, t.lr, t.batch_size, t.steps, t.checkpoint_every) == ("sgd", 0.01, 1, 10_000_000, 100_000)
    assert (s.optimizer, s.batch_size) == ("sgd", 1)
    spelled = ("    teacher: {optimizer: sgd, lr: 0.01, batch_size: 1, steps: 10000000, checkpoint_every: 100000}\n"
               "    student: {optimizer: sgd, lr: 0.01, batch_size: 1}\n")
    (same,) = runs_of(write_suite, "{n: 100, k: 6, teacher_width: 50000, student_width: 100}", spelled, "b.yaml")
    assert same.run_id == preset.run_id and same.teacher_id == preset.teacher_id


def test_given_params_and_recipes_win_over_the_preset(write_suite):
    (run,) = runs_of(write_suite, "{preset: paper, teacher_width: 2000}", "    teacher: {steps: 500}\n")
    assert (run.task_params.k, run.task_params.teacher_width) == (6, 2000)
    assert (run.teacher_recipe.optimizer, run.teacher_recipe.steps) == ("sgd", 500)


def test_an_unknown_preset_names_the_allowed_ones(write_suite):
    path = write_suite(SUITE.format(params="{preset: huge}", extra=""))
    result = kdbench("validate", path, expect=2)
    assert "tasks[0].params.preset: unknown preset 'huge' of task parity-mlp (allowed: paper)" in result.output
    assert str(path) in result.output


def test_describe_lists_the_presets():
    output = kdbench("describe", "parity-mlp").output
    assert "preset paper (tasks[i].params.preset: paper; given params win): params: n 100, k 6, teacher_width " \
           "50000" in output.replace("\n", " ")


# (task, a default that is a CPU size and the same field under preset: paper, the same for the teacher's steps)
TRANSFORMER_TASKS = [
    ("parity-transformer", ("teacher_width", 128, 256), (4000, 250_000)),
    ("pcfg-bert", ("teacher_width", 64, 256), (2000, 8000)),
    ("wikipedia-bert", ("teacher_width", 128, 768), (3000, 1_000_000)),
]


@pytest.mark.parametrize("task, param, steps", TRANSFORMER_TASKS, ids=[t[0] for t in TRANSFORMER_TASKS])
def test_transformer_tasks_default_to_the_cpu_suites_sizes_and_the_preset_is_the_papers(write_suite, task, param,
                                                                                          steps):
    """With no params a task is suites/cpu/'s size (minutes on a CPU); preset: paper is the papers'."""
    corpus = f"corpus: {DATA / 'wikitext-2-excerpt'}, " if task == "wikipedia-bert" else ""
    small, paper = (read_suite(write_suite(SUITE.format(params="{" + corpus + preset + "}", extra="")
                                           .replace("parity-mlp", task), f"{i}.yaml"), load_plugins)[0].runs[0]
                    for i, preset in enumerate(["", "preset: paper"]))
    name, cpu, papers = param
    assert getattr(small.task_params, name) == cpu and getattr(paper.task_params, name) == papers
    assert (small.teacher_recipe.steps, paper.teacher_recipe.steps) == steps
