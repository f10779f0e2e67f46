"""jobs/jmp_pretrain.py's command line: frozen flags, clear errors, --data naming the task set. These call the script's
`main` in this process (the flags and messages are the same); the script as a process, exit code 2 and one error
line included, is test_preflight.py's missing-shard run, and its real 2-worker gloo run, elastic on a two-node
cluster that loses a node, is test_elastic_cluster.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "jobs" / "jmp_pretrain.py"
ALLOWED_FLAGS = {"-h", "--help", "--recipe", "--set", "--data", "--output", "--resume", "--num-workers",
                 "--verify-data", "--debug"}


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("jmp_pretrain_job", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_flags_are_frozen(job, capsys):
    with pytest.raises(SystemExit) as exit_info:
        job.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    words = help_text.split()[2:]  # after "usage: PROG": PROG is argv[0], which can itself start with "-" ("-c" under python -c)
    flags = {word.rstrip(",").split("=")[0] for word in words if word.startswith("-")}
    assert flags == ALLOWED_FLAGS, f"CLI flags changed: {sorted(flags ^ ALLOWED_FLAGS)}; update docs/training.md"


def test_bad_override_is_a_clear_error(job, capsys):
    assert job.main(["--recipe", "debug_cpu", "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "OptimConfig has no field 'lrr'" in err and "Traceback" not in err


def test_data_names_the_task_set(job):
    """--data for three of debug_cpu's four tasks trains those three (the fourth's default path is not read);
    without --data the recipe's tasks stay."""
    urls = {"oc20": "/data/oc20", "ani1x": "/data/ani1x", "transition1x": "/data/t1x"}
    config = job.build_config(job.parse_args(["--recipe", "debug_cpu", *[f"--data={t}={u}" for t, u in urls.items()]]))
    assert list(config.data.tasks) == ["oc20", "ani1x", "transition1x"]
    assert {t: d.url for t, d in config.data.tasks.items()} == urls
    assert list(job.build_config(job.parse_args(["--recipe", "debug_cpu"])).data.tasks) == [
        "oc20", "oc22", "ani1x", "transition1x"]
