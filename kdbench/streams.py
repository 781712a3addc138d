"""Random streams: every source of randomness in a run has its own named stream.

Each stream's seed is a hash of the stream's name and the seed that owns it
(the teacher seed or the run's student seed), so no two sources share random
bits: a method's random projection is not built from the bits that initialised
the student, and the masks of an MLM batch are not drawn from the bits that
chose its sequences.

====================  ============  ===================================================
stream                seeded by     what draws from it
====================  ============  ===================================================
``task``              teacher seed  the task instance: evaluation set, random parity
                                    support, any data teacher and students share
``teacher-init``      teacher seed  the teacher's initial weights
``teacher-data``      teacher seed  the teacher's training batches (one seed per step)
``student-init``      student seed  the student's initial weights
``student-data``      student seed  the student's training batches (one seed per step)
``method``            student seed  what a method draws in ``phases()``: projections,
                                    regressors (``MethodContext.generator``)
``masking``           the batch     MLM masks: a sub-stream of each batch's seed
``sampling``          varies        sequences a model generates: a method's samples
                                    (student seed, one seed per step), pcfg-lm's
                                    evaluation samples (teacher seed)
====================  ============  ===================================================

The batch of step ``t`` is drawn from a generator seeded with
``seed_for_step(stream, t)``, so it never depends on what happened before it:
resumption is exact, and every method run with one student seed sees the same
batches. :data:`VERSION` is part of every run and teacher id: changing how
streams are derived changes the ids, so cached results are never reused for
other random draws.
"""

from __future__ import annotations

import hashlib

import torch

VERSION = "2"
STREAMS = ("task", "teacher-init", "teacher-data", "student-init", "student-data", "method", "masking", "sampling")


def derive_seed(stream: str, seed: int) -> int:
    """The 63-bit seed of ``stream`` for ``seed``: a hash of both, so streams are independent."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; streams: {', '.join(STREAMS)}")
    digest = hashlib.sha256(f"kdbench-stream:{stream}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_for_step(stream_seed: int, step: int) -> int:
    """A distinct, reproducible seed for every (stream, step): data never depends on history."""
    return (stream_seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


def generator(stream: str, seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded for ``stream`` and ``seed``."""
    return torch.Generator(device=device).manual_seed(derive_seed(stream, seed))


def substream(parent: torch.Generator, stream: str) -> torch.Generator:
    """A generator for ``stream`` derived from the seed ``parent`` was last seeded with (e.g. the
    masks of a batch whose sequences ``parent`` draws), on the same device."""
    return generator(stream, parent.initial_seed(), parent.device)


def step_batch(task, generator: torch.Generator, stream_seed: int, step: int, batch_size: int):
    """The batch of ``step`` in stream ``stream_seed``: ``task.train_batch`` with ``generator`` reseeded
    by :func:`seed_for_step` (what the engine trains on, seed by seed or stacked)."""
    generator.manual_seed(seed_for_step(stream_seed, step))
    return task.train_batch(generator, batch_size)


def step_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` for the engine to reseed at every step."""
    return torch.Generator(device=device)
