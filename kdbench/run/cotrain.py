"""Models trained in lockstep with the student (a :class:`kdbench.CoTrain` on a phase).

Online distillation's teacher learns while the student learns from it: the
engine hands the student's batch to a :class:`CoTrainer`, which takes one step
of the co-trained model (its own optimizer and schedule from its recipe) every
``every`` student steps, and refreshes the frozen copy the student reads.
"""

from __future__ import annotations

import torch

from kdbench.api import CoTrain
from kdbench.run.optim import make_optimizer, make_schedule


class CoTrainer:
    """Steps one :class:`CoTrain` model; ``cost`` is the measured FLOPs of one of its steps."""

    def __init__(self, spec: CoTrain, cost: int):
        self.spec, self.cost, self.steps = spec, cost, 0
        self.params = [p for p in spec.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, spec.recipe)
        self.schedule = make_schedule(self.optimizer, spec.recipe, spec.total_steps)

    def step(self, student_step: int, batch, amp) -> int:
        """One co-training step if this student step is due; returns the FLOPs it spent."""
        if student_step % self.spec.every or self.steps >= self.spec.total_steps:
            return 0
        with amp:
            loss = self.spec.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.recipe.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        if self.spec.target is not None and (self.steps % self.spec.refresh == 0
                                             or self.steps == self.spec.total_steps):
            self.spec.target.load_state_dict(self.spec.model.state_dict())
        return self.cost

    def state_dict(self) -> dict:
        return {"steps": self.steps, "model": self.spec.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "target": self.spec.target.state_dict() if self.spec.target is not None else {}}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = saved["steps"]
        self.spec.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        if self.spec.target is not None:
            self.spec.target.load_state_dict(saved["target"])


def cotrainers_for(specs: list, costs: list[int]) -> list:
    """One :class:`CoTrainer` per distinct CoTrain in ``specs`` (a phase's CoTrain or None, by
    phase), shared by the phases that name the same one; None where a phase has none."""
    made: dict[int, CoTrainer] = {}
    for spec, cost in zip(specs, costs):
        if spec is not None and id(spec) not in made:
            made[id(spec)] = CoTrainer(spec, cost)
    return [made[id(spec)] if spec is not None else None for spec in specs]


def distinct(cotrainers: list) -> list[CoTrainer]:
    """The co-trainers of a per-phase list, each once, in order (what is saved and restored)."""
    seen: dict[int, CoTrainer] = {}
    for c in cotrainers:
        if c is not None:
            seen.setdefault(id(c), c)
    return list(seen.values())
