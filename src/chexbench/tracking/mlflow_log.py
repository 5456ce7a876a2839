"""MLflow: one MLflow run per cell / pretraining run, a local file store RESULTS/mlruns by default.

The file store is MLflow's original backend and the one that needs no database; recent MLflow
releases keep it only behind ``MLFLOW_ALLOW_FILE_STORE=true``, which is set here (for this
process) when the store is the default one. ``MLFLOW_TRACKING_URI`` points it elsewhere.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXPERIMENT = "chexbench"


class MlflowTracker:
    def __init__(self, results_dir: Path):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(results_dir).resolve() / "mlruns").as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)

    @contextmanager
    def run(self, name: str, kind: str, params: Mapping[str, Any], fresh: bool = True) -> Iterator[_Run]:
        tags = {
            "kind": kind,
            "chexbench.name": name,
            "config": json.dumps(dict(params), sort_keys=True, default=str)[:5000],
        }
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        status = "FAILED"
        try:
            yield _Run(self.client, run.info.run_id)
            status = "FINISHED"
        finally:
            self.client.set_terminated(run.info.run_id, status=status)

    def close(self) -> None:
        pass


class _Run:
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in scalars.items()]
        )
