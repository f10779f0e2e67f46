"""Where builders keep decoded windows: in this process, or as files in shared memory for all workers.

A window is decoded once per rank by whichever builder was asked to (see `atomforge.loader`) and
read by every builder that gathers rows from it. `FileStore` writes a `RowBlock` as one file (a
JSON header naming each array's dtype, shape and offset, then the raw arrays) under a directory
in shared memory (/dev/shm where present), written aside and renamed so readers never see a torn
file; readers map it (no copy, no decode). A failed decode leaves an error file whose message
every reader raises, so a corrupt shard stops the run with its name instead of a hang.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from atomforge.columnar import RowBlock

WindowKey = tuple[int, int, int]  # (source, epoch, window index)
ALIGN = 64


class MemoryStore:
    """Decoded windows in this process (num_workers=0): a dict guarded by a condition variable."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._blocks: dict[WindowKey, RowBlock | str] = {}
        self._ready = threading.Condition()

    def put(self, key: WindowKey, block: RowBlock | str) -> None:
        """Store a decoded window, or the error message of a failed decode (raised by `get`)."""
        with self._ready:
            self._blocks[key] = block
            self._ready.notify_all()

    def get(self, key: WindowKey) -> RowBlock:
        with self._ready:
            if not self._ready.wait_for(lambda: key in self._blocks, timeout=self.timeout):
                raise TimeoutError(f"window {key} was not decoded within {self.timeout} s")
            return _unwrap(key, self._blocks[key])

    def has(self, key: WindowKey) -> bool:
        with self._ready:
            return key in self._blocks

    def drop(self, key: WindowKey) -> None:
        with self._ready:
            self._blocks.pop(key, None)

    def close(self) -> None:
        with self._ready:
            self._blocks.clear()


def _unwrap(key: WindowKey, block: RowBlock | str) -> RowBlock:
    if isinstance(block, str):
        raise ValueError(f"decoding window {key} failed: {block}")
    return block


class FileStore:
    """Decoded windows as files under `root` (one directory per loader iteration), shared by processes."""

    def __init__(self, root: str | Path, timeout: float):
        self.root, self.timeout = Path(root), timeout
        self._open: OrderedDict[WindowKey, RowBlock] = OrderedDict()  # this process's mapped windows

    @classmethod
    def create(cls, timeout: float, parent: str | None = None) -> FileStore:
        """A store in a fresh directory under `parent` (default /dev/shm when present, else the temp dir)."""
        if parent is None:
            parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        return cls(tempfile.mkdtemp(prefix="atomforge-windows-", dir=parent), timeout)

    def _path(self, key: WindowKey) -> Path:
        return self.root / "s{}-e{}-w{}.block".format(*key)

    def put(self, key: WindowKey, block: RowBlock | str) -> None:
        """Write a decoded window (or a failed decode's message) atomically."""
        path = self._path(key)
        target = path.with_suffix(".error") if isinstance(block, str) else path
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
        with open(partial, "wb") as handle:
            if isinstance(block, str):
                handle.write(block.encode())
            else:
                _write_block(handle, block)
        os.replace(partial, target)

    def has(self, key: WindowKey) -> bool:
        path = self._path(key)
        return path.exists() or path.with_suffix(".error").exists()

    def get(self, key: WindowKey) -> RowBlock:
        """The window, waiting for its builder to write it (raising its error, or after `timeout` s)."""
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        path, deadline, pause = self._path(key), time.monotonic() + self.timeout, 0.0005
        while not path.exists():
            error = path.with_suffix(".error")
            if error.exists():
                raise ValueError(f"decoding window {key} failed: {error.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"window {key} did not appear in {self.root} within {self.timeout} s "
                                   "(its builder died or is stuck)")
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        block = _read_block(path)
        # Unmap the windows whose files the planner deleted (no batch reads them again): a mapping keeps a
        # deleted file's shared memory alive, and builders never hear of the planner's drops otherwise.
        for gone in [k for k in self._open if not self._path(k).exists()]:
            del self._open[gone]
        self._open[key] = block
        while len(self._open) > 32:
            self._open.popitem(last=False)
        return block

    def drop(self, key: WindowKey) -> None:
        """Delete a window no batch will read again (processes that mapped it keep their mapping)."""
        self._open.pop(key, None)
        self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        self._open.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _write_block(handle, block: RowBlock) -> None:
    layout, offset = {}, 0
    arrays = {name: np.ascontiguousarray(a) for name, a in block.arrays.items()}
    for name, array in arrays.items():
        layout[name] = [array.dtype.str, list(array.shape), offset]
        offset += -(-array.nbytes // ALIGN) * ALIGN
    header = json.dumps(layout).encode()
    start = -(-(8 + len(header)) // ALIGN) * ALIGN
    handle.write(len(header).to_bytes(8, "little") + header + b"\0" * (start - 8 - len(header)))
    for array in arrays.values():
        handle.write(array.reshape(-1).view(np.uint8).data)  # the array's own bytes: no copy, as `tobytes` makes
        handle.write(b"\0" * (-array.nbytes % ALIGN))


def _read_block(path: Path) -> RowBlock:
    # Plain arrays over the mapping, not `np.memmap`: every view and take of a memmap subclass runs its
    # Python `__array_finalize__`, thousands of times per window.
    with open(path, "rb") as handle:
        mapped = np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
    size = int.from_bytes(mapped[:8].tobytes(), "little")
    layout = json.loads(mapped[8:8 + size].tobytes())
    start = -(-(8 + size) // ALIGN) * ALIGN
    arrays = {}
    for name, (dtype, shape, offset) in layout.items():
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        begin = start + offset
        arrays[name] = mapped[begin:begin + count * dtype.itemsize].view(dtype).reshape(shape)
    return RowBlock(arrays)
