"""User errors in every entry script: one readable line and exit code 2, the traceback only with --debug."""

from __future__ import annotations

import errno
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from atomforge.cli import describe, user_error
from atomforge.storage import is_transient, retry

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["pipelines/preprocess.py", "pipelines/downstream.py", "jobs/jmp_pretrain.py", "jobs/finetune.py", "jobs/export.py",
           "jobs/make_demo_corpora.py", "jobs/demo.py"]


def load(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem + "_cli", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def preprocess():
    return load("pipelines/preprocess.py")


def run(module, capsys, *argv: str) -> tuple[int, str]:
    code = module.main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_entry_script_has_debug_and_runs_through_the_cli_guard(script):
    source = (REPO / script).read_text()
    assert "run_main(_main, argv)" in source and "add_debug_flag(" in source


def test_preprocess_user_errors_are_one_line(preprocess, capsys, demo_dir, tmp_path):
    base = ("--corpus", "ani1x", "--backend", "local", "--no-progress")
    assert_one_line_error(*run(preprocess, capsys, *base, "--input", str(tmp_path / "absent"), "--output",
                               str(tmp_path / "o1")), "absent: no such file or folder")
    assert_one_line_error(*run(preprocess, capsys, *base, "--input", str(demo_dir / "ani1x"), "--output",
                               str(tmp_path / "o2"), "--cutoff", "-1"), "cutoff must be > 0")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(*run(preprocess, capsys, *base, "--input", str(demo_dir / "ani1x"), "--output",
                               str(blocker / "out")), "Not a directory")
    truncated = tmp_path / "truncated" / "ani1x.h5"
    truncated.parent.mkdir()
    data = (demo_dir / "ani1x" / "ani1x-demo.h5").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*run(preprocess, capsys, *base, "--input", str(truncated.parent), "--output",
                               str(tmp_path / "o3")), "no structure to publish", "unreadable_file 1",
                          "not a readable HDF5 file", "--allow-empty")
    with pytest.raises(ValueError, match="cutoff"):  # --debug: the exception itself, with its traceback
        preprocess.main([*base, "--input", str(demo_dir / "ani1x"), "--output", str(tmp_path / "o4"),
                         "--cutoff", "-1", "--debug"])


def test_empty_input_needs_allow_empty(preprocess, capsys, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.extxyz").write_text("")
    args = ("--corpus", "ase", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--backend", "local", "--no-progress")
    assert_one_line_error(*run(preprocess, capsys, *args), "no structure to publish", "--allow-empty")
    assert preprocess.main([*args, "--allow-empty"]) == 0


def test_pickle_refusal_names_a_flag_that_exists(preprocess, capsys, demo_dir, tmp_path):
    import lmdb
    import torch
    from atomforge.corpora import read_corpus
    from torch_geometric.data import Data

    (tmp_path / "in").mkdir()
    env = lmdb.open(str(tmp_path / "in" / "data.lmdb"), subdir=False, map_size=1 << 24, lock=False)
    with env.begin(write=True) as txn:
        for index, s in enumerate(list(read_corpus("oc20", str(demo_dir / "oc20")))[:3]):
            data = Data(pos=torch.tensor(s.positions), cell=torch.tensor(s.cell[None]), y=s.energy, sid=index, fid=0,
                        atomic_numbers=torch.tensor(s.atomic_numbers, dtype=torch.float32),
                        force=torch.tensor(s.forces), tags=torch.tensor(s.tags), fixed=torch.tensor(s.fixed))
            txn.put(str(index).encode(), pickle.dumps(data))
    env.close()
    args = ("--corpus", "oc20", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--backend",
            "local", "--no-progress", "--cutoff", "4")
    code, err = run(preprocess, capsys, *args)
    assert_one_line_error(code, err, "pickled", "--trust-pickle")
    assert vars(preprocess.parse_args(["--corpus", "oc20", "--input", "i", "--output", "o", "--trust-pickle"]))[
        "trust_pickle"] is True  # the flag the message names exists
    assert preprocess.main([*args, "--trust-pickle"]) == 0


def test_finished_unchanged_rerun_starts_no_ray(preprocess, capsys, demo_dir, tmp_path, monkeypatch):
    args = ["--corpus", "ani1x", "--input", str(demo_dir / "ani1x"), "--output", str(tmp_path / "out"),
            "--no-progress", "--cutoff", "4"]
    assert preprocess.main([*args, "--backend", "local"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(preprocess, "init_ray", lambda num_cpus: pytest.fail("Ray started for a finished output"))
    assert preprocess.main(args) == 0  # the default backend is ray: the check comes first
    assert '"written": ' in capsys.readouterr().out


def test_a_user_error_as_a_user_sees_it(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "pipelines" / "preprocess.py"), "--corpus", "oc20",
                             "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "nowhere: no such file or folder")
    assert "--debug" in result.stderr


def test_permanent_storage_errors_are_not_retried():
    calls = []

    def read_only():
        calls.append(1)
        raise OSError(errno.EROFS, "Read-only file system", "/data/out/manifest.json")

    with pytest.raises(OSError):
        retry(read_only, "write", base_delay=0.0)
    assert len(calls) == 1
    for code in (errno.EROFS, errno.EACCES, errno.ENOENT, errno.ENOSPC):
        assert not is_transient(OSError(code, "x"))
    assert is_transient(ConnectionResetError(errno.ECONNRESET, "reset"))
    message = describe(user_error(OSError(errno.EROFS, "Read-only file system", "/data/out")))
    assert "/data/out" in message and "read-only" in message and "writable --output" in message


def test_bugs_keep_their_traceback_and_wrapped_user_errors_are_unwrapped():
    assert user_error(RuntimeError("counts do not reconcile")) is None
    wrapped = RuntimeError("ray task failed")
    wrapped.__cause__ = ValueError("bad value")
    assert str(user_error(wrapped)) == "bad value"


@pytest.mark.ray
def test_user_errors_in_ray_workers_reach_the_driver_as_themselves(ray_cluster, demo_dir, tmp_path):
    from atomforge.corpora import read_corpus
    from atomforge.pipeline import PipelineConfig, run_pipeline

    class Failing:  # a reader whose files vanish after planning, like an input deleted mid-run
        def __init__(self, reader):
            self.reader, self.name, self.energy_convention = reader, reader.name, reader.energy_convention

        def work_units(self):
            return self.reader.work_units()

        def source_paths(self):
            return self.reader.source_paths()

        def read(self, unit):
            raise PermissionError(errno.EACCES, "Permission denied", unit.path)

    config = PipelineConfig.for_corpus("ani1x", str(demo_dir / "ani1x"), str(tmp_path / "out"), cutoff=4.0)
    with pytest.raises(OSError) as info:
        run_pipeline(config, Failing(read_corpus("ani1x", str(demo_dir / "ani1x"))), backend="ray")
    assert info.value.errno == errno.EACCES and "ani1x-demo.h5" in str(info.value)
    assert "no permission" in describe(user_error(info.value))
