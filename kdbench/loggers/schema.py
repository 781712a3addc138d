"""The ``loggers:`` entries of a suite file (validated against the installed loggers by
:func:`kdbench.loggers.selection.choose_loggers`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class LoggerEntry(BaseModel):
    """One logger that follows the suite's runs, and its options (validated by its ``Params``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    options: dict[str, Any] = {}
