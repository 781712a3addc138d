"""Generalized knowledge distillation (on-policy distillation): Agarwal, Vieillard, Zhou, Stanczyk,
Ramos, Geist and Bachem (2024), "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", ICLR 2024 (Algorithm 1).

The student learns from a mixture of the task's rows and its own continuations of their prompts;
the final teacher scores every row, and the loss is a token-level divergence between the teacher's
and the student's next-token distributions, averaged over the learned positions (after the prompt,
up to each row's end token):

- ``divergence: forward``: KL(teacher || student), supervised KD on those rows;
- ``reverse``: KL(student || teacher), mode-seeking;
- ``jsd``: the generalised JSD(beta) of the paper's Eq. 2 (:func:`kdbench.losses.generalised_jsd`).

The student's samples are drawn at ``temperature`` and are not differentiated through (the paper's
gradient likewise ignores the sampling distribution's dependence on the student).

Deviation from the paper, for an exact FLOP budget: Algorithm 1 uses student-generated data for a
whole batch with probability ``lam`` (else the dataset's batch). Here a fixed share,
``round(lam * batch_size)`` of each batch's rows (its first rows: rows are drawn independently), is
replaced by the student's continuations of those rows' prompts. The mixture of data and on-policy
rows is the same in expectation (exactly, when ``lam * batch_size`` is a whole number), and every
step generates the same number of tokens, so every step costs what the FLOP probe measured and the
budget stays exact. The models score every position after the prompt (see
:mod:`kdbench.methods.sequences`), so a step costs the same whatever the rows' lengths.

``lam = 0`` with ``divergence: forward`` is one-shot distillation at temperature 1 on the data rows
(learning the positions after the prompt); ``lam = 1`` is fully on-policy.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.api import Method, Params, Phase
from kdbench.hookspecs import hookimpl
from kdbench.losses import generalised_jsd
from kdbench.methods.sequences import new_tokens, require_causal_lm, scored_rows, step_sampler
from kdbench.models.generation import sample


class GKDParams(Params):
    """gkd's params: the on-policy share, the divergence, the JSD's beta and the student's sampling temperature."""

    lam: float = Field(0.5, ge=0, le=1, description="share of each batch's rows replaced by the student's own "
                                                    "continuations of their prompts (round(lam * batch_size) rows; "
                                                    "the paper's probability lambda of on-policy data)")
    divergence: Literal["forward", "reverse", "jsd"] = Field(
        "forward", description="token-level divergence: forward KL(teacher || student), reverse KL(student || "
                               "teacher), or jsd, the generalised JSD(beta)")
    beta: float = Field(0.5, gt=0, lt=1, description="JSD(beta)'s weight of the teacher in the mixture M = beta P + "
                                                     "(1 - beta) Q (divergence: jsd only; 0.5: Jensen-Shannon)")
    temperature: float = Field(1.0, ge=0, description="the student's sampling temperature (0: greedy)")


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, divergence: str,
                     beta: float = 0.5) -> torch.Tensor:
    """The divergence of every row of logits ``[positions, vocab]`` (one value per position)."""
    log_q, log_p = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    if divergence == "forward":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if divergence == "reverse":
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if divergence == "jsd":
        return generalised_jsd(student_logits, teacher_logits, beta, reduction="none")
    raise ValueError(f"unknown divergence {divergence!r}; allowed: forward, reverse, jsd")


def gkd_loss(ctx, params: GKDParams):
    """``loss(batch)``: GKD's divergence on the batch's rows, the first ``round(lam * batch_size)`` of
    them replaced by the student's continuations of their prompts."""
    task, student = require_causal_lm(ctx, "gkd"), ctx.student

    def loss(batch):
        rows = task.tokens(batch)
        n = round(params.lam * rows.shape[0])
        if n:
            own = sample(student, task.prompts(batch)[:n], new_tokens(task), step_sampler(ctx), params.temperature)
            rows = torch.cat([own, rows[n:]], 0)
        scored = scored_rows(task, rows)
        with torch.no_grad():
            target = scored.logits(ctx.teacher.final())
        return scored.mean(token_divergence(scored.logits(student), target, params.divergence, params.beta))

    return loss


class GKD(Method):
    """On-policy distillation (GKD): a divergence to the final teacher on data rows mixed with the student's own samples."""

    name = "gkd"
    version = "1"
    generates = True
    Params = GKDParams
    description = "on-policy distillation on the student's own samples, forward/reverse KL or JSD (GKD, Agarwal et al. 2024)"

    def phases(self, ctx, params):
        what = f"the student samples {params.lam:.0%} of each batch's rows at temperature {params.temperature:g}"
        return [Phase("gkd", loss=gkd_loss(ctx, params), teacher="final", info={"generates": what})]


@hookimpl
def kdbench_register_methods():
    return [GKD]
