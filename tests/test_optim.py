"""kdbench's optimizers are torch's, minus the torch._dynamo import torch's wrappers make on the
first step (1-2.5 s of every `kdbench run` and of every --jobs worker); their update is torch's
fused kernel, or with KDBENCH_OPTIMIZER_KERNEL=foreach kdbench <= 0.4's, bit for bit."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_suite
from kdbench import Recipe
from kdbench.errors import UserError
from kdbench.run.optim import KERNEL_VARIABLE, make_optimizer, optimizer_kernel

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


def recipe_for(name: str) -> Recipe:
    return Recipe(optimizer=name, lr=0.01, momentum=0.9 if name == "sgd" else 0.0, weight_decay=0.01)


def torch_optimizer(name: str, **kernel):
    """torch's own optimizer class with ``recipe_for(name)``'s settings and ``kernel`` (fused=True...)."""
    kwargs = {"momentum": 0.9} if name == "sgd" else {"betas": recipe_for(name).betas}
    return lambda params: TORCH_CLASSES[name](params, lr=0.01, weight_decay=0.01, **kwargs, **kernel)


def assert_bit_identical(ours, theirs):
    (ours, ours_state), (theirs, theirs_state) = ours, theirs
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert ours_state["param_groups"][0]["lr"] == theirs_state["param_groups"][0]["lr"]
    for key, value in theirs_state["state"][0].items():
        assert torch.equal(ours_state["state"][0][key], value), key


@pytest.mark.parametrize("name", sorted(TORCH_CLASSES))
def test_the_foreach_kernel_is_the_pre_0_5_update_bit_for_bit(name):
    """kernel="foreach" is kdbench <= 0.4's update: torch's default one, bit for bit."""
    ours = train(lambda params: make_optimizer(params, recipe_for(name), kernel="foreach"))
    assert_bit_identical(ours, train(torch_optimizer(name)))


# Fused against foreach after 6 steps of train(), measured on an Intel Xeon (AVX-512), torch 2.13 CPU:
# largest difference 3.0e-8 absolute, 1.1e-7 relative (about one float32 ulp; adamw's is the largest).
# The bound is ~5x that; a wrong update (another lr, no weight decay, a missed step) is off by > 1e-4.
FUSED_RTOL, FUSED_ATOL = 5e-7, 1e-7


@pytest.mark.parametrize("name", sorted(TORCH_CLASSES))
def test_the_fused_kernel_is_torchs_fused_update_and_close_to_foreach(name):
    fused = train(lambda params: make_optimizer(params, recipe_for(name)))
    assert_bit_identical(fused, train(torch_optimizer(name, fused=True)))  # torch's fused step, unwrapped
    foreach = train(lambda params: make_optimizer(params, recipe_for(name), kernel="foreach"))
    for a, b in zip(fused[0], foreach[0]):
        torch.testing.assert_close(a, b, rtol=FUSED_RTOL, atol=FUSED_ATOL)


@pytest.mark.parametrize("name", sorted(TORCH_CLASSES))
def test_the_default_kernel_is_fused_and_the_variable_selects_foreach(name, monkeypatch):
    params = list(torch.nn.Linear(3, 2).parameters())
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    assert optimizer_kernel() == "fused"
    assert make_optimizer(params, recipe_for(name)).param_groups[0]["fused"]
    monkeypatch.setenv(KERNEL_VARIABLE, "foreach")
    assert optimizer_kernel() == "foreach"
    assert not make_optimizer(params, recipe_for(name)).param_groups[0]["fused"]
    assert make_optimizer(params, recipe_for(name), kernel="fused").param_groups[0]["fused"]  # the keyword wins
    ours = train(lambda params: make_optimizer(params, recipe_for(name)))
    assert_bit_identical(ours, train(torch_optimizer(name)))


def test_kernels_fall_back_to_foreach_where_torch_has_no_fused_one(monkeypatch):
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    assert optimizer_kernel("meta") == "foreach"
    assert optimizer_kernel("cpu", torch.int64) == "foreach"
    assert optimizer_kernel("cpu", torch.float64) == "fused"
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2, device="meta"))], recipe_for("adam"))
    assert optimizer.param_groups[0]["foreach"] and not optimizer.param_groups[0]["fused"]


def test_unknown_kernels_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="kernel='fast'"):
        make_optimizer(list(torch.nn.Linear(3, 2).parameters()), recipe_for("adam"), kernel="fast")
    monkeypatch.setenv(KERNEL_VARIABLE, "Fused")
    with pytest.raises(UserError, match="KDBENCH_OPTIMIZER_KERNEL='Fused'"):
        optimizer_kernel()


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
