"""kdbench's optimizers are torch's, minus the torch._dynamo import torch's wrappers make on the
first step (1-2.5 s of every `kdbench run` and of every --jobs worker)."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_suite
from kdbench import Recipe
from kdbench.run.optim import make_optimizer

TORCH_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def train(optimizer_of, steps: int = 6):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    optimizer = optimizer_of(list(model.parameters()))
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 7, generator=data)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()], optimizer.state_dict()


@pytest.mark.parametrize("name", sorted(TORCH_CLASSES))
def test_updates_are_torch_updates_bit_for_bit(name):
    recipe = Recipe(optimizer=name, lr=0.01, momentum=0.9 if name == "sgd" else 0.0, weight_decay=0.01)
    ours, ours_state = train(lambda params: make_optimizer(params, recipe))
    kwargs = {"momentum": 0.9} if name == "sgd" else {"betas": recipe.betas}
    theirs, theirs_state = train(lambda params: TORCH_CLASSES[name](
        params, lr=0.01, weight_decay=0.01, **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert ours_state["param_groups"][0]["lr"] == theirs_state["param_groups"][0]["lr"]
    for key, value in theirs_state["state"][0].items():
        assert torch.equal(ours_state["state"][0][key], value), key


def test_a_whole_run_never_imports_dynamo(tmp_path):
    """A suite end to end (FLOP probe, thread choice, teacher, students, leaderboard, figures) in
    a fresh interpreter, then an all-done rerun: torch._dynamo is never loaded (it was before).
    In-process (``-j 1``): without it the runs may go to worker processes, on the cores free."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(tiny_suite("  - name: labels\n  - name: one-shot"))
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from kdbench.cli import app\n"
        "for _ in range(2):\n"
        f"    r = CliRunner().invoke(app, ['run', {str(suite)!r}, '-o', {str(tmp_path / 'out')!r}, '-q', '-j', '1'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"
