"""The ``wandb`` logger: one Weights & Biases run per kdbench run, grouped by task and method.

Offline unless told otherwise: ``WANDB_MODE=offline`` (or ``disabled``) in the
environment always wins; else the ``mode`` option; else online when an API key
is configured (``WANDB_API_KEY`` or ``wandb login``'s netrc entry) and offline
when none is. Offline runs are written under ``OUT/wandb/`` (the ``dir``
option) and uploaded later with ``wandb sync OUT/wandb/offline-run-*``.

The run's config is the W&B config; every curve point is logged at the student
step with the task's metrics, ``train_loss``, ``flops``, ``samples`` and the
``phase``, and again as ``by_flops/M`` with ``flops`` as its x axis; at the end
the summary gets the final metrics, steps, FLOPs, wall time and ``status``. The
W&B run id is the kdbench run id and a hash of the results folder, so a resumed
run continues its W&B run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Literal, Optional
from urllib.parse import urlparse

from pydantic import Field

from kdbench.api import Params
from kdbench.hookspecs import hookimpl
from kdbench.loggers import LoggedRun, Logger, LogPoint, final_metrics, resolve_in
from kdbench.suite.identity import short_hash

ENV_OFFLINE = ("offline", "disabled", "dryrun")  # WANDB_MODE values that keep W&B off the network


class WandbParams(Params):
    """Options of the ``wandb`` logger."""

    project: Optional[str] = Field(None, description="W&B project (default: the suite's name)")
    entity: Optional[str] = Field(None, description="W&B entity (user or team; default: yours)")
    mode: Optional[Literal["online", "offline", "disabled"]] = Field(
        None, description="default: offline unless an API key is configured; WANDB_MODE=offline always wins")
    dir: Optional[str] = Field(None, description="folder of W&B's files (relative: inside the results folder); "
                                                 "default: the results folder (OUT/wandb/)")
    group: Optional[str] = Field(None, description="W&B group (default: TASK/METHOD, so seeds group together)")
    tags: list[str] = Field([], description="extra W&B tags (the task and method labels are always tags)")


def api_key_configured() -> bool:
    """Whether W&B has an API key here, without asking the network: ``WANDB_API_KEY`` or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(option: Optional[str]) -> str:
    """The mode a run uses: an offline ``WANDB_MODE``, else the option, else online with an API key."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ENV_OFFLINE:
        return "offline" if env == "dryrun" else env
    return option or env or ("online" if api_key_configured() else "offline")


class WandbLogger(Logger):
    """Logs each run as a W&B run: config, metrics by step and by FLOPs, summary."""

    name = "wandb"
    version = "1"
    Params = WandbParams
    description = "Weights & Biases runs (offline under OUT/wandb unless an API key is configured)"
    requires = ("wandb",)
    install = 'pip install "kdbench[wandb]" (or pip install wandb)'

    def start(self, run: LoggedRun) -> None:
        # optional dependency: wandb (extra `wandb`)
        import wandb

        c, p = run.config, self.params
        folder = resolve_in(run.out, p.dir, ".")
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=p.project or run.suite, entity=p.entity, name=run.name, group=p.group or
            f"{c['task_label']}/{c['method_label']}", tags=[c["task_label"], c["method_label"], *p.tags],
            id=f"{run.run_id}-{short_hash(str(Path(run.out).resolve()), 6)}", resume="allow", dir=str(folder),
            config=c, mode=wandb_mode(p.mode), reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True))
        self.run.define_metric("flops")
        self.run.define_metric("by_flops/*", step_metric="flops")

    def log_point(self, point: LogPoint) -> None:
        values = {**point.metrics, "flops": point.flops, "samples": point.samples, "phase": point.phase,
                  **{f"by_flops/{k}": v for k, v in point.metrics.items()}}
        if point.teacher_flops:
            values["teacher_flops"] = point.teacher_flops
        self.run.log(values, step=point.step)

    def finish(self, summary: dict) -> None:
        status = str(summary.get("status"))
        if status != "interrupted":
            self.run.summary.update({**final_metrics(summary), "status": status})
        self.run.finish(exit_code=0 if status in ("finished", "diverged") else 1)


@hookimpl
def kdbench_register_loggers():
    return [WandbLogger]
