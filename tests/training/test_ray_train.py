"""The Ray Train layer: a real 2-worker gloo TorchTrainer that loses a worker mid-run (SIGKILL, a fault-injection
hook) and recovers from the last checkpoint through Ray Train's FailureConfig."""

from __future__ import annotations

import json
import sys

import pytest
from atomforge.artifacts.checkpoint import read_state
from atomforge.training.launch import train

from .faults import FailOnce
from .helpers import tiny_config


@pytest.mark.slow
@pytest.mark.ray
def test_two_gloo_workers_survive_a_killed_worker(ray_cluster, tiny_shards, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[FailOnce.__module__])  # tests/ is not on the workers' path
    output = tmp_path / "run"
    config = tiny_config(tiny_shards, output, "scaling.num_workers=2", "scaling.max_failures=1", "log_every=2",
                         "val_every=8")
    result = train(config, hooks=[FailOnce(step=6, rank=1, output=str(output), mode="kill")])
    assert result.metrics["step"] == 8
    assert (output / "fault_injected_at_6").exists()
    state = read_state(output / "checkpoint_00000008")
    assert state["step"] == 8 and state["world_size"] == 2 and len(state["mixers"]) == 2
    records = [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [2, 4, 6, 6, 8]  # steps 5-6 redone after the restart from step 4
    assert all(r["loss"] == r["loss"] for r in records if r["kind"] == "train")  # finite, not NaN
    assert {"val/oc20/energy_mae", "val/ani1x/force_mae", "val/oc20/loss"} <= set(records[-1])
    assert json.loads((output / "config.json").read_text())["name"] == "debug_cpu"
