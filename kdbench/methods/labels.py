"""The no-teacher baseline: the student trains on the true labels."""

import torch.nn.functional as F

from kdbench.api import Method, Phase, logits
from kdbench.hookspecs import hookimpl


class Labels(Method):
    """Cross-entropy on true labels, no teacher: what distillation has to beat."""

    name = "labels"
    version = "1"
    description = "student trained on true labels (no teacher)"
    needs_teacher = False

    def phases(self, ctx, params):
        student = ctx.student
        return [Phase("labels", loss=lambda b: F.cross_entropy(logits(student, b), b.labels))]


@hookimpl
def kdbench_register_methods():
    return [Labels]
