"""A two-node local Ray cluster that loses its second node in the middle of a training job (run as a script by
test_elastic_cluster.py, so the cluster's processes and Ray's global state stay out of the test session).

    python elastic_cluster.py RESULT_JSON OUTPUT KILL_STEP EVERY GROW -- JOB_ARGS...

Starts a head and one more node (`ray.cluster_utils.Cluster`, 1 CPU each: one Ray Train worker per node), runs
`jobs/jmp_pretrain.py JOB_ARGS --output OUTPUT` against it as a user's job (RAY_ADDRESS), removes the second node
(`cluster.remove_node`: its raylet and the worker on it go) once the run's metrics record step KILL_STEP on two
workers, and, with GROW=1, adds a node back once the one-worker group has saved a checkpoint of its own (a record
EVERY + 1 steps past its first), then has the coordinator look at the nodes at once. Writes the job's return code
and output and what was done when to RESULT_JSON.

Ray's autoscaling coordinator refreshes its view of the nodes every 20 s, so the first restart after the loss can
still ask for two workers and wait for them until the worker-group start timeout (60 s by default): the job runs
with RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=5, after which Ray Train retries (a start timeout is a controller
failure, retried without limit and not counted in max_failures) until its view has one node. The timeout bounds
only the wait for the placement group (one CPU per worker, free at once when the nodes are there), not the
workers' start. The same 20 s would bound the grow-back: left to its tick, the coordinator sees the returned node
up to 20 s after it came, whatever the machine's speed, while the one-worker group's remaining steps take less
time on a faster machine, so the group could finish the run before it grows. The harness asks the coordinator for
a fresh view (`get_reserved_resources(recompute=True)`, the call Ray Train makes before it pins workers to nodes),
so the grow-back takes the controller's resize check (1 s) and a restart, both of which speed up with the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 420


def last_record(output: Path) -> dict | None:
    """The newest training record of the run's metrics.jsonl (rank 0 writes and flushes one per log step)."""
    path = output / "logs" / "metrics.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    return train[-1] if train else None


def wait_for(job: subprocess.Popen, output: Path, condition, what: str) -> dict:
    """Poll the metrics until `condition(record)`; the record (RuntimeError when the job ends first or time runs out)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        record = last_record(output)
        if record is not None and condition(record):
            return record
        if job.poll() is not None:
            raise RuntimeError(f"the job ended (code {job.returncode}) before {what}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def refresh_node_view() -> None:
    """Have Ray's autoscaling coordinator (the detached actor Ray Train sizes its worker group by) re-read the nodes
    now instead of at its next 20 s tick."""
    import ray

    coordinator = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
    ray.get(coordinator.get_reserved_resources.remote("elastic-cluster-harness", recompute=True), timeout=30)


def main(result_path: str, output: str, kill_step: int, every: int, grow: bool, job_args: list[str]) -> None:
    import ray
    from ray.cluster_utils import Cluster

    # The raylets start the workers with this process's environment: atomforge from the checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "platform"), os.environ.get("PYTHONPATH")]))
    started = time.monotonic()
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)  # the harness's own driver, for the coordinator call
    events, log = [{"event": "cluster up", "at_s": time.monotonic() - started}], Path(output).parent / "job.log"
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "5"}
    with log.open("w") as sink:
        job = subprocess.Popen([sys.executable, str(REPO / "jobs" / "jmp_pretrain.py"), *job_args, "--output", output],
                               cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(job, Path(output), lambda r: True, "the first step")
            events.append({"event": "first step", "at_s": time.monotonic() - started})
            record = wait_for(job, Path(output), lambda r: r["step"] >= kill_step and r.get("world") == 2,
                              f"step {kill_step} on two workers")
            cluster.remove_node(second)
            events.append({"event": "removed", "after_step": record["step"], "at_s": time.monotonic() - started})
            if grow:
                first = wait_for(job, Path(output), lambda r: r.get("world") == 1, "a step on one worker")["step"]
                saved = first - 1 + every  # the one-worker group's first checkpoint: it must exist to grow from it
                record = wait_for(job, Path(output), lambda r: r.get("world") == 1 and r["step"] > saved + 1,
                                  f"step {saved + 2} on one worker")
                cluster.add_node(num_cpus=1)
                refresh_node_view()
                events.append({"event": "added", "after_step": record["step"], "at_s": time.monotonic() - started})
            job.wait(timeout=TIMEOUT_S)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
            ray.shutdown()
            cluster.shutdown()
    events.append({"event": "done", "at_s": time.monotonic() - started})
    Path(result_path).write_text(json.dumps({"returncode": job.returncode, "log": log.read_text(), "events": events}))


if __name__ == "__main__":
    separator = sys.argv.index("--")
    result, out, step, every_steps, grow_back = sys.argv[1:separator]
    main(result, out, int(step), int(every_steps), grow_back == "1", sys.argv[separator + 1:])
