"""``kdbench new-method NAME``: a method plugin package laid out like ``plugins/kdbench-fitnets``.

The package is installable as it stands (``pip install -e kdbench-NAME``), its
entry point in group ``kdbench`` makes ``kdbench list`` show the method, and its
tests pass: they run the method through the real engine with the fixtures of
:mod:`kdbench.testing`. The method it starts from is one-shot distillation with
a temperature, the smallest real method: replace its phases with your idea.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from kdbench import __version__
from kdbench.errors import UserError

NAME_PATTERN = r"[a-z][a-z0-9]*(-[a-z0-9]+)*"

PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name distillation method as a kdbench plugin"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["kdbench>=$kdbench_version"]

[project.optional-dependencies]
test = ["pytest>=8"]

# kdbench loads every entry point in this group: name = the module holding the hooks
[project.entry-points.kdbench]
$name = "$package"

[tool.setuptools]
packages = ["$package"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''')

README = Template('''\
# $dist

The `$name` knowledge-distillation method as a kdbench plugin.

```bash
pip install -e .              # kdbench finds it through the entry point in group "kdbench"
kdbench list                  # shows: method  $name  1  entry point $name ($dist 0.1.0)
python -m pytest tests -q     # runs the method through kdbench's engine on a tiny task
```

Use it in a suite next to the built-in methods:

```yaml
methods:
  - name: one-shot
  - name: $name
    params: {temperature: 2.0}
```

Parameters (`$package/method.py`, `${cls}Params`): `temperature` (> 0, default 1.0).
Bump `$cls.version` whenever a change would change results: it is part of every run id.
See kdbench's docs/writing-plugins.md for the hooks, phases, FLOP charging and testing.
''')

INIT = Template('''\
"""$dist: the $name method as a kdbench plugin (found through the entry point in group ``kdbench``)."""

from kdbench import hookimpl

from .method import $cls, ${cls}Params

__version__ = "0.1.0"
__all__ = ["$cls", "${cls}Params", "__version__"]


@hookimpl
def kdbench_register_methods():
    return [$cls]
''')

METHOD = Template('''\
"""The $name method.

Start: one-shot distillation at a temperature (the student matches the final
teacher's softened outputs). Replace ``phases`` with your idea: return one
``Phase`` per stage, each with its share of the FLOP budget, its loss and the
parameters it trains; the engine does the training, FLOP charging and evaluation.
"""

from __future__ import annotations

import torch
from pydantic import Field

from kdbench import Method, MethodContext, Params, Phase, distillation_loss, logits


class ${cls}Params(Params):
    """Validated from a suite's ``params:``; unknown keys are errors."""

    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")


class $cls(Method):
    """$name: describe the idea and cite the paper here."""

    name = "$name"
    version = "1"  # part of every run id: bump it when results would change
    Params = ${cls}Params
    description = "$name distillation"

    def phases(self, ctx: MethodContext, params: ${cls}Params) -> list[Phase]:
        teacher, student = ctx.teacher.final(), ctx.student

        def loss(batch):
            with torch.no_grad():
                target = logits(teacher, batch)
            return distillation_loss(logits(student, batch), target, batch.labels, params.temperature)

        # one phase, no share: it takes the whole budget. For several stages give all
        # but the last a share (fraction of the budget) or a number of steps.
        return [Phase("distil", loss=loss, teacher="final")]
''')

TESTS = Template('''\
"""The $name method through kdbench's real engine, with the helpers and fixtures of kdbench's
pytest plugin (``check_method``, ``run_method``, ``tiny_budget``)."""

import importlib.metadata

import pytest
from kdbench.plugins import load_plugins
from kdbench.testing import check_method

from $package import $cls


def test_registered_through_its_entry_point():
    try:
        importlib.metadata.distribution("$dist")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("$dist is not installed (pip install -e .)")
    info = load_plugins().methods["$name"]
    assert info.cls is $cls and info.source.startswith("entry point $name")


def test_passes_the_checks_every_method_must_pass():
    # params validate and bad ones are rejected; on an MLP and an encoder task every phase's loss has a
    # gradient and measured FLOPs; a run fits its budget; one seed gives one curve. List your own bad values:
    check_method($cls, bad_params=[{"temperature": 0}])


def test_learns_from_the_teacher(run_method, tiny_budget):
    result = run_method($cls, budget_flops=tiny_budget)
    assert result.status == "finished" and result.flops <= tiny_budget
    assert result.metric() >= 0.9  # the tiny task's teacher is perfect
''')


def package_names(name: str) -> dict[str, str]:
    """Distribution, package and class names derived from a method name like ``my-kd``."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"new-method: NAME {name!r} is not a valid method name; use lower-case letters, digits and "
                        f"single dashes, starting with a letter (e.g. my-kd)")
    return {
        "name": name,
        "dist": f"kdbench-{name}",
        "package": "kdbench_" + name.replace("-", "_"),
        "cls": "".join(part.capitalize() for part in name.split("-")),
    }


def new_method_package(name: str, parent: Path, installed_methods: tuple[str, ...] = ()) -> Path:
    """Write ``parent/kdbench-NAME/`` (pyproject, README, package, tests); return its path.

    ``installed_methods`` are names already taken: a plugin reusing one would be
    refused at load time, so it is refused here.
    """
    names = package_names(name)
    if name in installed_methods:
        raise UserError(f"new-method: a method named {name!r} is already installed (see kdbench list); "
                        f"pick another name")
    root = Path(parent) / names["dist"]
    if root.exists():
        raise UserError(f"new-method: {root} already exists; remove it or pick another NAME or --output")
    files = {
        "pyproject.toml": PYPROJECT, "README.md": README,
        f"{names['package']}/__init__.py": INIT, f"{names['package']}/method.py": METHOD,
        f"tests/test_{names['package']}.py": TESTS,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(names, kdbench_version=__version__))
    return root
