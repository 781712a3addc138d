"""Plugins that misbehave on purpose, for the reliability tests. Every fault fires at a given
step (or loss call), never after a delay, and the one-shot faults fire only while their
``flag`` file exists (they delete it as they fire), so a second run of the same suite is clean."""

import os
import signal
import sys
from pathlib import Path
from typing import Literal

import torch.nn.functional as F

from kdbench import Method, Params, Phase, hookimpl, logits
from kdbench.methods.progressive import Progressive, ProgressiveParams
from kdbench.tasks.parity import ParityInstance, ParityMLP, ParityParams


class FaultParams(Params):
    after: int = 5  # calls of the loss before the fault
    in_phases: bool = False  # raise from phases() instead of from the loss


class FlagParams(Params):
    flag: str = ""  # the fault fires only while this file exists
    at: int = 10  # the student step (0-based) during which it fires
    signal: Literal["SIGKILL", "SIGINT", "SIGTERM"] = "SIGKILL"
    target: Literal["self", "parent"] = "self"


def claim(flag: str) -> bool:
    """True once: whoever deletes the flag file fires the fault (two workers may race for it)."""
    try:
        Path(flag).unlink()
    except (FileNotFoundError, IsADirectoryError):
        return False
    return True


def send_signal(params) -> None:
    pid = os.getpid() if params.target == "self" else os.getppid()
    os.kill(pid, getattr(signal, params.signal))


class Explodes(Method):
    """Raises inside its loss after ``after`` calls (or in ``phases()``)."""

    name, version, Params, needs_teacher = "explodes", "1", FaultParams, False

    def phases(self, ctx, params):
        if params.in_phases:
            raise RuntimeError("boom from the explodes method's phases()")
        calls = {"n": 0}

        def loss(batch):
            calls["n"] += 1
            if calls["n"] > params.after:
                raise RuntimeError("boom from the explodes method")
            return F.cross_entropy(logits(ctx.student, batch), batch.labels)

        return [Phase("explode", loss=loss)]


class GoesNaN(Method):
    """Its loss becomes NaN after ``after`` calls."""

    name, version, Params, needs_teacher = "goes-nan", "1", FaultParams, False

    def phases(self, ctx, params):
        calls = {"n": 0}

        def loss(batch):
            calls["n"] += 1
            value = F.cross_entropy(logits(ctx.student, batch), batch.labels)
            return value * float("nan") if calls["n"] > params.after else value

        return [Phase("nan", loss=loss)]


class Exits(Method):
    """Calls ``sys.exit(0)`` in its loss after ``after`` calls (or in ``phases()``)."""

    name, version, Params, needs_teacher = "exits", "1", FaultParams, False

    def phases(self, ctx, params):
        if params.in_phases:
            sys.exit(0)
        calls = {"n": 0}

        def loss(batch):
            calls["n"] += 1
            if calls["n"] > params.after:
                sys.exit(0)
            return F.cross_entropy(logits(ctx.student, batch), batch.labels)

        return [Phase("exit", loss=loss)]


def labels_with_fault(ctx, params, fire):
    """A labels-only phase whose loss calls ``fire()`` during student step ``params.at``."""

    def loss(batch):
        if ctx.clock.step == params.at:
            fire()
        return F.cross_entropy(logits(ctx.student, batch), batch.labels)

    return [Phase("main", loss=loss)]


class DiesHard(Method):
    """Ends its process at once (``os._exit``, as the OOM killer would) during student step ``at``."""

    name, version, Params, needs_teacher = "dies-hard", "1", FlagParams, False

    def phases(self, ctx, params):
        return labels_with_fault(ctx, params, lambda: claim(params.flag) and os._exit(9))


class SignalsParams(FlagParams):
    together: int = 1  # fire at the first step >= at when this many runs have passed step at // 2


class Signals(Method):
    """Labels only; sends ``signal`` to its own process or its parent during student step ``at``,
    or, with ``together`` > 1, at the first step after it when that many runs (of any worker)
    are training: each run leaves a ``<flag>.started-*`` file at step ``at // 2``."""

    name, version, Params, needs_teacher = "signals", "1", SignalsParams, False

    def phases(self, ctx, params):
        marker = Path(f"{params.flag}.started-{os.getpid()}-{id(ctx)}")
        flag = Path(params.flag)

        def loss(batch):
            # at half-way to `at`, only while armed: the one-step probes before training and earlier
            # runs of the suite leave no marker
            if ctx.clock.step == params.at // 2 and flag.exists():
                marker.touch()
            if (ctx.clock.step >= params.at and flag.exists()
                    and len(list(flag.parent.glob(f"{flag.name}.started-*"))) >= params.together and claim(params.flag)):
                send_signal(params)
            return F.cross_entropy(logits(ctx.student, batch), batch.labels)

        return [Phase("main", loss=loss)]


class SignalsProgressiveParams(ProgressiveParams, FlagParams):
    pass


class SignalsProgressive(Progressive):
    """Progressive distillation that sends ``signal`` during student step ``at`` (see :class:`Signals`)."""

    name, version, Params = "signals-progressive", "1", SignalsProgressiveParams

    def phases(self, ctx, params):
        phases = super().phases(ctx, params)
        for phase in phases:
            phase.loss = self._wrap(phase.loss, ctx, params)
        return phases

    @staticmethod
    def _wrap(loss, ctx, params):
        def wrapped(batch):
            if ctx.clock.step == params.at and claim(params.flag):
                send_signal(params)
            return loss(batch)

        return wrapped


class FailsWhile(Method):
    """Labels only; raises during step ``at`` while the ``flag`` file exists (it does not delete it)."""

    name, version, Params, needs_teacher = "fails-while", "1", FlagParams, False

    def phases(self, ctx, params):
        def fire():
            if Path(params.flag).exists():
                raise RuntimeError("failing while the flag file exists")

        return labels_with_fault(ctx, params, fire)


class FillsDisk(Method):
    """Labels only; during step ``at`` sets ``KDBENCH_TEST_DISK_FULL=1`` (the tests make every
    write fail with ENOSPC while it is set: the disk filled up during the run)."""

    name, version, Params, needs_teacher = "fills-disk", "1", FlagParams, False

    def phases(self, ctx, params):
        return labels_with_fault(ctx, params, lambda: claim(params.flag) and os.environ.update(
            KDBENCH_TEST_DISK_FULL="1"))


class InterruptedMidStep(Method):
    """Labels only; raises KeyboardInterrupt inside its loss during student step ``at``: a plugin that
    hung in a step and was interrupted again (a second Ctrl-C stops at once, mid-step, without saving)."""

    name, version, Params, needs_teacher = "interrupted-mid-step", "1", FlagParams, False

    def phases(self, ctx, params):
        def fire():
            if claim(params.flag):
                raise KeyboardInterrupt

        return labels_with_fault(ctx, params, fire)


class FaultyParityParams(ParityParams):
    exit_in_build: bool = False  # sys.exit(0) when the task is built
    teacher_fault: Literal["none", "raise", "exit", "kill"] = "none"  # on the teacher's fault_at-th training forward
    fault_at: int = 1
    flag: str = ""  # "kill" fires only while this file exists


class FaultyParityInstance(ParityInstance):
    def teacher_model(self):
        model = super().teacher_model()
        if self.p.teacher_fault != "none":
            calls = {"n": 0}

            def count(module, args):
                if module.training:  # training steps (and the one FLOP probe), not evaluations
                    calls["n"] += 1
                    if calls["n"] == self.p.fault_at:
                        self._fault()

            model.register_forward_pre_hook(count)
        return model

    def _fault(self):
        if self.p.teacher_fault == "raise":
            raise RuntimeError("boom from the teacher's forward")
        if self.p.teacher_fault == "exit":
            sys.exit(0)
        if claim(self.p.flag):
            os.kill(os.getpid(), signal.SIGKILL)


class FaultyParity(ParityMLP):
    """Sparse parity whose task can exit when built, or whose teacher can raise, exit or kill its
    process on its n-th training forward."""

    name, version, Params = "faulty-parity", "1", FaultyParityParams

    def build(self, params, seed, device, cache_dir=None):
        if params.exit_in_build:
            sys.exit(0)
        return FaultyParityInstance(params, seed, device)


@hookimpl
def kdbench_register_methods():
    return [Explodes, GoesNaN, Exits, DiesHard, Signals, SignalsProgressive, FailsWhile, FillsDisk,
            InterruptedMidStep]


@hookimpl
def kdbench_register_tasks():
    return [FaultyParity]
