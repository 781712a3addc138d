"""Random streams: every source of randomness of a run draws from a seed derived from the run's identity.

The data of step ``t`` of a training job is drawn from a generator seeded with
``seed_for_step(stream, t)``, so a batch never depends on what happened before
it (resumption is exact, and two methods with one seed see the same batches).
"""

from __future__ import annotations

import torch

TEACHER_STREAM = 1  # data streams: teachers and students never share samples
STUDENT_STREAM = 2


def seed_for_step(stream_seed: int, step: int) -> int:
    """A distinct, reproducible seed for every (stream, step): data never depends on history."""
    return (stream_seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


def stream_seed(role: int, seed: int) -> int:
    """The data stream of a role (teacher or student) and seed."""
    return role * 1_000_003 + seed


def init_seed(role: int, seed: int) -> int:
    """The seed a role's model initialisation is drawn from."""
    return seed_for_step(stream_seed(role, seed), 0) % (2**31)


def step_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` for the engine to reseed at every step."""
    return torch.Generator(device=device)
