"""Options of the parity tasks (issue 19): hierarchical labels (levels) and the monomial probe."""

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from torch import nn

from kdbench import load_results
from kdbench.results.probe_plots import plot_probe
from kdbench.tasks.monomials import correlations, support_monomials
from kdbench.tasks.parity import ParityMLP, ParityParams, hierarchical_labels
from kdbench.tasks.parity_transformer import ParityTransformer, ParityTransformerParams
from kdbench.testing import TinyTask, tiny_encoder_task

from conftest import kdbench

CPU = torch.device("cpu")


def public_code_classes(x: np.ndarray, features: list, num_labels: int) -> np.ndarray:
    """The public progressive-distillation code's hierarchical labels, written from its description: the
    score of leaf ``label`` (num_labels..2*num_labels-1) sums, over the path to the root, +/- the parity of
    the parent's feature (+ for a left child, - for a right one); the class is the leaf of highest score."""
    scores = np.zeros((len(x), num_labels))
    for i in range(num_labels):
        label = i + num_labels
        while label > 1:
            sign = 1 - 2 * (label % 2)
            scores[:, i] += sign * np.prod(x[:, features[label // 2 - 1]], axis=1)
            label //= 2
    return np.argmax(scores, axis=1)


@pytest.mark.parametrize("levels, k, support", [(2, 2, "first"), (2, 3, "random"), (3, 2, "first"),
                                                (3, 2, "random")])
def test_hierarchical_labels_match_the_public_code(levels, k, support):
    params = ParityParams(n=16, k=k, levels=levels, support=support, teacher_width=8, student_width=4,
                          eval_size=512)
    task = ParityMLP().build(params, 3, CPU)
    supports = task.data.supports
    assert supports.shape == (2 ** levels - 1, k)
    assert len(set(supports.flatten().tolist())) == supports.numel()  # disjoint supports
    if support == "first":
        assert supports.flatten().tolist() == list(range(supports.numel()))
    x = task.eval_x.numpy()
    public = public_code_classes(x, [list(s) for s in supports.tolist()], 2 ** levels)
    # kdbench numbers the leaves the other way round, so that one level is the plain parity
    assert task.eval_y.tolist() == (2 ** levels - 1 - public).tolist()
    assert len(set(task.eval_y.tolist())) == 2 ** levels  # every class occurs in 512 samples
    batch = task.train_batch(torch.Generator().manual_seed(0), 64)
    assert batch.labels.tolist() == (2 ** levels - 1 - public_code_classes(batch.inputs.numpy(),
                                                                         supports.tolist(), 2 ** levels)).tolist()
    assert task.student_model()(task.eval_x).shape == (512, 2 ** levels)


def test_one_level_is_the_plain_parity_of_the_public_code():
    task = ParityMLP().build(ParityParams(n=12, k=3, support="random", teacher_width=8, student_width=4,
                                          eval_size=256), 1, CPU)
    x = task.eval_x.numpy()
    assert task.eval_y.tolist() == (np.prod(x[:, task.support.numpy()], axis=1) > 0).astype(int).tolist()
    assert task.eval_y.tolist() == (1 - public_code_classes(x, [task.support.tolist()], 2)).tolist()


def test_hierarchical_labels_on_a_hand_example():
    # supports: root {0}, left child {1}, right child {2}; x = (+1, -1, *) goes left then right: leaf 5,
    # the public code's class 1, kdbench's 2; x = (-1, *, +1) goes right then left: leaf 6, class 2 -> 1
    x = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, -1.0]])
    assert hierarchical_labels(x, torch.tensor([[0], [1], [2]])).tolist() == [2, 1, 3, 0]


def test_transformer_task_has_the_same_labels_as_the_mlp_task():
    common = dict(n=8, k=2, levels=2, support="random", eval_size=128)
    mlp = ParityMLP().build(ParityParams(teacher_width=8, student_width=4, **common), 5, CPU)
    enc = ParityTransformer().build(ParityTransformerParams(teacher_heads=2, teacher_width=8, student_heads=2,
                                                            student_width=8, **common), 5, CPU)
    assert torch.equal(mlp.eval_y, enc.eval_y) and torch.equal(mlp.eval_x, 1 - 2 * enc.eval_x.float())
    assert enc.student_model()(enc.eval_x).shape == (128, 4)


@pytest.mark.parametrize("task", [TinyTask(params={"n": 10, "k": 2, "levels": 2, "teacher_width": 64,
                                                   "student_width": 16, "eval_size": 256}),
                                  tiny_encoder_task()], ids=["mlp", "transformer"])
def test_hierarchical_tasks_train(run_method, task):
    if task.name == "parity-transformer":
        task.params = {**task.params, "levels": 2}
    result = run_method("one-shot", task=task)
    assert result.status == "finished" and 0 <= result.metric() <= 1
    assert result.student(result.task.eval_x).shape[-1] == 4


@pytest.mark.parametrize("params, field", [
    ("{n: 10, k: 4, levels: 2}", "levels"),  # 3 supports of 4 coordinates do not fit in 10
    ("{n: 10, k: 2, levels: 2, probe_degree: 1}", "probe_degree"),
    ("{n: 10, k: 2, levels: 0}", "levels"),
])
def test_bad_options_exit_2_naming_the_field(write_suite, params, field):
    from conftest import tiny_suite

    suite = tiny_suite().replace("{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}",
                                 params[:-1] + ", teacher_width: 64, student_width: 16}")
    result = kdbench("validate", write_suite(suite), expect=2)
    assert "tasks[0].params" in result.output and field in result.output


# ------------------------------------------------------------------ the probe


class Monomial(nn.Module):
    """A hand-built model whose output margin (logit 1 - logit 0) is the monomial over ``coords``."""

    def __init__(self, coords, tokens=False):
        super().__init__()
        self.coords, self.tokens = list(coords), tokens

    def forward(self, x, mask=None):
        bits = 1 - 2 * x.float() if self.tokens else x  # tokens {0, 1} are the bits {+1, -1}
        chi = bits[:, self.coords].prod(dim=1)
        return torch.stack([torch.zeros_like(chi), 3 * chi + 0.5], dim=1)


def test_support_monomials():
    assert support_monomials([2, 5, 7], 1) == [(2,), (5,), (7,), (2, 5, 7)]
    assert support_monomials([2, 5, 7], 2) == [(2,), (5,), (7,), (2, 5), (2, 7), (5, 7), (2, 5, 7)]
    assert support_monomials([2, 5, 7], 5) == [(2,), (5,), (7,), (2, 5), (2, 7), (5, 7), (2, 5, 7)]


@pytest.mark.parametrize("transformer", [False, True], ids=["mlp", "transformer"])
def test_probe_reports_one_for_the_models_monomial_and_about_zero_for_the_others(transformer):
    common = dict(n=12, k=3, support="random", probe_degree=2, eval_size=4096)
    if transformer:
        task = ParityTransformer().build(ParityTransformerParams(teacher_heads=2, teacher_width=8, student_heads=2,
                                                                 student_width=8, eval_batch_size=1000, **common),
                                         0, CPU)
    else:
        task = ParityMLP().build(ParityParams(teacher_width=8, student_width=4, **common), 0, CPU)
    support = task.support.tolist()
    names = {f"corr:{''.join(f'x{i}' for i in s)}" for d in (1, 2, 3) for s in combinations(support, d)}
    for coords in [(support[0], support[2]), tuple(support)]:
        metrics = task.evaluate(Monomial(coords, tokens=transformer))
        probe = {k: v for k, v in metrics.items() if k.startswith("corr:")}
        assert set(probe) == names  # degree 1 and 2, and the parity
        own = f"corr:{''.join(f'x{i}' for i in coords)}"
        assert probe[own] == pytest.approx(1.0, abs=1e-9)
        assert all(abs(v) < 4 / np.sqrt(4096) for k, v in probe.items() if k != own)


def test_probe_is_pearsons_correlation():
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (1000, 6), generator=g).float() * 2 - 1
    margin = bits[:, 0] * 0.7 + bits[:, 1] * bits[:, 2] * 0.3 + torch.randn(1000, generator=g)
    got = correlations(bits, margin, [(0,), (1, 2), (3,)])
    for coords, name in (((0,), "corr:x0"), ((1, 2), "corr:x1x2"), ((3,), "corr:x3")):
        oracle = np.corrcoef(margin.numpy(), bits[:, list(coords)].prod(dim=1).numpy())[0, 1]
        assert got[name] == pytest.approx(oracle, abs=1e-6)
    assert correlations(bits, torch.zeros(1000), [(0,)]) == {"corr:x0": 0.0}  # a constant output


def test_probe_off_by_default_and_does_not_change_training(run_method):
    base = TinyTask()
    probed = TinyTask(params={**base.params, "probe_degree": 1})
    plain, with_probe = run_method("one-shot", task=base), run_method("one-shot", task=probed)
    assert not any(k.startswith("corr:") for k in plain.final)
    assert {k for k in with_probe.final if k.startswith("corr:")} == {"corr:x0", "corr:x1", "corr:x0x1"}
    # the same training: every column the plain run has is equal on both curves
    assert [{k: p[k] for k in q if k != "time"} for p, q in zip(with_probe.curve, plain.curve)] == \
        [{k: v for k, v in q.items() if k != "time"} for q in plain.curve]


PROBE_SUITE = """
name: probe
seeds: [0, 1]
budget: {flops: 4e6}
eval: {points: 4}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 3, teacher_width: 64, student_width: 16, eval_size: 512, probe_degree: 1}
    teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 80}
    student: {optimizer: adam, lr: 0.01, batch_size: 16}
methods:
  - name: labels
  - name: one-shot
"""


def test_probe_columns_in_curves_and_the_probe_figure(write_suite, tmp_path):
    out = tmp_path / "out"
    kdbench("run", write_suite(PROBE_SUITE), "-o", out, "-q")
    assert (out / "figures" / "parity-mlp-probe.png").stat().st_size > 0
    res = load_results(out)
    curves, teacher_curves = res.curves(), res.teacher_curves()
    columns = ["corr:x0", "corr:x1", "corr:x2", "corr:x0x1x2"]
    assert set(columns) <= set(curves.columns) and set(columns) <= set(teacher_curves.columns)
    assert curves[columns].notna().all().all() and teacher_curves[columns].notna().all().all()
    fig = plot_probe(res.runs(), curves, teacher_curves, "steps")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["labels (n=2)", "one-shot (n=2)",
                                                 f"teacher {teacher_curves.teacher_id.iloc[0]} (its own training)"]
    assert all(len(ax.get_lines()) == len(columns) for ax in panels)  # a line per monomial in each panel
    # each line is the mean over seeds of |correlation| at the curve's steps
    one_shot = res.runs()[res.runs().method == "one-shot"].run_id
    last = curves[curves.run_id.isin(one_shot)].groupby("step")["corr:x0x1x2"].apply(lambda v: v.abs().mean())
    parity_line = panels[1].get_lines()[-1]
    assert parity_line.get_ydata()[-1] == pytest.approx(last.iloc[-1])
    # a plot of the folder without probe columns writes no probe figure
    kdbench("run", write_suite(PROBE_SUITE.replace(", probe_degree: 1", ""), "plain.yaml"), "-o", tmp_path / "p",
            "-q")
    assert not list((tmp_path / "p" / "figures").glob("*-probe.*"))
    summary = json.loads(next((out / "runs").glob("*/summary.json")).read_text())
    assert "corr:x0x1x2" in summary["metrics"]
