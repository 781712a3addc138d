"""Sequence-level knowledge distillation: Kim and Rush (2016), "Sequence-Level Knowledge
Distillation", EMNLP 2016.

At every step the final teacher continues the prompts of the step's batch to full rows, and the
student is trained with cross-entropy on those teacher-generated rows (the task's
``batch_from_tokens``: learned after the prompt, up to each row's end token); the data rows
themselves are used only for their prompts. Kim and Rush decode the teacher with beam search
(beam 5) and train on its output; here the teacher samples at ``temperature`` (default 1: a draw
from the teacher's distribution over sequences, which is what the sequence-level KL of their
Eq. 6 averages over), and ``temperature: 0`` decodes greedily: beam search with a beam of one,
the approximation of their mode-seeking beam output kdbench offers.

Generation runs inside the loss, so the FLOP probe charges the teacher's decoding (with its
key/value cache) on every step; every step decodes exactly ``seq_len + 1 - prompt_len`` tokens
and the student scores every position after the prompt (see :mod:`kdbench.methods.sequences`),
so each step costs the same. Samples come from the run's ``sampling`` stream, one seed per step.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from kdbench.api import Method, Params, Phase
from kdbench.hookspecs import hookimpl
from kdbench.methods.sequences import new_tokens, require_causal_lm, scored_rows, step_sampler
from kdbench.models.generation import sample


class SeqKDParams(Params):
    """seq-kd's params: the teacher's sampling temperature."""

    temperature: float = Field(1.0, ge=0, description="the teacher's sampling temperature (0: greedy decoding, "
                                                      "beam search with a beam of one)")


def seq_kd_loss(ctx, params: SeqKDParams):
    """``loss(batch)``: cross-entropy of ``ctx.student`` on the final teacher's continuations of the batch's prompts."""
    task, student = require_causal_lm(ctx, "seq-kd"), ctx.student

    def loss(batch):
        rows = sample(ctx.teacher.final(), task.prompts(batch), new_tokens(task), step_sampler(ctx),
                      params.temperature)
        scored = scored_rows(task, rows)
        return scored.mean(F.cross_entropy(scored.logits(student), scored.targets, reduction="none"))

    return loss


class SeqKD(Method):
    """Sequence-level KD: cross-entropy on the final teacher's own continuations of the data's prompts."""

    name = "seq-kd"
    version = "1"
    generates = True
    Params = SeqKDParams
    description = "cross-entropy on the final teacher's generated sequences (sequence-level KD, Kim & Rush 2016)"

    def phases(self, ctx, params):
        return [Phase("seq-kd", loss=seq_kd_loss(ctx, params), teacher="final",
                      info={"temperature": params.temperature,
                            "generates": f"the teacher samples every row at temperature {params.temperature:g}"})]


@hookimpl
def kdbench_register_methods():
    return [SeqKD]
