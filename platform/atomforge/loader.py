"""The shard loader: planned batches of shard rows built columnar, in background workers, with exact resume.

    loader = open_shards(url).loader("train", max_atoms=2048, num_workers=4, pin_memory=True)
    for batch in loader:          # model-ready PyG batches (the fields of `atomforge.batch`)
        ...
    state = loader.state_dict()   # resume exactly: a new loader + load_state_dict(state)

Data path (one rank): the *planner* (this process) orders row references with `RowStream`s (seeded
chunk order per epoch, disjoint ranks, shuffle windows) and cuts them into atom-budget batches,
reading only each shard's `num_atoms` column; its state after every batch travels with the batch.
Each batch is a `WorkItem` (which rows of which windows, in which order). *Builders* (the calling
process when num_workers=0, else torch DataLoader workers) decode every window once (checksum,
Parquet -> numpy columns, sanity check, Verlet re-filter: `atomforge.columnar`) into a window
store that all builders share (files in shared memory), ahead of need, then gather each batch's
rows from it by offsets. So the batch sequence is a function of (seed, rank, batch index) alone,
whatever num_workers is, and no builder decodes what another already did.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from atomforge.batch_ring import RingReader, WorkerRing, layout_of
from atomforge.columnar import RowBlock
from atomforge.columnar_batch import assemble, batch_arrays, gather_rows
from atomforge.shard_reader import ShardReader, Source
from atomforge.streams import RowStream, Window
from atomforge.window_store import FileStore, MemoryStore, WindowKey


# ---------------------------------------------------------------- builders: decode windows, gather batches
@dataclass
class WorkItem:
    """One planned batch: its rows (which rows of which decoded windows), order, and windows to decode.

    parts: [(window key, block rows)] in first-use order; order: permutation of the concatenated parts
    that gives draw order (None when already in order); tasks: task id per graph; decode: windows this
    item's builder decodes in the background (ahead of need); state: the planner's state after it.
    """

    index: int
    parts: list[tuple[WindowKey, np.ndarray]]
    order: np.ndarray | None
    tasks: np.ndarray
    decode: list[Window]
    state: dict


class Decoder:
    """A background thread decoding windows into a store, in submission order."""

    def __init__(self, sources: Sequence[Source], store, reader: ShardReader):
        self.sources, self.store, self.reader = sources, store, reader
        self._jobs: list[Window] = []
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="atomforge-window-decoder", daemon=True)
        self._thread.start()

    def submit(self, windows: Sequence[Window]) -> None:
        with self._wake:
            self._jobs.extend(windows)
            self._wake.notify()

    def close(self) -> None:
        """Stop after the window being decoded (the queue is dropped)."""
        with self._wake:
            self._jobs[:] = [None]
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._jobs)
                window = self._jobs.pop(0)
            if window is None:
                return
            source = self.sources[window.key[0]]
            try:
                block: RowBlock | str = self.reader.window(source, window)
            except Exception as error:  # noqa: BLE001 - handed to every reader of this window
                block = f"{type(error).__name__}: {error}"
            self.store.put(window.key, block)


class BatchBuilder:
    """Builds the batch of a `WorkItem` (a map-style dataset for torch's DataLoader workers).

    Each process (the loader's, or a worker) starts its own decoder thread on first use; a worker
    hands its batches over through its own ring of `ring_slots` shared slots (`atomforge.batch_ring`).
    """

    def __init__(self, sources: Sequence[Source], store, cache_bytes: int, ring_slots: int = 5):
        self.sources, self.store, self.cache_bytes, self.ring_slots = list(sources), store, cache_bytes, ring_slots
        self._decoder: tuple[int, Decoder] | None = None
        self._ring: WorkerRing | None = None

    def _decoder_here(self) -> Decoder:
        if self._decoder is None or self._decoder[0] != os.getpid():
            self._decoder = (os.getpid(), Decoder(self.sources, self.store, ShardReader(self.cache_bytes)))
        return self._decoder[1]

    def arrays(self, item: WorkItem) -> tuple[dict[str, np.ndarray], list[str]]:
        """The batch's arrays and system ids (`columnar_batch.batch_arrays`), decoding windows as asked."""
        if item.decode:
            self._decoder_here().submit(item.decode)
        parts = [(self.store.get(key), rows) for key, rows in item.parts]
        return batch_arrays(gather_rows(parts, item.order), item.tasks)

    def __getitem__(self, item: WorkItem):
        """In a worker: the batch in a slot of this worker's ring (or packed, see `WorkerRing.put`), its
        system ids and the plan state."""
        arrays, system_ids = self.arrays(item)
        if self._ring is None:  # sized by the first batch: later ones under the same budget fit twice over
            _, size = layout_of(arrays)
            self._ring = WorkerRing(self.store.root, self.ring_slots, max(2 * size, 1 << 20))
        return self._ring.put(arrays), system_ids, item.state

    def close(self) -> None:
        """Stop this process's decoder thread."""
        if self._decoder is not None and self._decoder[0] == os.getpid():
            self._decoder[1].close()
        self._decoder = None

    def __getstate__(self) -> dict:  # workers start their own decoder thread and ring
        return {**self.__dict__, "_decoder": None, "_ring": None}


def _identity(sample):
    return sample


# ---------------------------------------------------------------- planning
class Planner(Protocol):
    """What the loader asks of a batch plan: its streams, the next batch's rows, and its state."""

    streams: Sequence[RowStream]

    def begin(self) -> None: ...  # called when an iteration starts, after load_state_dict

    def next_batch(self) -> list[tuple[int, WindowKey, int]] | None: ...  # [(stream slot, window, position)], None = end

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class AtomBudgetPlanner:
    """Batches of one stream's rows within an atom budget; an iteration runs `epochs` epochs (None: forever).

    A batch ends before the row that would exceed `max_atoms` (a row larger than the budget alone
    forms a batch: nothing is dropped), at `max_structures` rows, and at the end of an epoch.
    """

    def __init__(self, stream: RowStream, max_atoms: int, max_structures: int | None = None, epochs: int | None = 1):
        if max_atoms <= 0:
            raise ValueError(f"max_atoms must be positive, got {max_atoms}")
        if max_structures is not None and max_structures <= 0:
            raise ValueError(f"max_structures must be positive or None, got {max_structures}")
        if epochs is not None and epochs <= 0:
            raise ValueError(f"epochs must be positive or None, got {epochs}")
        self.streams = [stream]
        self.max_atoms, self.max_structures, self.epochs = max_atoms, max_structures, epochs

    def begin(self) -> None:
        stream = self.streams[0]
        stream.epochs = None
        stream.exhausted()  # an epoch read to its end rolls over to the next one here
        stream.epochs = None if self.epochs is None else stream.epoch + self.epochs

    def next_batch(self) -> list[tuple[int, WindowKey, int]] | None:
        stream = self.streams[0]
        if stream.exhausted():
            return None
        epoch, rows, total = stream.epoch, [], 0
        while not stream.exhausted():
            n = stream.peek()
            full = self.max_structures is not None and len(rows) >= self.max_structures
            if stream.epoch != epoch or (rows and (total + n > self.max_atoms or full)):
                break
            key, position = stream.advance()
            rows.append((0, key, position))
            total += n
        return rows

    def state_dict(self) -> dict:
        return {"stream": self.streams[0].state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.streams[0].load_state_dict(state["stream"])


class ShardLoader:
    """An iterable of model-ready batches from planned rows, built in this process or in `num_workers`.

    Iterating runs the planner from the loader's state (see the planner for where an iteration ends);
    `state_dict()` is the state after the last batch handed out, so a loader given it with
    `load_state_dict` continues with exactly the next batch, for any num_workers.
    Args:
        sources: the planner's streams' data (index = the stream's `slot`, by default its `source`).
        planner: e.g. `AtomBudgetPlanner` or the training mixer.
        num_workers: builder processes (torch DataLoader workers); 0 builds here.
        pin_memory: page-lock batches for `non_blocking` host-to-GPU copies (CUDA only; ignored otherwise).
        prefetch_windows: windows decoded ahead per stream; prefetch_batches: batches ahead per worker.
        window_dir: where worker builders share decoded windows (default /dev/shm, else the temp dir).
    """

    def __init__(self, sources: Sequence[Source], planner: Planner, *, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_windows: int = 2, prefetch_batches: int = 2, cache_bytes: int = 256 << 20,
                 window_dir: str | None = None, timeout: float = 600.0):
        if num_workers < 0 or prefetch_windows < 1 or prefetch_batches < 1:
            raise ValueError(f"need num_workers >= 0 and prefetch_* >= 1, got {num_workers}, "
                             f"{prefetch_windows}, {prefetch_batches}")
        self.sources, self.planner = list(sources), planner
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.prefetch_windows, self.prefetch_batches = prefetch_windows, prefetch_batches
        self.cache_bytes, self.window_dir, self.timeout = cache_bytes, window_dir, timeout
        self._state = {"batches": 0, "planner": planner.state_dict()}
        self._reader = ShardReader(cache_bytes)  # the planner's: num_atoms columns only
        for stream in planner.streams:
            stream.sizes = self._sizes_of(stream.slot)

    def _sizes_of(self, slot: int):
        return lambda window: self._reader.window_sizes(self.sources[slot], window)

    def state_dict(self) -> dict:
        """{"batches": batches handed out so far, "planner": the planner's state after the last one}."""
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        self._state = {"batches": int(state["batches"]), "planner": state["planner"]}

    def __iter__(self) -> Iterator:
        self.planner.load_state_dict(self._state["planner"])
        self.planner.begin()
        store = MemoryStore(self.timeout) if self.num_workers == 0 else FileStore.create(self.timeout, self.window_dir)
        # a worker's slots in use at once: its prefetch_batches in flight, the batch the consumer holds, the one
        # before it (still bound while the next is asked for), and one more (e.g. kept for logging)
        builder = BatchBuilder(self.sources, store, self.cache_bytes, ring_slots=self.prefetch_batches + 3)
        plan = _Plan(self, store)
        try:
            for batch, state in self._built(builder, plan):
                self._state = state
                plan.consumed(state["batches"] - 1, store)
                yield batch
        finally:
            builder.close()
            store.close()

    def _built(self, builder: BatchBuilder, plan: _Plan):
        import torch

        if self.num_workers == 0:
            pin = self.pin_memory and torch.cuda.is_available()
            for item in plan:
                arrays, system_ids = builder.arrays(item)
                batch = assemble({name: torch.from_numpy(a) for name, a in arrays.items()}, system_ids)
                yield (batch.pin_memory() if pin else batch), item.state
            return
        from torch.utils.data import DataLoader

        pin = self.pin_memory and torch.cuda.is_available()
        workers = iter(DataLoader(builder, batch_size=None, sampler=plan, num_workers=self.num_workers,
                                  collate_fn=_identity, pin_memory=pin, prefetch_factor=self.prefetch_batches))
        rings = RingReader(pin)
        try:
            for message, system_ids, state in workers:
                yield assemble(rings.tensors(message), system_ids), state
        finally:
            del workers  # stops the worker processes now, also when an error is on its way out


class _Plan:
    """The loader's work items, in order (a DataLoader sampler): planned rows grouped by window, with
    the windows to decode ahead and, once every batch reading a window is handed out, its removal.

    An item's builder decodes the windows its rows need that no builder was given yet, or else at
    most one window ahead: DataLoader deals consecutive items to different workers, so the windows
    ahead are decoded by different workers at once instead of one after another by the first.
    """

    def __init__(self, loader: ShardLoader, store):
        self.loader, self.store = loader, store
        self._windows: dict[WindowKey, tuple[Window, np.ndarray]] = {}  # scheduled: window, its order
        self._pending: dict[WindowKey, Window] = {}  # scheduled ahead, not yet given to a builder (in order)
        self._current: dict[int, WindowKey] = {}  # source -> window of its latest row
        self._last_use: dict[WindowKey, int] = {}
        self._closed: list[tuple[int, WindowKey]] = []  # (last batch reading it, window), in order

    def __iter__(self) -> Iterator[WorkItem]:
        loader = self.loader
        index = loader._state["batches"]
        while (rows := loader.planner.next_batch()) is not None:
            decode = self._needed(rows)
            self._pending.update((window.key, window) for window in self._schedule())
            if self._pending and not decode:
                decode.append(self._pending.pop(next(iter(self._pending))))
            parts, order, tasks = self._parts(rows, index)
            state = {"batches": index + 1, "planner": loader.planner.state_dict()}
            yield WorkItem(index, parts, order, tasks, decode, state)
            index += 1

    def _add(self, window: Window, new: list[Window]) -> None:
        if window.key not in self._windows:
            self._windows[window.key] = (window, window.order())
            new.append(window)

    def _needed(self, rows) -> list[Window]:
        """Windows this batch reads that no earlier item was given to decode (decoded first)."""
        new: list[Window] = []
        streams = self.loader.planner.streams
        for key in dict.fromkeys(key for _, key, _ in rows):
            if key not in self._windows:
                self._add(streams[key[0]].window(key), new)
            elif key in self._pending:
                new.append(self._pending.pop(key))
        return new

    def _schedule(self) -> list[Window]:
        """Windows not yet scheduled among each stream's next one and the `prefetch_windows` after it."""
        new: list[Window] = []
        for stream in self.loader.planner.streams:
            ahead = stream.windows_ahead(1 + self.loader.prefetch_windows)
            if ahead and ahead[-1].key in self._windows:
                continue
            for window in ahead:
                self._add(window, new)
        return new

    def _parts(self, rows, index: int):
        """Group a batch's (source, window, position) rows by window; the order restoring draw order; tasks."""
        keys = list(dict.fromkeys(key for _, key, _ in rows))
        slot = {key: i for i, key in enumerate(keys)}
        part_of = np.array([slot[key] for _, key, _ in rows], dtype=np.int64)
        positions = np.array([p for _, _, p in rows], dtype=np.int64)
        parts = []
        for i, key in enumerate(keys):
            parts.append((key, self._windows[key][1][positions[part_of == i]]))  # stream position -> block row
            self._use(key, index)
        # graph d (draw order) = row order[d] of the parts concatenated
        order = None if len(keys) == 1 else np.argsort(np.argsort(part_of, kind="stable"), kind="stable")
        tasks = np.array([self.loader.sources[source].task for source, _, _ in rows], dtype=np.int64)
        return parts, order, tasks

    def _use(self, key: WindowKey, index: int) -> None:
        source = key[0]
        previous = self._current.get(source)
        if previous is not None and previous != key:
            self._closed.append((self._last_use[previous], previous))
        self._current[source] = key
        self._last_use[key] = index

    def consumed(self, index: int, store) -> None:
        """Batch `index` was handed out: drop the windows no later batch reads."""
        done = [key for last, key in self._closed if last <= index]
        self._closed = [(last, key) for last, key in self._closed if last > index]
        for key in done:
            store.drop(key)
            self._windows.pop(key, None)
