"""The ``mlflow`` logger: one MLflow run per kdbench run, in one experiment per suite.

By default the tracking store is a file store inside the results folder
(``OUT/mlruns``; MLflow 3 keeps file stores behind ``MLFLOW_ALLOW_FILE_STORE``,
which kdbench sets for it); ``tracking_uri`` names another (``sqlite:///...``,
``http://server:5000``). The run's config is logged as params (flattened:
``task_params.n``), every curve point as metrics with the student step (the
task's metrics, ``train_loss``, ``flops`` and ``samples``: MLflow's charts can
put ``flops`` on the x axis), the phase as the tag ``kdbench.phase`` and every
phase's first step and FLOPs as the tag ``kdbench.phases`` (JSON), and at
the end the final metrics and the summary's steps, FLOPs and wall time
(``final/...``, ``summary/...``), the tag ``kdbench.status`` and the run's
status. A resumed kdbench run continues its MLflow run (found by the tags
``kdbench.run_id`` and ``kdbench.out``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from pydantic import Field

from kdbench.api import Params
from kdbench.hookspecs import hookimpl
from kdbench.loggers import LoggedRun, Logger, LogPoint, final_metrics

MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000  # MLflow's longest param value
MAX_TAG_LENGTH = 8000  # MLflow's longest tag value
STATUS = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class MLflowParams(Params):
    """Options of the ``mlflow`` logger."""

    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (default: a file store in "
                                                          "OUT/mlruns)")
    experiment: Optional[str] = Field(None, description="experiment name (default: the suite's name)")


class MLflowLogger(Logger):
    """Logs each run as an MLflow run: params, metrics by step (with FLOPs), summary."""

    name = "mlflow"
    version = "1"
    Params = MLflowParams
    description = "MLflow runs (default: a file store in OUT/mlruns): params, metrics by step and FLOPs"
    requires = ("mlflow",)
    install = 'pip install "kdbench[mlflow]" (or pip install mlflow-skinny)'

    def start(self, run: LoggedRun) -> None:
        uri = self.params.tracking_uri or (Path(run.out).resolve() / "mlruns").as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # optional dependency: mlflow-skinny (extra `mlflow`)
        from mlflow.tracking import MlflowClient

        self.client, self.phase, self.phases = MlflowClient(tracking_uri=uri), None, []
        experiment = self._experiment(self.params.experiment or run.suite)
        tags = {"kdbench.run_id": run.run_id, "kdbench.out": str(Path(run.out).resolve())}
        found = [r for r in self.client.search_runs([experiment], f"tags.`kdbench.run_id` = '{run.run_id}'")
                 if r.data.tags.get("kdbench.out") == tags["kdbench.out"]]
        if found:  # a resumed (or retried) run of this results folder: the same MLflow run
            self.run_id, logged = found[0].info.run_id, found[0].data.params
            self.phases = json.loads(found[0].data.tags.get("kdbench.phases", "[]"))
            self.phase = self.phases[-1]["phase"] if self.phases else None
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            c = run.config
            tags.update({"kdbench.suite": run.suite, "kdbench.task": c["task_label"],
                         "kdbench.method": c["method_label"], "kdbench.seed": str(c["seed"])})
            self.run_id, logged = self.client.create_run(experiment, run_name=run.name, tags=tags).info.run_id, {}
        self._log_params({k: v for k, v in run.flat_params().items() if k not in logged})

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if needed (by this process or a concurrent one)."""
        # optional dependency: mlflow-skinny (extra `mlflow`)
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another worker created it in between
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_params(self, params: dict) -> None:
        # optional dependency: mlflow-skinny (extra `mlflow`)
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_PER_CALL])

    def _log_metrics(self, values: dict, step: int) -> None:
        # optional dependency: mlflow-skinny (extra `mlflow`)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def log_point(self, point: LogPoint) -> None:
        self._log_metrics({**point.metrics, "flops": point.flops, "samples": point.samples,
                           **({"teacher_flops": point.teacher_flops} if point.teacher_flops else {})}, point.step)
        if point.phase != self.phase:
            self.client.set_tag(self.run_id, "kdbench.phase", point.phase)
            self.phases.append({"step": point.step, "flops": point.flops, "phase": point.phase})
            text = json.dumps(self.phases, separators=(",", ":"))
            if len(text) <= MAX_TAG_LENGTH:  # else the tag keeps the phases that fit
                self.client.set_tag(self.run_id, "kdbench.phases", text)
            self.phase = point.phase

    def finish(self, summary: dict) -> None:
        status = str(summary.get("status"))
        if status != "interrupted":
            self._log_metrics(final_metrics(summary), int(summary.get("steps") or 0))
            self.client.set_tag(self.run_id, "kdbench.status", status)
            if summary.get("error"):
                self.client.set_tag(self.run_id, "kdbench.error", str(summary["error"])[:5000])
        self.client.set_terminated(self.run_id, STATUS.get(status, "FINISHED"))


@hookimpl
def kdbench_register_loggers():
    return [MLflowLogger]
