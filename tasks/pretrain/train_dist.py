"""Distributed-training helpers: a process's place in a ``torchrun`` launch, batch sharding.

``torchrun`` starts one process per GPU and tells each its rank through environment variables
(its protocol; read only by the ``python -m tasks.pretrain.train`` entry point). Batches are
sharded by index, so every rank walks the same seeded batch sequence and takes every
``world``-th batch.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tasks.pretrain.data import PretrainData


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a ``torchrun`` launch (defaults: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the PNG."""
        return self.rank == 0


class BatchStream:
    """Training batches from a position (epoch, global batch index), sharded by rank.

    Global batch ``i`` of an epoch goes to rank ``i % world``; each epoch is cut to a multiple
    of ``world`` batches so ranks stay in step. ``epoch``/``index`` count the global batches
    consumed (what a checkpoint stores). With ``prefetch > 0`` a background thread builds the
    next batches (pinned in memory when ``pin``) while the GPU computes; batches come out in
    the same order either way.
    """

    def __init__(self, data: PretrainData, epoch: int, index: int, dist: DistInfo, *,
                 prefetch: int = 0, pin: bool = False) -> None:
        self.data, self.epoch, self.index, self.dist = data, epoch, index, dist
        self.prefetch, self.pin = prefetch, pin
        self._gen: Iterator[tuple[int, int, Any]] | None = None
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()

    def _produce(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(epoch, index after, this rank's batch), forever, from the current position."""
        epoch, index, world = self.epoch, self.index, self.dist.world
        while True:
            n = self.data.num_batches(epoch)
            end = n - n % world
            if end == 0:
                raise ValueError(f"{n} training batches per epoch cannot feed {world} processes")
            it = iter(self.data.batches(epoch, index)) if index < end else iter(())
            while index < end:
                group = [next(it) for _ in range(world)]
                index += world
                batch = group[self.dist.rank]
                if self.pin:
                    batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v
                             for k, v in batch.items()}
                yield epoch, index, batch
            epoch, index = epoch + 1, 0

    def _fill(self, gen: Iterator[Any], q: queue.Queue[Any]) -> None:
        try:
            for item in gen:
                while not self._stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    def next(self) -> dict[str, Any]:
        """This rank's next batch."""
        if self._gen is None:
            self._gen = self._produce()
            if self.prefetch > 0:
                self._queue = queue.Queue(maxsize=self.prefetch)
                threading.Thread(target=self._fill, args=(self._gen, self._queue),
                                 daemon=True, name="batch-prefetch").start()
        item = self._queue.get() if self._queue is not None else next(self._gen)
        if isinstance(item, BaseException):
            raise item
        self.epoch, self.index, batch = item
        return batch

    def close(self) -> None:
        """Stop the prefetch thread (if any)."""
        self._stop.set()


def barrier(dist: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.world > 1:
        torch.distributed.barrier()


def dist_from_env() -> DistInfo:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (the launcher's protocol)."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    int(env.get("LOCAL_RANK", 0)))
