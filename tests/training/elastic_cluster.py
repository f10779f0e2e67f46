"""A two-node local Ray cluster that loses its second node in the middle of a training job (run as a script by
test_elastic_cluster.py, so the cluster's processes and Ray's global state stay out of the test session).

    python elastic_cluster.py RESULT_JSON OUTPUT KILL_STEP GROW -- JOB_ARGS...

Starts a head and one more node (`ray.cluster_utils.Cluster`, 1 CPU each: one Ray Train worker per node), runs
`jobs/jmp_pretrain.py JOB_ARGS --output OUTPUT` against it as a user's job (RAY_ADDRESS), removes the second node
(`cluster.remove_node`: its raylet and the worker on it go) once the run's metrics record step KILL_STEP on two
workers, and, with GROW=1, adds a node back once a record says one worker trains. Writes the job's return code
and output and what was done when to RESULT_JSON.

Ray's autoscaling coordinator refreshes its view of the nodes every 20 s, so the first restart after the loss can
still ask for two workers and wait for them until the worker-group start timeout (60 s by default): the job runs
with RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=5, after which Ray Train retries (a start timeout is a controller
failure, retried without limit and not counted in max_failures) until its view has one node. The timeout bounds
only the wait for the placement group (one CPU per worker, free at once when the nodes are there), not the
workers' start.
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


def main(result_path: str, output: str, kill_step: int, grow: bool, job_args: list[str]) -> None:
    from ray.cluster_utils import Cluster

    # The raylets start the workers with this process's environment: atomforge from the checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "platform"), os.environ.get("PYTHONPATH")]))
    started = time.monotonic()
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
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
                record = wait_for(job, Path(output), lambda r: r.get("world") == 1, "a step on one worker")
                cluster.add_node(num_cpus=1)
                events.append({"event": "added", "after_step": record["step"], "at_s": time.monotonic() - started})
            job.wait(timeout=TIMEOUT_S)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
            cluster.shutdown()
    events.append({"event": "done", "at_s": time.monotonic() - started})
    Path(result_path).write_text(json.dumps({"returncode": job.returncode, "log": log.read_text(), "events": events}))


if __name__ == "__main__":
    separator = sys.argv.index("--")
    result, out, step, grow_back = sys.argv[1:separator]
    main(result, out, int(step), grow_back == "1", sys.argv[separator + 1:])
