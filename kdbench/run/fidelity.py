"""Fidelity: how closely a student agrees with its teacher, not only how well it scores
(Stanton et al. 2021, "Does knowledge distillation really work?").

At every evaluation the engine compares the student's logits on the task's evaluation set
(:meth:`kdbench.api.TaskInstance.eval_logits`: MLM tasks give the masked positions) with the
final teacher's:

- ``agreement``: the fraction of positions where the student's top-1 class is the teacher's;
- ``teacher_kl``: the mean over positions of KL(teacher || student) =
  sum_c p_t(c) (log p_t(c) - log p_s(c)), in nats, at temperature 1.

The teacher's forwards are an evaluation cost, like the evaluation itself: they are not
counted in the run's FLOPs. Its log-probabilities are computed once and kept when they are
small (:data:`CACHE_ELEMENTS`), else recomputed at every evaluation.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.api import TaskInstance

CACHE_ELEMENTS = 1 << 24  # keep the teacher's log-probabilities up to 64 MB of fp32
METRICS = {"agreement": True, "teacher_kl": False}  # what a curve point gains -> is higher better


class Fidelity:
    """Agreement and KL(teacher || student) of a student with ``teacher`` on ``task``'s evaluation
    set. Call it with the student in eval mode under ``torch.no_grad()`` (the engine's evaluation)."""

    def __init__(self, task: TaskInstance, teacher: nn.Module):
        self.task, self.teacher = task, teacher
        self._cached: Optional[list[torch.Tensor]] = None
        self._too_big = False  # the first evaluation found them over CACHE_ELEMENTS: recompute each time

    def _teacher_log_probs(self) -> Iterator[torch.Tensor]:
        if self._cached is not None:
            return iter(self._cached)
        chunks = (F.log_softmax(t.float(), -1) for t in self.task.eval_logits(self.teacher))
        if self._too_big:
            return chunks
        chunks = list(chunks)
        if sum(c.numel() for c in chunks) <= CACHE_ELEMENTS:
            self._cached = chunks
        else:
            self._too_big = True
        return iter(chunks)

    def __call__(self, student: nn.Module) -> dict[str, float]:
        """``{"agreement": ..., "teacher_kl": ...}``, or ``{}`` if the task gives no logits."""
        student_chunks = self.task.eval_logits(student)
        if student_chunks is None:
            return {}
        agree, kl, count = 0, 0.0, 0
        for s, t in zip(student_chunks, self._teacher_log_probs(), strict=True):
            s = F.log_softmax(s.float(), -1)
            agree += int((s.argmax(-1) == t.argmax(-1)).sum())
            kl += float(F.kl_div(s, t, reduction="sum", log_target=True))
            count += s.shape[0]
        return {"agreement": agree / count, "teacher_kl": kl / count} if count else {}


def fidelity_for(task: TaskInstance, teacher: Optional[nn.Module]) -> Optional[Fidelity]:
    """A :class:`Fidelity` against ``teacher`` when there is one and the task exposes its
    evaluation logits; else None (the run's curve has no fidelity columns)."""
    if teacher is None or type(task).eval_logits is TaskInstance.eval_logits:
        return None
    return Fidelity(task, teacher)
