"""Random streams are independent: what a method draws in phases() shares no bits with the
student's initial weights (or with anything else), and every stream is reproducible."""

import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from kdbench import streams
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, method_phases
from kdbench.run.pricing import load_suite
from kdbench.run.teachers import ProbeTeacher

SEEDS = [0, 1, 2, 3, 4]

MLP_TASK = """
  - name: parity-mlp
    params: {n: 100, k: 3, teacher_width: 200, student_width: 100, eval_size: 64}
    teacher: {steps: 10}
"""
ENCODER_TASK = """
  - name: pcfg-bert
    params: {seq_len: 64, teacher_layers: 1, teacher_heads: 4, teacher_width: 96,
             student_layers: 1, student_heads: 4, student_width: 64, eval_size: 8}
    teacher: {steps: 10, batch_size: 4}
    student: {batch_size: 4}
"""


def built(write_suite, task_yaml: str, method: str, seed: int):
    """The student and phases of ``method`` for ``seed``, exactly as a run builds them (before training)."""
    text = f"name: s\nseeds: [{seed}]\nbudget: {{flops: 1e9}}\ntasks:{task_yaml}methods:\n  - name: {method}\n"
    loaded, registry = load_suite(write_suite(text), load_plugins)
    (run,) = loaded.runs
    task = build_task(run, registry, torch.device("cpu"), None)
    student, phases, _ = method_phases(run, registry, task, ProbeTeacher(task, run.teacher_seed), torch.device("cpu"),
                                       run.method, run.method_params)
    return student, phases


def drawn_weights(student) -> torch.Tensor:
    """The student's layer-1 weights that initialisation drew at random, flattened in the order drawn
    (constant tensors, such as zero biases and LayerNorm's ones, drew nothing)."""
    drawn = [p.detach().flatten() for p in student.layer_parameters(1) if p.numel() > 1 and p.std() > 0]
    return torch.cat(drawn)


def correlations(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, int]:
    n = min(a.numel(), b.numel())
    a, b = a[:n].double().numpy(), b[:n].double().numpy()
    return pearsonr(a, b)[0], spearmanr(a, b)[0], n


@pytest.mark.parametrize("task_yaml", [MLP_TASK, ENCODER_TASK], ids=["parity-mlp", "pcfg-bert"])
@pytest.mark.parametrize("seed", SEEDS)
def test_extraction_projection_is_independent_of_the_student_init(write_suite, task_yaml, seed):
    student, phases = built(write_suite, task_yaml, "curriculum-extraction", seed)
    projection = phases[0].loss.projection
    pearson, spearman, n = correlations(projection.flatten(), drawn_weights(student))
    assert n >= 5000
    # chance alone: |r| ~ 1/sqrt(n) < 0.015; sharing the student's bits gave 0.33-0.37
    assert abs(pearson) < 0.05 and abs(spearman) < 0.05, (pearson, spearman, n)


def test_streams_are_distinct_and_reproducible():
    seeds = {(s, k): streams.derive_seed(s, k) for s in streams.STREAMS for k in range(3)}
    assert len(set(seeds.values())) == len(seeds)  # no two (stream, seed) pairs share a seed
    assert streams.derive_seed("method", 7) == streams.derive_seed("method", 7)
    with pytest.raises(ValueError, match="unknown random stream 'methd'"):
        streams.derive_seed("methd", 0)


def test_masks_come_from_their_own_stream(write_suite):
    """The masks of a batch do not depend on how many random numbers drew its sequences."""
    loaded, registry = load_suite(write_suite(f"name: s\nseeds: [0]\nbudget: {{flops: 1e9}}\ntasks:{ENCODER_TASK}"
                                              "methods:\n  - name: labels\n"), load_plugins)
    task = build_task(loaded.runs[0], registry, torch.device("cpu"), None)
    g = torch.Generator().manual_seed(123)
    masks = streams.substream(g, "masking")
    expected = torch.rand(4, 64, generator=masks)
    g.manual_seed(123)
    batch = task.train_batch(g, 4)
    chosen = (expected < task.p.mask_rate) & task.maskable(task.sequences(g.manual_seed(123), 4))
    assert torch.equal(batch.mask, chosen)
