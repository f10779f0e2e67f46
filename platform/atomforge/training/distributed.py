"""The trainer's process group: rank, world, sums, gathers, broadcasts and barriers, with or without torch.distributed.

The trainer never calls torch.distributed itself; it asks a `Distributed`:
    SingleProcess()          one rank (in-process runs, local mode)
    TorchDistributed()       the default process group (gloo or NCCL), as Ray Train sets it up
    ThreadGroup(n).ranks()   n ranks in n threads of one process: sums and gathers through shared
                             memory and a barrier, so two trainers in two threads are a 2-rank run
                             (what the unit tests drive; no sockets, no processes)
Every method is collective: every rank calls it, in the same order.
"""

from __future__ import annotations

import threading
from typing import Any

import torch


class Distributed:
    """One rank's view of the group. Subclasses implement the four collectives."""

    rank: int = 0
    world: int = 1

    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum `tensor` over ranks, in place."""
        raise NotImplementedError

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order."""
        raise NotImplementedError

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        """Overwrite `tensor` with rank `src`'s, in place."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError


class SingleProcess(Distributed):
    """World of one: every collective is the identity."""

    def all_reduce(self, tensor: torch.Tensor) -> None:
        return None

    def all_gather(self, value: Any) -> list[Any]:
        return [value]

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        return None

    def barrier(self) -> None:
        return None


class TorchDistributed(Distributed):
    """The default torch.distributed process group (initialised by Ray Train's TorchConfig)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise ValueError("TorchDistributed: torch.distributed has no process group (run under Ray Train, "
                             "or init_process_group first)")
        self._dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def all_reduce(self, tensor: torch.Tensor) -> None:
        self._dist.all_reduce(tensor)

    def all_gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self._dist.all_gather_object(out, value)
        return out

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        self._dist.broadcast(tensor, src=src)

    def barrier(self) -> None:
        self._dist.barrier()


class ThreadGroup:
    """Shared state of `world` in-process ranks: one slot per rank and a reusable barrier.

    A sum adds the slots in rank order on every rank, so all ranks get bit-identical results (as a
    deterministic all-reduce does). A rank that raises breaks the barrier, so the others fail too
    instead of waiting forever.
    """

    def __init__(self, world: int, timeout: float = 300.0):
        if world < 1:
            raise ValueError(f"ThreadGroup: world must be >= 1, got {world}")
        self.world = world
        self.slots: list[Any] = [None] * world
        self._barrier = threading.Barrier(world, timeout=timeout)

    def ranks(self) -> list[ThreadRank]:
        return [ThreadRank(self, rank) for rank in range(self.world)]

    def wait(self) -> None:
        self._barrier.wait()

    def abort(self) -> None:
        self._barrier.abort()


class ThreadRank(Distributed):
    """Rank `rank` of a ThreadGroup."""

    def __init__(self, group: ThreadGroup, rank: int):
        self.group, self.rank, self.world = group, rank, group.world

    def _exchange(self, value: Any) -> list[Any]:
        self.group.slots[self.rank] = value
        self.group.wait()  # every slot written
        values = list(self.group.slots)
        self.group.wait()  # every rank read them: the slots may be reused
        return values

    def all_reduce(self, tensor: torch.Tensor) -> None:
        values = self._exchange(tensor.detach().clone())
        total = values[0].clone()
        for value in values[1:]:
            total += value
        tensor.copy_(total)

    def all_gather(self, value: Any) -> list[Any]:
        return self._exchange(value)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        values = self._exchange(tensor.detach().clone() if self.rank == src else None)
        tensor.copy_(values[src])

    def barrier(self) -> None:
        self.group.wait()


def run_ranks(group: ThreadGroup, work) -> list[Any]:
    """`work(rank_context)` on every rank of `group`, each in its own thread; the results in rank order.

    The first exception of any rank is raised here (after the others stopped at the broken barrier).
    """
    results: list[Any] = [None] * group.world
    errors: list[BaseException] = []

    def run(context: ThreadRank) -> None:
        try:
            results[context.rank] = work(context)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(error)
            group.abort()

    threads = [threading.Thread(target=run, args=(c,), name=f"rank-{c.rank}") for c in group.ranks()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
        raise first
    return results
