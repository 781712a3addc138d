"""A phase's ``until`` criterion: end the phase when its training loss stops improving."""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from kdbench.api import Clock


class Plateau:
    """True once the phase's training loss has plateaued: the mean loss of its last ``patience``
    steps is lower than the mean of the ``patience`` steps before them by at most ``tolerance``
    times the latter (a relative improvement of at most ``tolerance``).

    Decided after every step from the phase's own losses, so it needs at least ``2 * patience``
    steps of the phase. When it fires, the run's step (``clock.step``) is written into
    ``record`` (e.g. the phase's ``info``, which the run's summary shows) as ``plateau_at_step``.
    Its state (those losses, that step) is saved and restored by the engine with the run's
    (:meth:`state_dict`), so a resumed run ends the phase at the same step.
    """

    def __init__(self, patience: int, tolerance: float, record: Optional[dict] = None):
        if patience < 1 or tolerance < 0:
            raise ValueError(f"Plateau needs patience >= 1 and tolerance >= 0, got {patience}, {tolerance}")
        self.patience, self.tolerance = patience, tolerance
        self.record = record if record is not None else {}
        self.losses: deque[float] = deque(maxlen=2 * patience)

    def __call__(self, clock: Clock, loss: float) -> bool:
        self.losses.append(loss)
        if len(self.losses) < self.losses.maxlen:
            return False
        losses = list(self.losses)
        earlier = sum(losses[:self.patience]) / self.patience
        recent = sum(losses[self.patience:]) / self.patience
        if earlier - recent > self.tolerance * abs(earlier):
            return False
        self.record["plateau_at_step"] = clock.step
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "plateau_at_step": self.record.get("plateau_at_step")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = deque(state["losses"], maxlen=2 * self.patience)
        if state["plateau_at_step"] is not None:
            self.record["plateau_at_step"] = state["plateau_at_step"]
