"""Builder processes for the loader: work items out and results back over one pipe per process, in order.

    with BuilderPool(build, num_workers=2, in_flight=2) as pool:
        for result in pool.map(items):   # build(item) for every item, in the items' order
            ...

Item i goes to process i % num_workers and its result is read from that process in turn, so the
results come back in the items' order whatever the processes' speeds; each process holds at most
`in_flight` items ahead. This is what the loader needed of torch's DataLoader workers (ordered
results, prefetch, an error raised in the consumer, a dead process noticed), without what it did
not: DataLoader queues every item and result through a multiprocessing queue whose feeder thread
pickles and writes it (a thread hand-off per message on each side), a per-process result queue
watchdog, and a pin-memory thread; here the consumer writes an item to the pipe and reads a result
from it directly. The results are small (`atomforge.batch_ring` carries a batch's arrays), so a
pipe's buffer holds them and neither side waits on the other's reads.

A build that raises sends the exception to the consumer, which raises it (caused by the process's
traceback); a process that dies is an error naming its exit code; leaving the `with`
(the consumer stopped early, or an error) stops the processes.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection

import pyarrow as pa
import torch

WATCH_S = 5.0  # how often an idle builder checks that its consumer is still there


class BuilderError(RuntimeError):
    """A builder process died, or raised something that could not be sent back as it was."""


class BuilderPool:
    """`num_workers` processes running `build` (inherited when forked, pickled otherwise) on items in order."""

    def __init__(self, build: Callable, num_workers: int, in_flight: int = 2):
        if num_workers < 1 or in_flight < 1:
            raise ValueError(f"a builder pool needs num_workers >= 1 and in_flight >= 1, got {num_workers}, {in_flight}")
        self.build, self.num_workers, self.in_flight = build, num_workers, in_flight
        self._processes: list = []
        self._pipes: list[Connection] = []

    def __enter__(self) -> BuilderPool:
        context = multiprocessing.get_context()
        try:
            for _ in range(self.num_workers):
                here, there = context.Pipe()
                process = context.Process(target=_serve, args=(self.build, there, os.getpid()), daemon=True,
                                          name="atomforge-builder")
                process.start()
                there.close()
                self._processes.append(process)
                self._pipes.append(here)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, items: Iterable) -> Iterator:
        """build(item) for each item, in order; the next items are sent before a result is handed out."""
        items = iter(items)
        owners: deque[int] = deque()  # the process of each item in flight, oldest first
        sent = 0

        def send_next() -> None:
            nonlocal sent
            item = next(items, None)
            if item is not None:
                worker = sent % self.num_workers
                try:
                    self._pipes[worker].send(item)
                except (BrokenPipeError, ConnectionResetError):
                    self._died(worker)
                owners.append(worker)
                sent += 1

        for _ in range(self.num_workers * self.in_flight):
            send_next()
        while owners:
            result = self._receive(owners.popleft())
            send_next()
            yield result

    def _receive(self, worker: int):
        # A blocking read: only the builder holds the other end of its pipe, so its death is an EOF here
        # (no poll or wait per result: each built a selector, ~40 us of the consumer's CPU per batch).
        try:
            status, value = self._pipes[worker].recv()
        except (EOFError, ConnectionResetError):  # the process closed its pipe, or died with items unread
            self._died(worker)
        if status == "error":
            error, trace = value
            raise error from BuilderError(f"in loader builder process {self._processes[worker].pid}:\n{trace}")
        return value

    def _died(self, worker: int) -> None:
        process = self._processes[worker]
        process.join(WATCH_S)
        raise BuilderError(f"loader builder process {process.pid} exited with code {process.exitcode} "
                           "(killed, out of memory, or crashed in native code)") from None

    def close(self) -> None:
        """Stop every process: each finishes the item it builds (its result is dropped) and exits."""
        for pipe in self._pipes:
            try:
                pipe.send(None)
            except OSError:  # already gone
                pass
            pipe.close()  # a process writing a result gets EPIPE instead of waiting for a reader
        for process in self._processes:
            process.join(WATCH_S)
            if process.is_alive():
                process.terminate()
                process.join()
        self._pipes, self._processes = [], []


def _serve(build: Callable, pipe: Connection, consumer: int) -> None:
    """A builder process: build each item received and send back ("ok", result) or ("error", (exception, trace))."""
    # The builders are the parallelism, one core each: one thread for torch (as in DataLoader workers) and
    # for Arrow's decoding pool, whose default of a thread per core, in every builder, cost ~9% more CPU per
    # structure in one builder process than a single thread (interleaved runs of the loader benchmark).
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C interrupts the consumer, which stops the builders
    try:
        while True:
            if not pipe.poll(WATCH_S):
                if os.getppid() != consumer:  # the consumer died without stopping us
                    return
                continue
            item = pipe.recv()
            if item is None:
                return
            try:
                reply = ("ok", build(item))
            except Exception as error:  # noqa: BLE001 - raised again in the consumer
                reply = ("error", (error, traceback.format_exc()))
            try:
                pipe.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as unpicklable:  # raised before a byte is sent
                what = reply[1][0] if reply[0] == "error" else reply[1]
                trace = reply[1][1] if reply[0] == "error" else traceback.format_exc()
                pipe.send(("error", (BuilderError(f"cannot send {type(what).__name__} back: {unpicklable}: {what}"),
                                     trace)))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the consumer closed its end
        pass
    finally:
        close = getattr(build, "close", None)
        if close is not None:
            close()
