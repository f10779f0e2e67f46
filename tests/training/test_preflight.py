"""Before any worker starts, pretraining checks every task's manifest and listed shards (names task and file)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from atomforge.corpora import read_corpus
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.recipes.jmp import only_tasks, recipe, with_data
from atomforge.training.launch import check_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ani_shards(demo_dir, tmp_path_factory) -> Path:
    """The demo ANI-1x corpus through the real pipeline (manifest with sizes and sha256)."""
    out = tmp_path_factory.mktemp("preflight") / "ani1x"
    cutoff = recipe("debug_cpu").data.tasks["ani1x"].spec.cutoff  # the graph must serve the model's cutoff
    config = PipelineConfig.for_corpus("ani1x", str(demo_dir / "ani1x"), str(out), cutoff=cutoff, shard_size=4)
    run_pipeline(config, read_corpus("ani1x", str(demo_dir / "ani1x")), backend="local")
    return out


def config_for(url: Path):
    return with_data(only_tasks(recipe("debug_cpu"), ("ani1x",)), {"ani1x": str(url)})


def broken_copy(ani_shards: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ani1x"
    shutil.copytree(ani_shards, copy)
    return copy


def first_train_shard(root: Path) -> Path:
    import json

    manifest = json.loads((root / "manifest.json").read_text())
    return root / next(s["path"] for s in manifest["shards"] if s["split"] == "train")


def test_intact_data_passes_with_and_without_checksums(ani_shards):
    check_data(config_for(ani_shards))
    check_data(config_for(ani_shards), verify=True)


def test_truncated_manifest_names_file_and_task(ani_shards, tmp_path):
    copy = broken_copy(ani_shards, tmp_path)
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"task 'ani1x': .*ani1x/manifest\.json is not valid JSON"):
        check_data(config_for(copy))


def test_deleted_or_resized_shard_is_found_before_training(ani_shards, tmp_path):
    copy = broken_copy(ani_shards, tmp_path)
    shard = first_train_shard(copy)
    shard.unlink()
    with pytest.raises(ValueError, match=rf"task 'ani1x': .*{shard.name} \(missing\)"):
        check_data(config_for(copy))
    shard.write_bytes(b"short")
    with pytest.raises(ValueError, match=rf"{shard.name} \(5 bytes, manifest says \d+\)"):
        check_data(config_for(copy))


def test_flipped_byte_is_found_only_with_verify_data(ani_shards, tmp_path):
    copy = broken_copy(ani_shards, tmp_path)
    shard = first_train_shard(copy)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    check_data(config_for(copy))  # same size: only the checksum tells
    with pytest.raises(ValueError, match=rf"{shard.name} \(sha256 differs"):
        check_data(config_for(copy), verify=True)


@pytest.mark.slow
def test_entry_script_reports_a_missing_shard_in_one_line(ani_shards, tiny_shards, tmp_path):
    copy = broken_copy(ani_shards, tmp_path)
    first_train_shard(copy).unlink()
    data = [f"--data={task}={url}" for task, url in tiny_shards.items() if task != "ani1x"] + [f"--data=ani1x={copy}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "jmp_pretrain.py"), "--recipe", "debug_cpu", *data,
                             "--output", str(tmp_path / "run"), "--num-workers", "0"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: task 'ani1x':" in result.stderr and "(missing)" in result.stderr
    assert not (tmp_path / "run").exists()  # failed before anything was written
