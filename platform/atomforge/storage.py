"""Object storage access: fsspec filesystems from URLs, retried writes/reads, and secret-free logging.

Every pipeline and loader reaches storage through `filesystem(url, storage_options)`, so local
paths, `s3://bucket/prefix` (AWS, MinIO, SeaweedFS) and any other fsspec URL behave the same.
Endpoints and credentials live only in `storage_options` (built by entry scripts from the
environment); they are never written to manifests or logs: use `redact` for anything printed.

Transient failures (connection resets, 5xx, throttling) are retried twice over: botocore retries
each HTTP request (`S3_RETRY_CONFIG`), and `retry` repeats a whole write or read with exponential
backoff, so a shard or marker is either fully written or the call raises after `attempts`.
Permanent failures (a missing path, no permission, a read-only or full filesystem) raise at once.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import fsspec

log = logging.getLogger(__name__)
T = TypeVar("T")

S3_RETRY_CONFIG = {"retries": {"max_attempts": 8, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 60}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
_PERMANENT_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                     errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EEXIST}
_SECRET_KEYS = ("key", "secret", "token", "password", "endpoint", "aws_", "credential")


def with_retry_config(storage_options: dict | None, url: str) -> dict:
    """A copy of `storage_options` with botocore request retries added for s3:// URLs."""
    options = copy.deepcopy(storage_options or {})
    if url.startswith(("s3://", "s3a://")):
        config = options.setdefault("config_kwargs", {})
        for name, value in S3_RETRY_CONFIG.items():
            config.setdefault(name, value)
    return options


def filesystem(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root path without protocol) for `url`; s3 gets retry settings added."""
    fs, root = fsspec.core.url_to_fs(url, **with_retry_config(storage_options, url))
    return fs, root.rstrip("/")


def is_transient(error: BaseException) -> bool:
    """True for errors worth retrying: connection problems, 5xx and throttling, not missing files."""
    if isinstance(error, _PERMANENT) or getattr(error, "errno", None) in _PERMANENT_ERRNOS:
        return False
    if isinstance(error, (ConnectionError, TimeoutError, OSError)):
        return True
    name = type(error).__module__ + "." + type(error).__name__
    return any(part in name for part in ("botocore", "aiohttp", "ClientError", "Throttl", "SlowDown"))


def retry(fn: Callable[[], T], what: str, attempts: int = 6, base_delay: float = 0.2, max_delay: float = 5.0) -> T:
    """Call `fn` until it succeeds, retrying transient errors with exponential backoff and jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - filtered by is_transient, re-raised otherwise
            if attempt == attempts or not is_transient(error):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("retrying %s after %s (attempt %d/%d)", what, type(error).__name__, attempt, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` (whole object), retried; parents are created on local filesystems."""

    def put() -> None:
        if not _is_object_store(fs):  # write aside, then rename: a killed writer leaves no torn file
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            partial = f"{path}.partial-{os.getpid()}"
            fs.pipe_file(partial, data)
            fs.mv(partial, path)
            return
        fs.pipe_file(path, data)  # one PUT: an object is whole or absent
        fs.invalidate_cache(path)
        if fs.size(path) != len(data):
            raise ConnectionError(f"short write of {path}")

    retry(put, f"write {path}")


def write_file(fs: fsspec.AbstractFileSystem, local: str, path: str) -> None:
    """Copy the local file `local` to `path` (whole object, streamed, not held in memory), retried."""

    def put() -> None:
        size = os.path.getsize(local)
        if not _is_object_store(fs):  # copy aside, then rename, as write_bytes does
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            partial = f"{path}.partial-{os.getpid()}"
            fs.put_file(local, partial)
            fs.mv(partial, path)
            return
        fs.put_file(local, path)
        fs.invalidate_cache(path)
        if fs.size(path) != size:
            raise ConnectionError(f"short write of {path}")

    retry(put, f"write {path}")


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """The whole object at `path`, retried on transient errors."""
    return retry(lambda: fs.cat_file(path), f"read {path}")


def exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether `path` exists, retried; never served from a stale listing cache."""
    fs.invalidate_cache(path)
    return retry(lambda: fs.exists(path), f"stat {path}")


def download_files(url: str, names: Sequence[str], local: Path) -> Path:
    """Copy the files `names` of the folder at `url` (any fsspec URL) that exist into the local folder `local`."""
    fs, root = filesystem(url)
    local.mkdir(parents=True, exist_ok=True)
    for name in names:
        if exists(fs, f"{root}/{name}"):
            retry(lambda name=name: fs.get(f"{root}/{name}", str(local / name)), f"download {root}/{name}")
    return local


def _is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol not in ("file", "local", "memory")


def redact(options: Any) -> Any:
    """`storage_options` with every credential or endpoint value replaced by '***' (for logs)."""
    if isinstance(options, dict):
        return {
            k: "***" if any(s in str(k).lower() for s in _SECRET_KEYS) else redact(v) for k, v in options.items()
        }
    return options


def arrow_filesystem(fs: fsspec.AbstractFileSystem):
    """A pyarrow filesystem over an fsspec one (for pyarrow/Ray Data readers); local stays native."""
    import pyarrow.fs as pafs

    if not _is_object_store(fs) and "memory" not in str(fs.protocol):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
