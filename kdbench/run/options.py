"""How runs execute: device, precision and compilation, as one frozen :class:`RunOptions` built where a
command starts (``kdbench run --device --precision --compile``) and carried unchanged to the engine;
and what ``--device`` and ``--precision`` may say and resolve to."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

import torch

from kdbench.errors import UserError

DEVICES = "auto, cpu, cuda, cuda:N"
PRECISIONS = ("fp32", "bf16")


def check_device_spec(device: str) -> str:
    """``device`` if it names a device kdbench can use (auto, cpu, cuda, cuda:N), else a UserError.
    Only the spelling is checked: a scheduler's job may have a GPU the submitting machine lacks."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,4})?", device):
        raise UserError(f"--device: {device!r} is not a device; allowed: {DEVICES}")
    return device


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for a GPU this machine lacks is a UserError."""
    if check_device_spec(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise UserError(f"--device {device}: CUDA is not available here ({why}); use auto or cpu")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device}: only {count} GPU(s) here (cuda:0..cuda:{count - 1})")
    return dev


def check_precision(precision: str) -> str:
    """``precision`` if it is one kdbench knows (fp32, bf16), else a UserError."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision: {precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
    return precision


def effective_precision(precision: str, device: torch.device) -> str:
    """What the engine will actually use: bf16 autocast runs on CUDA only, fp32 elsewhere."""
    return "bf16" if check_precision(precision) == "bf16" and device.type == "cuda" else "fp32"


@dataclass(frozen=True)
class RunOptions:
    """How runs execute on the machine that trains them.

    ``device_spec`` is what the user asked for (auto, cpu, cuda, cuda:N); ``device``
    is it resolved on the machine that trains (None until then: a scheduler's job
    resolves it where it runs, see :meth:`on`). ``precision`` is what was asked for
    (fp32, bf16) and :attr:`effective_precision` what the device runs (bf16 autocast
    on CUDA only). ``compile`` torch.compiles student and teacher after their FLOPs
    are measured. ``batch_seeds`` trains the runs that differ only in their seed as one
    stacked model where they can be (:mod:`kdbench.run.seed_groups`).
    """

    device_spec: str = "auto"
    device: Optional[torch.device] = None
    precision: str = "fp32"
    compile: bool = False
    batch_seeds: bool = False

    @classmethod
    def resolve(cls, device_spec: str = "auto", precision: str = "fp32", compile: bool = False,
                here: bool = True, batch_seeds: bool = False) -> "RunOptions":
        """Options from the command line's flags, checked (a UserError names a bad one); with ``here``
        the device is resolved on this machine, else only its spelling is checked."""
        check_device_spec(device_spec)
        return cls(device_spec, resolve_device(device_spec) if here else None, check_precision(precision), compile,
                   batch_seeds)

    @classmethod
    def of(cls, options: "RunOptions | torch.device") -> "RunOptions":
        """``options`` as RunOptions: a bare ``torch.device`` means that device, fp32, not compiled."""
        return options if isinstance(options, RunOptions) else cls(str(options), torch.device(options))

    def on(self, device: torch.device) -> "RunOptions":
        """The same options on ``device`` (resolved where the run trains)."""
        return replace(self, device=device)

    @property
    def effective_precision(self) -> str:
        """What the engine uses on :attr:`device`: bf16 only where asked for and on CUDA, else fp32."""
        return effective_precision(self.precision, self.device or torch.device("cpu"))
