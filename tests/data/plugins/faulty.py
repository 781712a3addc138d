"""Methods that misbehave on purpose, for the reliability tests."""

import torch.nn.functional as F

from kdbench import Method, Params, Phase, hookimpl, logits


class FaultParams(Params):
    after: int = 5  # calls of the loss before the fault


class Explodes(Method):
    """Raises inside its loss after ``after`` calls."""

    name, version, Params, needs_teacher = "explodes", "1", FaultParams, False

    def phases(self, ctx, params):
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


@hookimpl
def kdbench_register_methods():
    return [Explodes, GoesNaN]
