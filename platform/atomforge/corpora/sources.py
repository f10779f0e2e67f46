"""Where corpus files live: listing and opening local paths and fsspec URLs (s3://, memory://, ...).

Readers never read a whole corpus: they list files here (cheap metadata calls) and open one
file at a time as a streaming file object. Formats that need a real local file (SQLite ASE
databases, LMDB) go through `local_copy`, which is the path itself for local files and an
fsspec `simplecache` copy for remote ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

from atomforge.corpora.base import CorpusError

COMPRESSION_SUFFIXES = (".xz", ".gz", ".bz2")


def is_local(url: str) -> bool:
    """True for plain paths and file:// URLs."""
    fs, _ = url_to_fs(url)
    return "file" in _protocols(fs)


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _as_url(fs, path: str) -> str:
    return path if "file" in _protocols(fs) else fs.unstrip_protocol(path)


def list_files(url: str, suffixes: tuple[str, ...], storage_options: dict | None = None) -> list[str]:
    """Sorted files under `url` (a file, a folder searched recursively, or a glob) ending in a suffix.

    Suffixes are matched after stripping a compression suffix (.xz, .gz, .bz2), so
    `("extxyz",)` also finds `0.extxyz.xz`. Raises CorpusError when nothing matches.
    """
    fs, path = url_to_fs(url, **(storage_options or {}))
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.exists(path):
        return [url]
    else:
        raise CorpusError(f"{url}: no such file or folder")
    files = sorted(p for p in found if base_suffix(p) in suffixes)
    if not files:
        raise CorpusError(f"{url}: no files ending in {', '.join(suffixes)}")
    return [_as_url(fs, p) for p in files]


def base_suffix(path: str) -> str:
    """The format suffix of a file name, ignoring a compression suffix: 'a/0.extxyz.xz' -> '.extxyz'."""
    name = strip_compression(PurePosixPath(path).name)
    return PurePosixPath(name).suffix.lower()


def strip_compression(name: str) -> str:
    """File name without a trailing .xz/.gz/.bz2."""
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def relative_stem(file_url: str, root_url: str) -> str:
    """Path of a file relative to the corpus root, without format/compression suffixes.

    Used in system ids: '/data/oc20/s2ef/0.extxyz.xz' under '/data/oc20' -> 's2ef/0'.
    """
    root = url_to_fs(root_url)[1].rstrip("/")
    path = url_to_fs(file_url)[1]
    rel = path[len(root) + 1:] if path.startswith(root + "/") else PurePosixPath(path).name
    name = strip_compression(rel)
    return str(PurePosixPath(name).with_suffix("")) if PurePosixPath(name).suffix else name


@contextlib.contextmanager
def open_file(url: str, mode: str = "rb", storage_options: dict | None = None) -> Iterator[IO[Any]]:
    """A streaming file object; .xz/.gz/.bz2 decompressed on the fly. Errors name the file."""
    try:
        handle = fsspec.open(url, mode, compression="infer", **(storage_options or {}))
        with handle as fobj:
            yield fobj
    except FileNotFoundError as err:
        raise CorpusError(f"{url}: file not found ({err})") from err


def local_copy(url: str, storage_options: dict | None = None) -> str:
    """A local filesystem path holding `url`'s bytes (the path itself when already local)."""
    if is_local(url):
        return url_to_fs(url)[1]
    options = {"s3": storage_options} if url.startswith("s3://") and storage_options else {}
    return fsspec.open_local(f"simplecache::{url}", **options)
