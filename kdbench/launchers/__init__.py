"""Launchers execute the unfinished runs of a suite. Built-ins: ``local`` (and ``slurm``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..api import Params
from ..plugins import Registry
from ..progress import Reporter
from ..suite import Run


@dataclass
class LaunchContext:
    """What every launcher gets besides the runs."""

    out: Path
    registry: Registry
    device: torch.device
    reporter: Reporter
    plugin_paths: tuple = ()
    options: dict = field(default_factory=dict)


class Launcher:
    """A launcher plugin: ``launch(runs, ctx)`` executes ``runs`` and returns their summaries."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[Params]] = Params
    description: ClassVar[str] = ""

    def launch(self, runs: list[Run], ctx: LaunchContext) -> list[dict]:
        raise NotImplementedError
