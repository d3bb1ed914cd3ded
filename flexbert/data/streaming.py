"""MDS shards -> a Streaming dataset -> this rank's ordered documents, resumable at any sample.

Streaming (`streaming.StreamingDataset`) gives shard download/caching, stream mixing by
proportion, a deterministic shuffle per (seed, epoch) and a partition of every epoch over the
ranks of the run. Its own resume point is one *global* sample count, which assumes every rank
consumed the same number of samples. A packer does not: a rank that drew short documents
consumes more of them per batch. So we ask Streaming for this rank's sample order of an epoch
(`rank_sample_ids`) and keep our own per-rank position in it; resuming is an O(1) slice of
that order, with no sample read twice and none skipped.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from flexbert.config.data import StreamConfig

__all__ = ["RankInfo", "build_streaming_dataset", "rank_sample_ids", "DocumentReader", "detect_rank"]

_INDEX = "index.json"
# Samples per partition unit when Streaming assigns the shuffled epoch to ranks. Fixed (not the
# fetch size) so that a rank's order does not depend on loader tuning knobs.
_PARTITION_BATCH = 1


class RankInfo:
    """Which data-parallel rank this process is, out of how many (nodes x ranks per node).

    Args:
        rank: global rank in [0, world_size).
        world_size: number of data-parallel ranks.
        local_world_size: ranks per node (world_size must be a multiple of it).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_world_size: int | None = None):
        local_world_size = world_size if local_world_size is None else local_world_size
        if not 0 <= rank < world_size or world_size % local_world_size:
            raise ValueError(f"bad rank layout: rank {rank}, world_size {world_size}, local_world_size {local_world_size}")
        self.rank, self.world_size, self.local_world_size = rank, world_size, local_world_size

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.local_world_size

    def to_world(self):
        """Streaming's `World` for this rank with one worker (our workers split the rank's order)."""
        from streaming.base.world import World

        return World(num_nodes=self.num_nodes, ranks_per_node=self.local_world_size, workers_per_rank=1, worker=self.rank)

    def __repr__(self) -> str:
        return f"RankInfo(rank={self.rank}, world_size={self.world_size}, local_world_size={self.local_world_size})"


def detect_rank() -> RankInfo:
    """This process's rank from the torch.distributed environment (RANK, WORLD_SIZE, LOCAL_WORLD_SIZE)."""
    from streaming.base import distributed as sdist

    return RankInfo(sdist.get_rank(), sdist.get_world_size(), sdist.get_local_world_size())


def _check_local(stream: StreamConfig) -> None:
    # Without a remote, the shards must already be on disk: fail here, naming the path, rather
    # than deep inside Streaming with a message about downloads.
    if stream.remote is not None:
        return
    path = os.path.join(stream.local, stream.split) if stream.split else stream.local
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MDS directory '{path}' does not exist; fix data 'local'/'split' or set 'remote'")
    if not os.path.isfile(os.path.join(path, _INDEX)):
        raise FileNotFoundError(
            f"MDS directory '{path}' has no {_INDEX}; point 'local' at the output of the MDS conversion"
        )


def build_streaming_dataset(
    streams: Sequence[StreamConfig],
    *,
    shuffle: bool,
    shuffle_seed: int,
    shuffle_algo: str = "py1e",
    num_canonical_nodes: int | None = None,
    epoch_size: int | None = None,
    cache_limit: str | None = None,
    rank_info: RankInfo | None = None,
):
    """Build a `streaming.StreamingDataset` over one or several (weighted) MDS streams.

    Args:
        streams: sources; local ones must contain index.json (checked, naming the path).
        shuffle / shuffle_seed / shuffle_algo: deterministic shuffle per (seed, epoch).
        num_canonical_nodes: Streaming's canonical nodes (None = number of physical nodes).
        epoch_size: samples per epoch for proportion-weighted streams (None = total samples).
        cache_limit: shard cache limit for remote streams.
        rank_info: the rank layout used to pick the default num_canonical_nodes.
    """
    from streaming import Stream, StreamingDataset

    if not streams:
        raise ValueError("no streams given: set data 'streams' or 'local'")
    for s in streams:
        _check_local(s)
    rank_info = rank_info or detect_rank()
    if num_canonical_nodes is None:
        # Streaming's own default for these algorithms; fixed now so it can be saved and checked.
        num_canonical_nodes = rank_info.num_nodes * (64 if shuffle_algo in ("py1s", "py2s") else 1)
    mds_streams = [
        Stream(local=s.local, remote=s.remote, split=s.split, proportion=s.proportion, repeat=s.repeat, choose=s.choose)
        for s in streams
    ]
    ds = StreamingDataset(
        streams=mds_streams,
        shuffle=shuffle,
        shuffle_seed=shuffle_seed,
        shuffle_algo=shuffle_algo,
        num_canonical_nodes=num_canonical_nodes,
        epoch_size=epoch_size,
        cache_limit=cache_limit,
        batch_size=_PARTITION_BATCH,
    )
    # Streaming sets this lazily inside __iter__; we call its partitioner directly.
    ds._set_shuffle_block_size(rank_info.to_world())
    return ds


def rank_sample_ids(dataset, epoch: int, rank_info: RankInfo) -> np.ndarray:
    """This rank's sample ids for `epoch`, in order (Streaming's mix, shuffle and partition).

    Args:
        dataset: a StreamingDataset from `build_streaming_dataset`.
        epoch: epoch number (mixing and shuffling change per epoch).
        rank_info: which rank's share to return.
    Returns:
        (N,) int64 sample ids; the ranks' shares are disjoint and together cover the epoch
        (Streaming repeats a few samples when the epoch is not divisible by the world size).
    """
    from streaming.base.batching import generate_work

    world = rank_info.to_world()
    work = generate_work(dataset.batching_method, dataset, world, epoch, 0)
    ids = work[world.node, world.rank_of_node].reshape(-1)
    return ids[ids >= 0].astype(np.int64)


class DocumentReader(IterableDataset):
    """Reads documents `ids[start:]` in order, split over DataLoader workers by fetch chunks.

    Chunk k (of `fetch_size` samples) goes to worker k % num_workers. A torch DataLoader asks
    its workers round-robin and returns their batches in that order, so the loader sees the
    chunks in the original order whatever the number of workers.

    Args:
        dataset: the StreamingDataset (random access by sample id; shards fetched on demand).
        ids: (N,) int64 sample ids of this rank's epoch.
        start: first position in `ids` to read.
        fetch_size: samples per chunk (use it as the DataLoader batch_size).
    """

    def __init__(self, dataset, ids: np.ndarray, start: int, fetch_size: int):
        self.dataset, self.ids, self.start, self.fetch_size = dataset, ids, start, fetch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        n = len(self.ids)
        chunk_start = self.start + wid * self.fetch_size
        while chunk_start < n:
            for pos in range(chunk_start, min(chunk_start + self.fetch_size, n)):
                yield np.asarray(self.dataset[int(self.ids[pos])]["input_ids"])
            chunk_start += nworkers * self.fetch_size
