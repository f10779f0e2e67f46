"""Launching a run on Ray Train: the TorchTrainer, its storage, failure and scaling settings, from a TrainConfig."""

from __future__ import annotations

import json
import warnings

import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from atomforge.artifacts.checkpoint import latest_checkpoint
from atomforge.shards import open_shards
from atomforge.storage import arrow_filesystem, filesystem
from atomforge.training.config import TrainConfig, check_amp, check_cutoffs, to_jsonable
from atomforge.training.data import open_source, resolve_spec
from atomforge.training.loop import train_worker
from atomforge.training.runtime import build_objective


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


def check_output(config: TrainConfig, resume: bool) -> None:
    """Refuse to train into a run directory that already holds checkpoints unless resuming."""
    existing = latest_checkpoint(config.checkpoint.output)
    if existing and not resume:
        raise ValueError(f"{config.checkpoint.output} already holds checkpoints ({existing}); "
                         "pass --resume to continue it or choose another --output")


def write_resolved_config(config: TrainConfig) -> None:
    """`<output>/config.json`: the resolved config of the run (also inside every checkpoint)."""
    fs, root = filesystem(config.checkpoint.output)
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/config.json", json.dumps(to_jsonable(config), indent=2).encode())


def build_trainer(config: TrainConfig) -> TorchTrainer:
    """A TorchTrainer running `train_worker` with the config's workers, storage and failure policy.

    With the same output, Ray Train restores its checkpoint bookkeeping and hands the workers the
    latest checkpoint (`ray.train.get_checkpoint()`); a failed worker group restarts from it (or
    from the newest complete checkpoint in the run directory, see `loop.Worker._load_state`).
    """
    storage_path, name, storage_fs = storage(config.checkpoint.output)
    scaling = config.scaling
    return TorchTrainer(
        train_worker,
        train_loop_config={"config": config},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker} | ({"GPU": 1} if scaling.use_gpu else {}),
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.checkpoint.num_to_keep),
        ),
    )


def check_data(config: TrainConfig, verify: bool = False) -> list[str]:
    """Open every task's manifest in the driver, so a wrong URL, a graph the model cannot use, a
    supervised objective on an unlabeled corpus or a missing shard fails before any worker starts.

    Every shard a task reads must exist with its listed size (`verify`: and its sha256); errors name
    the task and the file. Returns (and emits as warnings) what the run will silently do without,
    e.g. a stress term no task feeds.
    """
    check_amp(config)
    check_cutoffs(config)
    specs = {}
    for name, task in config.data.tasks.items():
        try:
            source = open_source(name, task.url)
            shard_set = open_shards(task.url)
        except (ValueError, OSError) as error:
            raise ValueError(f"task {name!r}: {error}") from error
        if source.num_rows(config.data.train_split) == 0:
            raise ValueError(f"task {name!r}: {task.url} has no {config.data.train_split!r} rows")
        check_shards(name, task.url, shard_set, source, verify)
        specs[name] = resolve_spec(task.spec, source)
    notes = build_objective(config.objectives).check_labels(specs)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return notes


def check_shards(name: str, url: str, shard_set, source, verify: bool) -> None:
    """ValueError naming the task and up to three shards that are missing, resized or (verify) altered."""
    shards = [s for split in source.files for s in shard_set.shards(split, "parquet", name)]
    problems = shard_set.missing(shards)
    if verify and not problems:
        problems = [f"{path} (sha256 differs from the manifest)" for path in shard_set.verify(shards)]
    if problems:
        raise ValueError(f"task {name!r}: {url}: {len(problems)} listed shards unusable, e.g. "
                         f"{'; '.join(problems[:3])}: rerun the preprocessing into a fresh output")


def train(config: TrainConfig, resume: bool = False, verify_data: bool = False):
    """Run `config` to completion on the connected Ray cluster; returns Ray Train's Result.

    `verify_data`: check every shard's sha256 before starting (reads all the data once).
    """
    check_data(config, verify_data)
    check_output(config, resume)
    write_resolved_config(config)
    return build_trainer(config).fit()
