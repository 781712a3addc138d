"""MiniLLM: Gu, Dong, Wei and Huang (2024), "MiniLLM: Knowledge Distillation of Large Language
Models", ICLR 2024: minimise the sequence-level reverse KL, KL(q_theta || p), by policy gradient.

Every step the student continues the prompts of the step's batch to full rows, each token drawn from
the teacher-mixed distribution ``p~ = alpha * p + (1 - alpha) * q_theta`` (Section 2.2, "teacher-mixed
sampling"; ``alpha = 0`` samples the student alone). With ``r_t = log p(y_t | y_<t) - log q_theta(y_t | y_<t)``
the per-token reward and ``w_t = q_theta(y_t | y_<t) / p~(y_t | y_<t)`` the per-token importance weight
(the paper's single-token approximation of the sequence weight), the loss, averaged over the learned
positions of the batch (after the prompt, up to each row's end token), is

    L = mean_t [ w_t * KL(q_theta(. | y_<t) || p(. | y_<t))              single-step term, exact over the vocabulary
                 - w_t * R_{t+1} * log q_theta(y_t | y_<t) ]             long-term term (REINFORCE)

with ``R_{t+1} = sum_{t' > t} r_t' / (number of learned positions after t)``, the length-normalised
future reward (0 at a row's last learned position). ``w_t``, ``r_t`` and ``R`` are constants of the
gradient (computed without gradient), so ``-grad L`` is the paper's Eq. 5 decomposition
``(grad L)_Single + (grad L)_Long``, both length-normalised, under teacher-mixed sampling.

What is simplified, and why:

- No PPO: the paper optimises with PPO (clipped ratios, several gradient epochs per batch of samples,
  a replay buffer). kdbench's engine runs one loss per step with a measured, fixed cost; here every
  step draws fresh samples and takes one policy-gradient step on them (on-policy REINFORCE, so the
  PPO ratio is 1 and clipping would never act). No value function or baseline is learned.
- No pretraining-loss term ``L_PT`` (the paper adds the LM loss on a pretraining corpus to keep the
  student's general abilities): kdbench's tasks have one distribution, which the reward already scores.
- Importance weights are not clipped (the paper's code clips ratios inside PPO only).
- Samples are drawn at temperature 1 (the distributions the loss is defined over).

Every step decodes exactly ``seq_len + 1 - prompt_len`` tokens with both models and scores every
position after the prompt (see :mod:`kdbench.methods.sequences`), so each step costs the same FLOPs
and the budget stays exact; samples come from the run's ``sampling`` stream, one seed per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.api import Method, Params, Phase
from kdbench.hookspecs import hookimpl
from kdbench.methods.sequences import ScoredRows, new_tokens, require_causal_lm, scored_rows, step_sampler
from kdbench.models.generation import sample_mixture


class MiniLLMParams(Params):
    """minillm's params: the teacher's share of the sampling mixture."""

    alpha: float = Field(0.2, ge=0, lt=1, description="teacher-mixed sampling: tokens are drawn from alpha * p_teacher "
                                                      "+ (1 - alpha) * q_student (MiniLLM: 0.2; 0: the student alone)")


def future_rewards(rewards: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """``R_{t+1}`` per position of rows ``[batch, positions]``: the mean of the rewards at the learned
    positions after ``t`` in the same row (0 where none follows)."""
    r = rewards * learned
    after = r.flip(1).cumsum(1).flip(1) - r
    count = learned.flip(1).cumsum(1).flip(1) - learned
    return after / count.clamp(min=1)


def minillm_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, scored: ScoredRows,
                  alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(single, long)``: the two terms of the loss, each averaged over the learned positions."""
    log_q, log_p = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    taken = scored.targets.unsqueeze(-1)
    log_q_y, log_p_y = log_q.gather(-1, taken).squeeze(-1), log_p.gather(-1, taken).squeeze(-1)
    with torch.no_grad():
        rewards = log_p_y - log_q_y
        if alpha > 0:
            mixed = torch.logaddexp(log_p_y + math.log(alpha), log_q_y + math.log(1 - alpha))  # log p~(y_t)
            weights = (log_q_y - mixed).exp()
        else:
            weights = torch.ones_like(log_q_y)
        rows = scored.positions.shape[0]
        future = future_rewards(rewards.view(rows, -1), scored.learned.view(rows, -1)).reshape(-1)
    single = scored.mean(weights * (log_q.exp() * (log_q - log_p)).sum(-1))
    long = scored.mean(-weights * future * log_q_y)
    return single, long


def minillm_loss(ctx, params: MiniLLMParams):
    """``loss(batch)``: MiniLLM's policy-gradient loss on the student's (teacher-mixed) continuations of the batch's prompts."""
    task, student = require_causal_lm(ctx, "minillm"), ctx.student

    def loss(batch):
        teacher = ctx.teacher.final()
        rows = sample_mixture(student, teacher, task.prompts(batch), new_tokens(task), step_sampler(ctx), params.alpha)
        scored = scored_rows(task, rows)
        with torch.no_grad():
            target = scored.logits(teacher)
        single, long = minillm_terms(scored.logits(student), target, scored, params.alpha)
        return single + long

    return loss


class MiniLLM(Method):
    """MiniLLM: reverse-KL distillation by policy gradient on the student's teacher-mixed samples."""

    name = "minillm"
    version = "1"
    generates = True
    Params = MiniLLMParams
    description = "reverse KL to the final teacher by policy gradient on the student's samples (MiniLLM, Gu et al. 2024)"

    def phases(self, ctx, params):
        what = f"every row is sampled from the student mixed with the teacher (alpha {params.alpha:g})"
        return [Phase("minillm", loss=minillm_loss(ctx, params), teacher="final", info={"generates": what})]


@hookimpl
def kdbench_register_methods():
    return [MiniLLM]
