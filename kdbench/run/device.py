"""Devices and precisions: what `--device` and `--precision` may say, and what they resolve to."""

from __future__ import annotations

import re

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


def effective_precision(precision: str, device: torch.device) -> str:
    """What the engine will actually use: bf16 autocast runs on CUDA only, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision: {precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
    return "bf16" if precision == "bf16" and device.type == "cuda" else "fp32"
