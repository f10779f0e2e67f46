"""Model hub I/O: hub ids, downloading a repo's files and uploading a folder (huggingface_hub).

This module knows the hub, not the artifacts: which files make an export, and what a reference
means, belong to `atomforge.artifacts` (it passes the file names in). Uploads go through
`huggingface_hub.HfApi` (create_repo + upload_folder); the token is passed in by the caller
(jobs/export.py reads HF_TOKEN) or, when None, the hub client's stored login is used. The token is
never printed or written. Downloads use `snapshot_download`, so a repo is fetched once into the
hub client's cache and read from there afterwards (also offline).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

HUB_PREFIX = "hf://"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def repo_id(ref: str) -> str:
    """`hf://org/name` or `org/name` -> 'org/name'; ValueError for anything else."""
    name = ref[len(HUB_PREFIX):].strip("/") if ref.startswith(HUB_PREFIX) else ref
    if not _REPO_ID.fullmatch(name):
        raise ValueError(f"{ref!r}: expected a hub id hf://ORG/NAME or ORG/NAME")
    return name


def looks_like_repo_id(ref: str) -> bool:
    """True for `hf://...` and for a bare `org/name` (whether it also names a local path is the caller's question)."""
    return ref.startswith(HUB_PREFIX) or _REPO_ID.fullmatch(ref) is not None


def download(repo: str, files: Sequence[str]) -> Path:
    """The local snapshot folder of hub repo `repo` ('org/name') holding `files` (downloaded once, then cached)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=repo, allow_patterns=list(files)))


def upload(folder: Path, repo: str, files: Sequence[str], api, token: str | None, message: str) -> None:
    """create_repo (exist_ok) then upload_folder of exactly `files` of `folder`.

    api: an object with HfApi's `create_repo` / `upload_folder` (default `huggingface_hub.HfApi(token)`).
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo, repo_type="model", exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model", commit_message=message,
                      allow_patterns=list(files))
