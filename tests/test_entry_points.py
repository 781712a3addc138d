"""Plugins installed as packages: entry points in group ``kdbench``, one per hook kind.

Each test installs small fake distributions (a module plus a ``.dist-info``
folder with ``entry_points.txt``) on ``sys.path``, which is exactly what
importlib.metadata reads for a pip-installed package.
"""

import sys
import textwrap

import pytest

from kdbench.plugins import load_plugins

from conftest import kdbench, tiny_suite

MAJORITY_TASK = '''
import torch
from pydantic import Field
from kdbench import Batch, Params, Recipe, Task, TaskInstance, hookimpl
from kdbench.models import MLP


class MajorityParams(Params):
    n: int = Field(9, ge=1)
    width: int = Field(16, ge=1)


class MajorityInstance(TaskInstance):
    def __init__(self, p, seed, device):
        self.p, self.device = p, device
        g = torch.Generator().manual_seed(seed)
        self.eval_x = torch.randint(0, 2, (256, p.n), generator=g).float() * 2 - 1
        self.eval_y = (self.eval_x.sum(1) > 0).long()

    def train_batch(self, generator, batch_size):
        x = torch.randint(0, 2, (batch_size, self.p.n), generator=generator).float() * 2 - 1
        return Batch(x, (x.sum(1) > 0).long())

    @torch.no_grad()
    def evaluate(self, model):
        return {"accuracy": (model(self.eval_x).argmax(-1) == self.eval_y).float().mean().item()}

    def teacher_model(self):
        return MLP(self.p.n, 4 * self.p.width, 2)

    def student_model(self):
        return MLP(self.p.n, self.p.width, 2)


class Majority(Task):
    """Is the majority of n bits +1? A task from an installed package."""
    name = "majority"
    version = "3"
    Params = MajorityParams
    description = "majority of n +-1 bits"

    def build(self, params, seed, device, cache_dir=None):
        return MajorityInstance(params, seed, device)

    def teacher_recipe(self, params):
        return Recipe(optimizer="adam", lr=0.01, batch_size=16, steps=40)

    def student_recipe(self, params):
        return Recipe(optimizer="adam", lr=0.01, batch_size=16)


@hookimpl
def kdbench_register_tasks():
    return [Majority]
'''

RECORDING_LAUNCHER = '''
from pathlib import Path
from kdbench import hookimpl
from kdbench.launchers import Launcher
from kdbench.run.runner import execute_run


class Recording(Launcher):
    """Runs in this process, newest first, and notes each run id in OUT/launched.txt."""
    name = "recording"
    version = "2"

    def launch(self, runs, ctx):
        summaries = []
        for run in reversed(runs):
            with open(Path(ctx.out) / "launched.txt", "a") as f:
                f.write(run.run_id + "\\n")
            summaries.append(execute_run(run, ctx.registry, ctx.out, ctx.device).summary)
        return summaries


@hookimpl
def kdbench_register_launchers():
    return [Recording]
'''


def method_plugin(method_name: str) -> str:
    return textwrap.dedent(f'''
        import torch.nn.functional as F
        from kdbench import Method, Phase, hookimpl, logits

        class M(Method):
            name = "{method_name}"
            version = "5"
            needs_teacher = False

            def phases(self, ctx, params):
                s = ctx.student
                return [Phase("labels", loss=lambda b: F.cross_entropy(logits(s, b), b.labels))]

        @hookimpl
        def kdbench_register_methods():
            return [M]
    ''')


@pytest.fixture
def install(tmp_path, monkeypatch):
    """install(dist, version, entry_name, source): a fake installed package with one ``kdbench`` entry point."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules = []

    def install(dist: str, version: str, entry_name: str, source: str) -> str:
        module = f"fake_{dist.replace('-', '_')}"
        (site / f"{module}.py").write_text(source)
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[kdbench]\n{entry_name} = {module}\n")
        modules.append(module)
        return module

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def test_entry_point_plugin_shows_name_version_and_origin(install):
    install("kdbench-majority", "2.5", "majority", MAJORITY_TASK)
    info = load_plugins().tasks["majority"]
    assert (info.version, info.source) == ("3", "entry point majority (kdbench-majority 2.5)")
    out = kdbench("list").output
    assert "majority" in out and "kdbench-majority" in out


def test_task_hook_task_runs_in_a_suite(install, tmp_path, write_suite):
    """kdbench_register_tasks: a task from an installed package trains a teacher and a student."""
    install("kdbench-majority", "2.5", "majority", MAJORITY_TASK)
    suite = write_suite("name: maj\nseeds: [0]\nbudget: {flops: 2e6}\neval: {points: 2}\n"
                        "tasks: [{name: majority, params: {n: 9}}]\nmethods: [{name: labels}, {name: one-shot}]\n")
    out = tmp_path / "out"
    kdbench("run", suite, "--output", out, "--quiet")
    board = (out / "leaderboard.md").read_text()
    assert "majority" in board and "| one-shot " in board and "| labels " in board


def test_launcher_hook_launcher_executes_the_runs(install, tmp_path, write_suite):
    """kdbench_register_launchers: ``--launcher NAME`` hands the runs to an installed launcher."""
    install("kdbench-recording", "1.0", "recording", RECORDING_LAUNCHER)
    assert load_plugins().launchers["recording"].source == "entry point recording (kdbench-recording 1.0)"
    out = tmp_path / "out"
    kdbench("run", write_suite(tiny_suite("  - name: labels\n  - name: one-shot")), "--output", out,
            "--launcher", "recording", "--quiet")
    launched = (out / "launched.txt").read_text().split()
    assert len(launched) == 2 and all((out / "runs" / r / "summary.json").is_file() for r in launched)
    assert "| one-shot " in (out / "leaderboard.md").read_text()


def test_load_plugins_env_limits_entry_points(install, monkeypatch):
    install("kdbench-alpha", "1", "alpha", method_plugin("alpha-method"))
    install("kdbench-beta", "1", "beta", method_plugin("beta-method"))
    assert {"alpha-method", "beta-method"} <= set(load_plugins().methods)
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "beta")
    methods = load_plugins().methods
    assert "beta-method" in methods and "alpha-method" not in methods
    assert "one-shot" in methods  # built-ins always load
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "alpha, beta")
    assert {"alpha-method", "beta-method"} <= set(load_plugins().methods)
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "")
    assert not {"alpha-method", "beta-method"} & set(load_plugins().methods)


def test_broken_entry_point_is_reported_by_name_and_others_load(install, monkeypatch):
    install("kdbench-broken", "0.3", "broken", "import no_such_dependency_xyz\n")
    install("kdbench-alpha", "1", "alpha", method_plugin("alpha-method"))
    registry = load_plugins()
    assert "no_such_dependency_xyz" in registry.failures["broken"]
    assert "alpha-method" in registry.methods and "one-shot" in registry.methods
    result = kdbench("list")
    assert "plugin broken (entry point broken (kdbench-broken 0.3)) failed to load" in result.output
    assert "alpha-method" in result.output
    monkeypatch.setenv("KDBENCH_STRICT_PLUGINS", "1")
    result = kdbench("list", expect=2)
    assert "broken" in result.output and "no_such_dependency_xyz" in result.output


def test_entry_point_cannot_replace_a_builtin(install):
    install("kdbench-impostor", "9", "impostor", method_plugin("one-shot"))
    registry = load_plugins()
    assert registry.methods["one-shot"].source == "built-in"
    assert "already provided by built-in" in registry.failures["impostor"]


def test_fitnets_package_registers_through_its_entry_point(monkeypatch):
    pytest.importorskip("kdbench_fitnets", reason="pip install -e plugins/kdbench-fitnets")
    info = load_plugins().methods["fitnets"]
    assert info.source.startswith("entry point fitnets (kdbench-fitnets ")
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "")
    assert "fitnets" not in load_plugins().methods


def test_fitnets_runs_next_to_the_builtin_methods(tmp_path, write_suite):
    pytest.importorskip("kdbench_fitnets", reason="pip install -e plugins/kdbench-fitnets")
    methods = "  - name: labels\n  - name: one-shot\n  - name: fitnets\n    params: {hint_share: 0.3}"
    out = tmp_path / "out"
    kdbench("run", write_suite(tiny_suite(methods, flops=4e6)), "--output", out, "--quiet")
    board = (out / "leaderboard.md").read_text()
    assert all(f"| {m} " in board for m in ("labels", "one-shot", "fitnets"))


def test_misspelt_hook_in_a_package_fails_it_by_name_and_an_unknown_method_says_so(install, write_suite):
    """A ``@hookimpl`` named like no hook is refused when the package loads: ``validate`` then
    names the plugin, its distribution, the wrong hook and the right one beside the unknown method."""
    install("kdbench-typo", "0.2", "typo", method_plugin("typo-method").replace(
        "def kdbench_register_methods", "def kdbench_register_method"))
    registry = load_plugins()
    assert "typo-method" not in registry.methods
    result = kdbench("validate", write_suite(tiny_suite("  - name: typo-method")), expect=2)
    assert "methods[0].name: unknown method 'typo-method'" in result.output
    assert ("plugin typo (entry point typo (kdbench-typo 0.2)) failed to load: UnknownHook: kdbench_register_method "
            "is not a kdbench hook (did you mean kdbench_register_methods?)") in result.output
