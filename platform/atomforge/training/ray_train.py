"""The thin Ray Train layer: a TorchTrainer whose workers each build and fit one `Trainer`.

Ray Train owns what only it can: placing `scaling.num_workers` workers, the gloo / NCCL process
group (`training.distributed.TorchDistributed` wraps it), restarting a failed worker group
(`scaling.max_failures`) and persisting reported checkpoints under the run directory. Everything
else is the trainer's. A restarted group resumes from `ray.train.get_checkpoint()`, or from the
newest complete checkpoint in the run directory (a group that fails right after a report can
restart before the controller registered that checkpoint: the run directory is the truth).

Elastic runs (`scaling.min_workers`) are Ray Train V2's elastic training: `ScalingConfig(num_workers=
(min, max))`. Ray asks for max workers and starts with as many as there is room for (at least
min); when a worker or node is lost, the group (one failure of `FailureConfig.max_failures`)
restarts from the latest checkpoint on the workers that fit, and every `resize_interval_s` a
running group whose cluster has room for more is restarted larger (a resize, not a failure).
Either way the new group restores the checkpoint on its own number of ranks, and the trainer's
lanes (`training.lanes`) keep the global batch and the row sequence of the full-size run.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train.torch import TorchConfig, TorchTrainer

from atomforge.artifacts import checkpoint as ckpt
from atomforge.storage import arrow_filesystem, filesystem
from atomforge.training.build import build_trainer
from atomforge.training.checkpoints import Writer, latest_state
from atomforge.training.config import TrainConfig
from atomforge.training.distributed import TorchDistributed
from atomforge.training.hooks import Hook


class RayTrainSink:
    """Checkpoints reported to Ray Train (every rank reports; rank 0 with the folder), found again on restart."""

    def __init__(self, output: str):
        self.output = output

    def save(self, name: str, write: Writer | None, metrics: Mapping[str, float]) -> None:
        if write is None:
            ray.train.report(dict(metrics), checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp))
            ray.train.report(dict(metrics), checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)

    def latest_state(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                return ckpt.read_state(directory)
        return latest_state(self.output)


def train_worker(loop_config: dict[str, Any]) -> None:
    """`train_loop_per_worker`: {"config": TrainConfig (resolved), "hooks": [Hook, ...]}."""
    config: TrainConfig = loop_config["config"]
    # Ray Train set this worker's root logger to INFO; its per-report records ("Reporting training
    # result ...", from every rank) are not the user's to act on. Warnings still show.
    logging.getLogger().setLevel(logging.WARNING)
    device = ray.train.torch.get_device() if config.scaling.use_gpu else torch.device("cpu")
    trainer = build_trainer(config, TorchDistributed(), RayTrainSink(config.checkpoint.output),
                            loop_config.get("hooks", ()), device)
    trainer.fit()


def connect(address: str | None, platform_path: str, pythonpath: str | None = None) -> None:
    """Connect to the Ray cluster at `address` (a `ray job submit` sets RAY_ADDRESS; the image or the
    job's runtime_env provides atomforge there), or start a local Ray whose workers import atomforge
    from `platform_path` (this checkout). Nothing happens when Ray is already initialised."""
    import os

    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
        return
    path = os.pathsep.join(filter(None, [platform_path, pythonpath]))
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}})


def storage(output: str) -> tuple[str, str, object]:
    """(storage_path, run name, pyarrow filesystem) for a run directory URL (local path or s3://...)."""
    fs, root = filesystem(output)
    parent, _, name = root.rstrip("/").rpartition("/")
    if not name:
        raise ValueError(f"checkpoint.output must name a run directory, got {output!r}")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return parent or ".", name, None
    return parent, name, arrow_filesystem(fs)


def torch_trainer(config: TrainConfig, hooks: Sequence[Hook] = ()) -> TorchTrainer:
    """A TorchTrainer running `train_worker` with the config's workers (elastic min..max when
    `scaling.min_workers` is set), storage and failure policy."""
    storage_path, name, storage_fs = storage(config.checkpoint.output)
    scaling = config.scaling
    workers = (scaling.min_workers, scaling.num_workers) if scaling.elastic else scaling.num_workers
    return TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "hooks": list(hooks)},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=scaling.use_gpu, elastic_resize_monitor_interval_s=scaling.resize_interval_s,
            resources_per_worker={"CPU": scaling.cpus_per_worker} | ({"GPU": 1} if scaling.use_gpu else {}),
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.checkpoint.num_to_keep),
            # Rank 0's progress lines are the run's log. Ray Train's print patch re-logs every print
            # through the root logger as well as printing it (each line twice in the driver), and its
            # INFO records ("Reporting training result ...", "Checkpoint successfully created ...")
            # repeat every report: keep prints as prints and Ray's records to warnings and above.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def fit(config: TrainConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Run `config` on the connected Ray cluster; the last reported metrics."""
    result = torch_trainer(config, hooks).fit()
    return dict(result.metrics or {})
