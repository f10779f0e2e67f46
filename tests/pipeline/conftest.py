"""Fixtures for pipeline tests: small ASE-labelled corpora on disk, a SeaweedFS S3 server, configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # helper modules: tests/s3_server.py, corpus_files.py

from corpus_files import write_corpus  # noqa: E402


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """4 extxyz files (2 of slabs, 2 of molecules), 6 structures each."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def seaweed(seaweed_server):
    """The session's SeaweedFS S3 server, with one bucket `atomforge-test`."""
    return seaweed_server.make_bucket("atomforge-test")
