"""Figures: metric vs FLOPs per task, from hand-made and real run folders."""

import numpy as np
import pandas as pd

from conftest import kdbench
from kdbench import load_results
from kdbench.results.plots import plot_by_teacher, plot_task, write_figures
from kdbench.results.bands import seed_band
from kdbench.files import atomic_write_json
from test_leaderboard import curve_of, make_run

THREE_PHASES = [{"name": "checkpoint-100", "steps": 10, "step_flops": 10},
                {"name": "checkpoint-200", "steps": 10, "step_flops": 10},
                {"name": "final-teacher", "steps": 10, "step_flops": 10}]


def two_methods(out):
    """one-shot (one phase) and progressive (three phases: boundaries at 100 and 200 FLOPs), two seeds each."""
    for seed in (0, 1):
        make_run(out, f"o{seed}", "one-shot", seed, 0.7, curve=curve_of([0.5, 0.6, 0.7, 0.7 + seed / 10]))
        make_run(out, f"p{seed}", "progressive", seed, 0.9, phases=THREE_PHASES,
                 curve=curve_of([0.5, 0.7, 0.8, 0.9 - seed / 10],
                                phases=["checkpoint-100"] * 2 + ["checkpoint-200", "final-teacher"]))
    make_run(out, "x", "progressive", 2, None, status="diverged", curve=curve_of([0.5, 0.55]))
    atomic_write_json(out / "teachers" / "t-1" / "curve.json", curve_of([0.5, 0.9, 1.0], flops_per_point=1000))


def test_seed_band_mean_min_max():
    a = curve_of([0.0, 1.0, 1.0])
    b = curve_of([0.0, 0.5])  # shorter: absent beyond its last point
    long_form = pd.DataFrame([{"run_id": "a", **p} for p in a] + [{"run_id": "b", **p} for p in b])
    x, mean, lo, hi = seed_band(long_form, "accuracy")
    assert list(x) == [0, 100, 200]
    np.testing.assert_allclose(mean, [0.0, 0.75, 1.0])
    np.testing.assert_allclose(lo, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(hi, [0.0, 1.0, 1.0])


def mean_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def test_figure_has_a_mean_line_per_method_and_ticks_at_phase_boundaries(tmp_path):
    two_methods(tmp_path)
    results = load_results(tmp_path)
    fig = plot_task(results.runs(), results.curves())
    ax = fig.axes[0]
    means = mean_lines(ax)
    (ticks,) = [ln for ln in ax.get_lines() if ln.get_label() == "_boundaries"]  # progressive's only
    assert len(ax.get_lines()) == 2 + 1 and len(means) == 2
    assert list(ticks.get_xdata()) == [100, 200] and ticks.get_marker() == "|"
    assert ticks.get_transform() == ax.get_xaxis_transform()  # at the top edge, not across the data
    progressive = next(ln for ln in means if ln.get_label().startswith("progressive"))
    np.testing.assert_allclose(progressive.get_ydata(), [0.5, 0.7, 0.8, 0.85])  # mean over the finished seeds
    assert progressive.get_label() == "progressive (n=2, 1 diverged)"
    assert len(ax.collections) == 3  # two seed bands and the diverged run's marker
    assert "phase boundaries (ticks at the top)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert len({(ln.get_linestyle(), ln.get_marker()) for ln in means}) == 2


def test_coinciding_curves_stay_distinguishable_and_are_named(tmp_path):
    for seed in (0, 1):
        for method in ("labels", "one-shot", "online"):
            make_run(tmp_path, f"{method}{seed}", method, seed, 0.5, curve=curve_of([0.5, 0.5, 0.5]))
    results = load_results(tmp_path)
    means = mean_lines(plot_task(results.runs(), results.curves()).axes[0])
    assert len({(ln.get_linestyle(), ln.get_marker()) for ln in means}) == 3
    assert [ln.get_label() for ln in means] == ["labels (n=2)", "one-shot (n=2), same curve as labels",
                                                "online (n=2), same curve as labels"]


def test_teacher_curve_gets_its_own_panel(tmp_path):
    """The teacher trains for far more FLOPs than a student: on a second panel, the students' x axis keeps
    their own range."""
    two_methods(tmp_path)
    results = load_results(tmp_path)
    fig = plot_task(results.runs(), results.curves(), teacher_curves=results.teacher_curves())
    students, teacher = fig.axes
    assert len(mean_lines(students)) == 2 and students.get_xlim()[1] < 500
    (line,) = teacher.get_lines()
    assert list(line.get_xdata()) == [0, 1000, 2000] and teacher.get_xlabel().startswith("teacher's")


def test_write_figures_png_and_pdf(tmp_path):
    two_methods(tmp_path)
    make_run(tmp_path, "z", "one-shot", 0, 0.5, task="other", curve=curve_of([0.4, 0.5]))
    paths = write_figures(load_results(tmp_path), teacher=True)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "figures/other.pdf", "figures/other.png", "figures/parity-mlp.pdf", "figures/parity-mlp.png"]
    assert (tmp_path / "figures" / "parity-mlp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figures" / "parity-mlp.pdf").read_bytes()[:5] == b"%PDF-"
    before = (tmp_path / "figures" / "parity-mlp.pdf").read_bytes()
    write_figures(load_results(tmp_path), teacher=True)
    assert (tmp_path / "figures" / "parity-mlp.pdf").read_bytes() == before  # same folders, same figure


def test_by_teacher_figure_has_a_panel_per_teacher_seed(tmp_path):
    """Runs on two teacher seeds: <task>-by-teacher draws each teacher's runs on its own panel (an ordering
    that flips between teachers shows); one teacher seed writes no such figure (test_write_figures_png_and_pdf)."""
    for teacher, (a, b) in enumerate([(0.6, 0.8), (0.9, 0.7)]):  # progressive wins on teacher 0, loses on 1
        for seed in (0, 1):
            make_run(tmp_path, f"o{teacher}{seed}", "one-shot", seed, a, teacher_seed=teacher, curve=curve_of([0.5, a]))
            make_run(tmp_path, f"p{teacher}{seed}", "progressive", seed, b, teacher_seed=teacher,
                     curve=curve_of([0.5, b]))
    results = load_results(tmp_path)
    fig = plot_by_teacher(results.runs(), results.curves())
    panels = fig.axes
    assert [ax.get_title() for ax in panels] == ["teacher seed 0", "teacher seed 1"]
    finals = [{ln.get_label(): ln.get_ydata()[-1] for ln in mean_lines(ax)} for ax in panels]
    assert finals == [{"one-shot (n=2)": 0.6, "progressive (n=2)": 0.8},
                      {"one-shot (n=2)": 0.9, "progressive (n=2)": 0.7}]
    assert panels[1].get_shared_y_axes().joined(panels[0], panels[1])
    paths = write_figures(results, formats=("png",))
    assert sorted(p.name for p in paths) == ["parity-mlp-by-teacher.png", "parity-mlp.png"]
    assert plot_by_teacher(results.runs()[results.runs().teacher_seed == 0], results.curves()) is None


def test_plot_command(tmp_path):
    two_methods(tmp_path)
    result = kdbench("plot", tmp_path, "--output", tmp_path / "figs", "--teacher-curve")
    assert "parity-mlp.png" in result.output and (tmp_path / "figs" / "parity-mlp.pdf").is_file()
    kdbench("leaderboard", tmp_path, "--plot")
    assert (tmp_path / "figures" / "parity-mlp.png").is_file()
    assert "not a kdbench results folder" in kdbench("plot", tmp_path / "figs", expect=2).output


def test_run_writes_figures_next_to_leaderboard(smoke_results):
    out, _ = smoke_results
    assert (out / "leaderboard.md").is_file()
    for ext in ("png", "pdf"):
        assert (out / "figures" / f"parity-mlp.{ext}").stat().st_size > 1000
    results = load_results(out)
    fig = plot_task(results.runs(), results.curves())
    assert len(fig.axes[0].get_lines()) == 2  # labels and one-shot: one phase each, no boundaries
    assert {ln.get_label().split(", same")[0] for ln in fig.axes[0].get_lines()} == {"labels (n=2)",
                                                                                     "one-shot (n=2)"}


def test_fidelity_figures_where_runs_measured_it(tmp_path):
    """Runs with agreement/teacher_kl in their curves get <task>-agreement and <task>-teacher_kl figures
    (the mean over seeds of each column); a task without them gets none (test_write_figures_png_and_pdf)."""
    for seed in (0, 1):
        curve = curve_of([0.5, 0.7, 0.9])
        for i, point in enumerate(curve):
            point.update(agreement=0.5 + 0.2 * i + seed / 10, teacher_kl=0.7 - 0.3 * i)
        make_run(tmp_path, f"o{seed}", "one-shot", seed, 0.9, curve=curve)
    paths = write_figures(load_results(tmp_path), formats=("png",))
    names = sorted(p.name for p in paths)
    assert names == ["parity-mlp-agreement.png", "parity-mlp-teacher_kl.png", "parity-mlp.png"]
    results = load_results(tmp_path)
    fig = plot_task(results.runs(), results.curves(), metric="agreement")
    (line,) = mean_lines(fig.axes[0])
    np.testing.assert_allclose(line.get_ydata(), [0.55, 0.75, 0.95])
    assert fig.axes[0].get_ylabel() == "agreement (higher is better)"
    kl = plot_task(results.runs(), results.curves(), metric="teacher_kl")
    assert kl.axes[0].get_ylabel() == "teacher_kl (lower is better)"
