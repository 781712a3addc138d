"""Methods whose phases are wrong in ways only building them shows (validation must catch them)."""

import torch
import torch.nn.functional as F

from kdbench import Method, Phase, hookimpl, logits


class NoGrad(Method):
    """Its loss is computed under torch.no_grad(): training it would change nothing."""

    name, version, needs_teacher = "nograd", "1", False

    def phases(self, ctx, params):
        def loss(batch):
            with torch.no_grad():
                return F.cross_entropy(logits(ctx.student, batch), batch.labels)

        return [Phase("frozen", loss=loss)]


class PhasesRaise(Method):
    """A bug in phases(): it raises before any phase exists."""

    name, version, needs_teacher = "phases-raise", "1", False

    def phases(self, ctx, params):
        return [Phase("main", loss=None, shares=0.5)]  # a typo: Phase has no field "shares" (TypeError)


class NoPhases(Method):
    """phases() returns an empty list: nothing to train (it was a traceback: min() of an empty sequence)."""

    name, version, needs_teacher = "no-phases", "1", False

    def phases(self, ctx, params):
        return []


@hookimpl
def kdbench_register_methods():
    return [NoGrad, PhasesRaise, NoPhases]
