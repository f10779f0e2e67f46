"""What an output was built from: each source file's identity, and whether a rerun's sources changed.

A source's stamp is what the store says about it without reading it: size plus the ETag (object
stores) or the modification time (filesystems). The sha256 of its bytes is computed once per
set of stamps and cached beside the markers. The output's version (the `v-<version>/` prefix of
its shards and markers) is a hash of the config fingerprint and every source's path, size and
sha256: changed input bytes give a new version, so a rerun never resumes into, nor serves,
shards made from other bytes. A touched but identical file (new stamp, same sha256) is unchanged.
"""

from __future__ import annotations

import hashlib
import json

import fsspec

from atomforge.storage import exists, read_bytes, retry, write_bytes

STAMP_KEYS = ("ETag", "etag", "mtime", "LastModified", "last_modified", "created")


def stamp(url: str, storage_options: dict | None) -> dict:
    """{path, bytes, stamp} of one source from a metadata call (no data read).

    A source a reader expects but cannot find (an OC20 pair's missing txt) is recorded as
    bytes None, stamp "missing": its records are quarantined, and its arrival is a change.
    """
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    try:
        info = retry(lambda: fs.info(path), f"stat {url}")
    except FileNotFoundError:
        return {"path": url, "bytes": None, "stamp": "missing"}
    value = next((info[key] for key in STAMP_KEYS if info.get(key) is not None), None)
    return {"path": url, "bytes": int(info["size"]), "stamp": None if value is None else str(value)}


def sha256(url: str, storage_options: dict | None) -> str:
    """Hex sha256 of a source's bytes, streamed in 4 MiB chunks."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))

    def digest() -> str:
        sha = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                sha.update(chunk)
        return sha.hexdigest()

    return retry(digest, f"checksum {url}")


def stamps(paths: list[str], storage_options: dict | None) -> list[dict]:
    """Stamps of `paths` in order."""
    return [stamp(path, storage_options) for path in paths]


def with_checksums(fs, work_root: str, current: list[dict], storage_options: dict | None) -> list[dict]:
    """`current` stamps with each file's sha256, computed once per set of stamps (cached under `work_root`)."""
    key = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
    cache = f"{work_root}/sources-{key}.json"
    if exists(fs, cache):
        return json.loads(read_bytes(fs, cache))
    sources = [{**entry, "sha256": None if entry["bytes"] is None else sha256(entry["path"], storage_options)}
               for entry in current]
    write_bytes(fs, cache, json.dumps(sources, indent=1).encode())
    return sources


def version(fingerprint: str, sources: list[dict]) -> str:
    """The output version: hash of the config fingerprint and every source's (path, bytes, sha256)."""
    content = [(s["path"], s["bytes"], s["sha256"]) for s in sources]
    return hashlib.sha256(json.dumps([fingerprint, content]).encode()).hexdigest()[:16]


def changed_sources(published: list[dict], current: list[dict], storage_options: dict | None) -> list[dict]:
    """[{path, change}] where `current` differs from a published manifest's sources (empty: unchanged).

    change is "added", "removed" or "modified". Size or sha256 decide; a new stamp alone costs a
    re-hash of that file, so a copy or `touch` that keeps the bytes is not a change.
    """
    before = {s["path"]: s for s in published}
    now = {s["path"]: s for s in current}
    changes = [{"path": p, "change": "added"} for p in now if p not in before]
    changes += [{"path": p, "change": "removed"} for p in before if p not in now]
    for path in (p for p in now if p in before):
        old, new = before[path], now[path]
        if old["bytes"] != new["bytes"]:
            changes.append({"path": path, "change": "modified"})
        elif old.get("stamp") != new["stamp"] and new["bytes"] is not None and old.get("sha256") != sha256(path, storage_options):
            changes.append({"path": path, "change": "modified"})
    return sorted(changes, key=lambda c: c["path"])
