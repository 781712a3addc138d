"""Test helpers for plugin authors, shipped as a pytest plugin (entry point ``pytest11``).

With kdbench installed, every pytest session gets three fixtures:

``tiny_task``
    A :class:`TinyTask`: a sparse-parity task small enough to train a teacher
    in well under a second (n=10, k=2, teacher width 64, student width 16).
``tiny_budget``
    A student FLOP budget (float) that gives that task a few hundred steps.
``run_method``
    ``run_method(method, params=None, *, task=None, budget_flops=TINY_BUDGET, seed=0, ...)``
    runs ``method`` (a registered name or a :class:`kdbench.Method` subclass that
    need not be installed) through the real engine, exactly as ``kdbench run``
    would: params validated by the suite schema, a teacher trained through the
    teacher cache (shared by the whole test session), FLOPs measured and the
    budget allotted by the runner. It returns a :class:`MethodRun` (curve,
    per-phase steps and FLOPs, the trained student).

``check_method(method, params=None, *, bad_params=None)`` (from
:mod:`kdbench.testing.conformance`) runs the checks every method must pass in one call.

The same helpers work without pytest: ``from kdbench.testing import run_method, check_method``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdbench.testing.conformance import check_method
from kdbench.testing.helpers import (TINY_BUDGET, MethodRun, TinyTask, resolve_run, run_method, tiny_encoder_task,
                                     torch_threads)

__all__ = ["TINY_BUDGET", "MethodRun", "TinyTask", "check_method", "resolve_run", "run_method", "tiny_encoder_task",
           "torch_threads", "tiny_task", "tiny_budget"]


@pytest.fixture
def tiny_task() -> TinyTask:
    """A sparse-parity task whose teacher trains in well under a second (a fresh copy per test)."""
    return TinyTask()


@pytest.fixture
def tiny_budget() -> float:
    """A student FLOP budget worth a few hundred steps on ``tiny_task``."""
    return TINY_BUDGET


@pytest.fixture(scope="session")
def _kdbench_teacher_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kdbench-teachers")


@pytest.fixture(name="run_method")
def _run_method_fixture(_kdbench_teacher_cache):
    """:func:`run_method` with teachers cached for the whole test session:
    ``def test_mine(run_method): result = run_method("mine", {"weight": 0.5})``."""

    def run(method, params=None, **kwargs) -> MethodRun:
        kwargs.setdefault("out", _kdbench_teacher_cache)
        return run_method(method, params, **kwargs)

    return run
