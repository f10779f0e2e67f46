"""How builder workers hand batches to the loader: a ring of reused shared-memory slots per worker.

A worker writes a batch's arrays into a free slot of its ring (one file in shared memory, mapped
once by the worker and once by the loader) and sends only `RingSlot` (file, slot, layout) over the
DataLoader queue. The loader's tensors are views of the slot; when the last of them is freed (the
consumer moved on, or dropped a batch it kept) a finalizer marks the slot free, and only then may
the worker write it again. Torch's own hand-over moves every tensor into a fresh shared-memory
segment in the worker (a copy into new pages), then passes its file descriptor to the loader over
a socket with an authentication handshake and maps it there: a connect, several messages, an mmap
and fresh page faults per batch, more CPU than building the batch. A batch larger than a slot, or
one that finds every slot still held (a consumer keeping many batches), goes that way instead, as
one buffer (`pack`): nothing waits and nothing a consumer holds is overwritten.

Slot states are one byte each at the start of the file: the worker sets 1 before writing, the
loader sets 0 after the batch's tensors are gone (its reads of them finished long before: the
queue's system calls lie between).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ALIGN = 64  # bytes: every array starts on a cache line (and any dtype's alignment)
PAGE = 4096
Layout = list[tuple[str, str, tuple, int]]  # (name, dtype str, shape, byte offset)


def layout_of(arrays: dict[str, np.ndarray]) -> tuple[Layout, int]:
    """Where each array goes in one buffer, and the buffer's size in bytes."""
    layout, offset = [], 0
    for name, array in arrays.items():
        layout.append((name, array.dtype.str, array.shape, offset))
        offset += -(-array.nbytes // ALIGN) * ALIGN
    return layout, offset


def write_arrays(arrays: dict[str, np.ndarray], layout: Layout, out: np.ndarray) -> None:
    """Copy `arrays` into the uint8 buffer `out` at `layout`'s offsets."""
    for (_, _, _, start), array in zip(layout, arrays.values()):
        if array.nbytes:
            destination = out[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
            np.copyto(destination, array, casting="no")


def views(flat: np.ndarray | torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """The tensors stored at `layout` in the uint8 buffer `flat`, as views of it (pinned if it is).

    Built as numpy views, then `torch.from_numpy`: a tenth of the cost of slicing and viewing tensors.
    """
    buffer = flat.numpy() if isinstance(flat, torch.Tensor) else flat
    return {name: torch.from_numpy(np.ndarray(shape, dtype, buffer, start)) for name, dtype, shape, start in layout}


def pack(arrays: dict[str, np.ndarray]) -> tuple[torch.Tensor, Layout]:
    """All arrays in one fresh uint8 tensor (+ its layout): one shared buffer (and one pinned copy) per
    batch instead of one file descriptor per field, on the way that does not use a ring."""
    layout, size = layout_of(arrays)
    buffer = np.empty(size, dtype=np.uint8)
    write_arrays(arrays, layout, buffer)
    return torch.from_numpy(buffer), layout


@dataclass(frozen=True)
class RingSlot:
    """A batch in slot `slot` of the ring file `path` (bytes start..start+size), laid out by `layout`."""

    path: str
    slot: int
    start: int
    size: int
    layout: Layout


class WorkerRing:
    """A worker's side: `num_slots` slots of `slot_bytes` in a file it creates under `directory`."""

    def __init__(self, directory: str | Path, num_slots: int, slot_bytes: int):
        if num_slots < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs num_slots >= 1 and slot_bytes >= 1, got {num_slots}, {slot_bytes}")
        self.num_slots, self.slot_bytes = num_slots, -(-slot_bytes // PAGE) * PAGE
        self.header = -(-num_slots // PAGE) * PAGE
        fd, self.path = tempfile.mkstemp(prefix="ring-", suffix=".slots", dir=directory)
        try:  # reserved now: a full shared-memory mount fails here, not as a SIGBUS on a later write
            os.posix_fallocate(fd, 0, self.header + self.num_slots * self.slot_bytes)
            self._map = mmap.mmap(fd, 0)
        except OSError as error:
            os.unlink(self.path)
            raise OSError(f"cannot reserve {num_slots} batch slots of {self.slot_bytes} bytes in {directory} "
                          f"({error}); give the loader a window_dir with room") from error
        finally:
            os.close(fd)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        self._busy = self._bytes[:num_slots]
        self._next = 0

    def put(self, arrays: dict[str, np.ndarray]) -> RingSlot | tuple[torch.Tensor, Layout]:
        """The batch in a free slot (its `RingSlot`), or `pack(arrays)` when none is free or it is too large."""
        layout, size = layout_of(arrays)
        slot = self._free() if size <= self.slot_bytes else None
        if slot is None:
            return pack(arrays)
        self._busy[slot] = 1
        start = self.header + slot * self.slot_bytes
        write_arrays(arrays, layout, self._bytes[start:start + size])
        return RingSlot(self.path, slot, start, size, layout)

    def _free(self) -> int | None:
        free = np.flatnonzero(self._busy == 0)
        if not len(free):
            return None
        after = free[free >= self._next]  # round robin: the slot freed longest ago is written next
        slot = int(after[0] if len(after) else free[0])
        self._next = (slot + 1) % self.num_slots
        return slot


class RingReader:
    """The loader's side: tensors of `RingSlot`s (rings mapped on first use), or of packed buffers."""

    def __init__(self, pin: bool = False):
        self.pin = pin
        self._maps: dict[str, mmap.mmap] = {}  # ring path -> its mapping (open while any batch's arrays use it)

    def tensors(self, message: RingSlot | tuple[torch.Tensor, Layout]) -> dict[str, torch.Tensor]:
        if not isinstance(message, RingSlot):
            buffer, layout = message
            return views(buffer, layout)
        mapping = self._maps.get(message.path)
        if mapping is None:
            with open(message.path, "r+b") as handle:
                mapping = self._maps[message.path] = mmap.mmap(handle.fileno(), 0)
        busy = np.frombuffer(mapping, dtype=np.uint8, count=message.slot + 1)
        # A new array per batch whose base is the mapping, not another array: numpy does not collapse the
        # fields' bases past it, so it lives exactly as long as the last view of this batch.
        owner = np.frombuffer(mapping, dtype=np.uint8, count=message.size, offset=message.start)
        if self.pin:  # one copy into page-locked memory; the slot is free again at once
            flat = torch.empty(message.size, dtype=torch.uint8, pin_memory=True)
            flat.copy_(torch.from_numpy(owner))
            busy[message.slot] = 0
            return views(flat, message.layout)
        release = weakref.finalize(owner, _release, busy, message.slot)
        release.atexit = False
        return views(owner, message.layout)


def _release(busy: np.ndarray, slot: int) -> None:
    busy[slot] = 0
