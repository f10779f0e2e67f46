"""Fixtures for artifact tests: the fine-tuning tests' rMD17 set, tiny pretraining checkpoint and quick recipe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("finetune_fixtures", Path(__file__).parents[1] / "finetune" / "conftest.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)
rmd17_file, rmd17_shards, pretrain_run, quick_config = (fixtures.rmd17_file, fixtures.rmd17_shards, fixtures.pretrain_run,
                                                   fixtures.quick_config)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding one checkpoint written by the current writer (two tasks, EMA != raw)."""
    run = tmp_path_factory.mktemp("artifacts-run")
    fixtures.pretrain_checkpoint(run)
    return run
