"""A two-node local Ray cluster that loses its second node in the middle of a training job (run as a script by
test_elastic_cluster.py, so the cluster's processes and Ray's global state stay out of the test session).

    python elastic_cluster.py RESULT_JSON OUTPUT KILL_STEP EVERY GROW -- JOB_ARGS...

Starts a head and one more node (`ray.cluster_utils.Cluster`, 1 CPU each: one Ray Train worker per node), runs
`jobs/jmp_pretrain.py JOB_ARGS --output OUTPUT` against it as a user's job (RAY_ADDRESS), removes the second node
(`cluster.remove_node`: its raylet and the worker on it go) once the run's metrics record step KILL_STEP on two
workers, and, with GROW=1, adds a node back once the one-worker group has saved a checkpoint of its own (a record
EVERY + 1 steps past its first), then has the coordinator look at the nodes at once. Writes the job's return code
and output and what was done when to RESULT_JSON.

Ray's autoscaling coordinator refreshes its view of the nodes every 20 s, so a restart after the loss can ask for two
workers and wait for them until the worker-group start timeout (60 s by default): the job runs with
RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=2, after which Ray Train retries (a start timeout is a controller failure,
retried without limit and not counted in max_failures) with the coordinator's newer view. The timeout bounds only the
wait for the placement group (one CPU per worker): ready at once on the nodes there from the start, in up to 1.1 s on
the added node (load 3-6). A start that times out anyway is retried, so a slower machine costs time, not the test: a
run with 0.3 s timed out 134 starts (the first group's, the shrink's and the grow-back's) and passed.
Left to its tick, the coordinator kept answering "two workers" for up to 20 s after the loss (two or three timed-out
starts per run); the harness has it re-read the nodes (`get_reserved_resources(recompute=True)`, the call Ray Train makes
before it pins workers to nodes) once the control store lists the removed node as dead, so at most one start times
out: the one the controller begins at once from the answer its scaling policy caches for 1 s. The shrink itself is
Ray's: a worker's health check fails, the group is torn down and restarted on the workers that fit. The same 20 s
would bound the grow-back, so the harness refreshes the view after adding the node too; the grow-back then waits
for the controller's next resize check (`scaling.resize_interval_s=1`) and shuts the one-worker group down before
it starts the larger one.

The controller polls the workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default) and takes one reported
result per poll from each worker's one-slot queue, so a checkpoint reported while the previous one is still queued
waits for the next poll: a run reports at most one checkpoint per poll interval (writing and copying one takes tens
of milliseconds here). With the default, the test's checkpoints every 4 steps (~0.05 s a step) cost ~1.5 s each and
its last 60 steps took 28 s; the job runs with 0.5 s (~0.25 s per checkpoint, 6-8 s for those steps), which also
bounds how long the controller takes to notice the lost worker and the end of the run.

That pace is also the clock of the race the test must not lose: once the node is back, the one-worker group must
still be training when the controller decides to grow (otherwise it finishes the run on one worker). While 4 steps
take less than the 0.5 s poll of compute, the one-worker group trains about 8 steps a second on any machine, so a
faster machine does not shorten its remaining steps while adding the node and the resize check take no longer; a
machine slower than that trains compute-bound and slower, together with the node's start. Measured in 11 runs on the
loaded 2-core machine (load 3-6): the node was added at step 10-16 and the one-worker group was shut down to grow
2-20 steps later (the larger group restarted from the checkpoint at step 12-32). The test runs 96 steps (it ran 80,
which left 45 steps, ~2x that window at worst), so 61 or more steps (~7.5 s) are left: 3x the window or more.
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


def wait_until_dead(node_id: str) -> None:
    """Wait until the cluster's control store lists the node as dead (what the coordinator reads)."""
    import ray

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"node {node_id} still alive 60 s after its removal")


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
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "2",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
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
            wait_until_dead(second.node_id)
            refresh_node_view()
            first = wait_for(job, Path(output), lambda r: r.get("world") == 1, "a step on one worker")["step"]
            events.append({"event": "shrunk", "step_seen": first, "at_s": time.monotonic() - started})
            if grow:
                saved = first - 1 + every  # the one-worker group's first checkpoint: it must exist to grow from it
                record = wait_for(job, Path(output), lambda r: r.get("world") == 1 and r["step"] > saved + 1,
                                  f"step {saved + 2} on one worker")
                cluster.add_node(num_cpus=1)
                refresh_node_view()
                events.append({"event": "added", "after_step": record["step"], "at_s": time.monotonic() - started})
                try:
                    record = wait_for(job, Path(output), lambda r: r.get("world") == 2, "a step on two workers again")
                    events.append({"event": "grown", "step_seen": record["step"], "at_s": time.monotonic() - started})
                except RuntimeError as error:  # the test reads the run's records and says what went wrong
                    events.append({"event": "not grown", "why": str(error), "at_s": time.monotonic() - started})
            job.wait(timeout=TIMEOUT_S)
            events.append({"event": "job exited", "at_s": time.monotonic() - started})
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
