"""The regressor is drawn from the method's own random stream, not from the bits that
initialised the student (they shared a seed before kdbench's random streams: correlation ~1)."""

import pytest
import torch
from scipy.stats import pearsonr

from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, method_phases
from kdbench.run.pricing import load_suite
from kdbench.run.teachers import ProbeTeacher

SUITE = """
name: s
seeds: [{seed}]
budget: {{flops: 1e9}}
tasks:
  - name: parity-mlp
    params: {{n: 100, k: 3, teacher_width: 200, student_width: 100, eval_size: 64}}
    teacher: {{steps: 10}}
methods:
  - name: fitnets
"""


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_regressor_is_independent_of_the_student_init(tmp_path, seed):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(seed=seed))
    loaded, registry = load_suite(path, load_plugins)
    (run,) = loaded.runs
    task = build_task(run, registry, torch.device("cpu"), None)
    student, phases, _ = method_phases(run, registry, task, ProbeTeacher(task, 0), torch.device("cpu"),
                                       run.method, run.method_params)
    regressor_weight = phases[0].params[-2].detach().flatten()  # nn.Linear(student 100 -> teacher 200)
    first_layer = student.layer_parameters(1)[0].detach().flatten()  # the student's Linear(100, 100) weight
    n = min(regressor_weight.numel(), first_layer.numel())
    r = pearsonr(regressor_weight[:n].double().numpy(), first_layer[:n].double().numpy())[0]
    assert n >= 5000 and abs(r) < 0.05, (r, n)
