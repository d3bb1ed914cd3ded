"""MDS shards -> a Streaming dataset -> this rank's ordered documents, resumable at any sample.

Streaming (`streaming.StreamingDataset`) gives shard download/caching, stream mixing by
proportion, a deterministic shuffle per (seed, epoch) and a partition of every epoch over the
ranks of the run. Its own resume point is one *global* sample count, which assumes every rank
consumed the same number of samples. A packer does not: a rank that drew short documents
consumes more of them per batch. So we ask Streaming for this rank's sample order of an epoch
(`rank_sample_ids`) and keep our own per-rank position in it; resuming is an O(1) slice of
that order, with no sample read twice and none skipped.

Shard integrity: at start every shard file that index.json lists must be present with the
size it records (`check_shard_files`); with `validate_shards` (the default) each shard is
also hashed the first time a process reads from it (xxh64 when the converter recorded it),
and remote shards as Streaming downloads them. A missing, truncated or corrupt shard is a
one-line `DataError` naming the file, its dataset folder and what to do.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from flexbert.config.data import StreamConfig
from flexbert.data.errors import DataError

__all__ = [
    "RankInfo", "build_streaming_dataset", "rank_sample_ids", "DocumentReader", "detect_rank", "DataError",
    "check_shard_files", "ShardGuard",
]

log = logging.getLogger(__name__)

_INDEX = "index.json"
# Hash used to verify a shard, best first, among those its index.json records.
_HASH_PREFERENCE = ("xxh64", "xxh3_64", "xxh128", "sha1", "md5", "sha256")
_RECONVERT = "re-create the dataset with data_prep/convert_to_mds.py"
_NO_CHECK = "data.validate_shards: false skips this check"

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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()).rstrip(".") or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _read_index(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
            raise ValueError("no 'shards' list")
        return index
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"MDS index {path} is unreadable ({_one_line(e)}); {_RECONVERT}") from None


def check_shard_files(stream: StreamConfig) -> None:
    """Check the files a stream's index.json lists against the disk: present, of the recorded size.

    A local dataset (no `remote`) must hold every shard: the compressed file when the shard
    is compressed (a raw `.mds` beside it was decompressed by an earlier run), else the raw
    file. For a remote stream only the files already in the local cache are checked.

    Raises:
        DataError: naming the file, the dataset folder and what to do.
    """
    folder = os.path.join(stream.local, stream.split) if stream.split else stream.local
    index_path = os.path.join(folder, _INDEX)
    if stream.remote is not None and not os.path.isfile(index_path):
        return  # nothing cached yet
    index = _read_index(index_path)
    remote = stream.remote and (f"{stream.remote.rstrip('/')}/{stream.split}" if stream.split else stream.remote)
    for shard in index["shards"]:
        raw, zipped = shard.get("raw_data"), shard.get("zip_data")
        for info, primary in ((zipped, True), (raw, zipped is None)):
            if not info:
                continue
            path = os.path.join(folder, info["basename"])
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                if primary and remote is None:
                    raise DataError(f"MDS shard {path} is missing (listed in {index_path}); dataset {folder} is "
                                    f"incomplete: copy the file back or {_RECONVERT}") from None
                continue
            if size != info["bytes"]:
                what = "truncated or overwritten" if size < info["bytes"] else "overwritten"
                raise DataError(f"MDS shard {path} has {size} bytes but {index_path} records {info['bytes']} "
                                f"({what}); {_fix(path, folder, remote, primary, zipped)}")


def _fix(path: str, folder: str, remote: str | None, primary: bool, zipped: dict | None) -> str:
    """What to do about a bad shard file."""
    if remote is not None:
        return f"delete {path} and it is downloaded again from {remote}"
    if not primary and zipped:
        return f"delete {path} and it is decompressed again from {os.path.join(folder, zipped['basename'])}"
    return f"dataset {folder}: copy the file again or {_RECONVERT}"


def _pick_hash(hashes) -> str | None:
    for algo in _HASH_PREFERENCE:
        if algo in hashes:
            return algo
    return sorted(hashes)[0] if hashes else None


def _hash_file(path: str, algo: str) -> str:
    import xxhash

    h = getattr(xxhash, algo)() if algo in xxhash.algorithms_available else hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


# path -> (size, mtime_ns) of the shard files this process has hashed: each is hashed once,
# however many loaders, epochs and evaluations read it (forked loader workers inherit it).
_VERIFIED: dict[str, tuple[int, int]] = {}


class ShardGuard:
    """Verifies each shard once per process before its first read, and names the shard in errors.

    Args:
        dataset: the StreamingDataset.
        validate: hash shard files against index.json (when it records hashes).
    """

    def __init__(self, dataset, validate: bool = True):
        self.dataset, self.validate = dataset, validate
        self._checked: set[int] = set()

    def _where(self, shard_id: int) -> tuple[str, str | None, object, object]:
        stream = self.dataset.streams[int(self.dataset.stream_per_shard[shard_id])]
        folder = os.path.join(stream.local, stream.split) if stream.split else stream.local
        remote = stream.remote and (os.path.join(stream.remote, stream.split) if stream.split else stream.remote)
        raw, zipped = self.dataset.shards[shard_id].file_pairs[0]
        return folder, remote, raw, zipped

    def _verify(self, shard_id: int) -> None:
        folder, remote, raw, zipped = self._where(shard_id)
        for info, primary in ((raw, zipped is None), (zipped, True)):
            if info is None:
                continue
            path = os.path.join(folder, info.basename)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # compressed-only or not downloaded yet: Streaming validates what it fetches
            if _VERIFIED.get(path) == (st.st_size, st.st_mtime_ns):
                return
            algo = _pick_hash(info.hashes or {})
            if algo is None:
                return  # written without hashes: nothing to check against
            got = _hash_file(path, algo)
            if got != info.hashes[algo]:
                raise DataError(f"MDS shard {path} is corrupt: its {algo} is {got} but {os.path.join(folder, _INDEX)} "
                                f"records {info.hashes[algo]}; {_fix(path, folder, remote, primary, _zip_dict(zipped))} "
                                f"({_NO_CHECK})")
            _VERIFIED[path] = (st.st_size, st.st_mtime_ns)
            return  # the raw file, or the zip it is made from, is good

    def read(self, sample_id: int) -> dict:
        """Sample `sample_id` of the dataset; raises DataError naming the shard when it cannot be read."""
        shard_id, shard_sample = self.dataset.spanner[sample_id]
        if self.validate and shard_id not in self._checked:
            self._verify(shard_id)
            self._checked.add(shard_id)
        try:
            return self.dataset[sample_id]
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever Streaming raised, say which shard it was
            folder, remote, raw, zipped = self._where(shard_id)
            path = os.path.join(folder, (zipped or raw).basename)
            hint = "" if self.validate else "; data.validate_shards: true checks shard hashes"
            if "Checksum failure" in str(e):
                raise DataError(f"MDS shard {path} is corrupt: its hash differs from the one in its index.json; "
                                f"{_fix(path, folder, remote, True, _zip_dict(zipped))} ({_NO_CHECK})") from None
            raise DataError(f"MDS shard {path} cannot be read (sample {shard_sample} of the shard): {_one_line(e)}; "
                            f"{_fix(path, folder, remote, True, _zip_dict(zipped))}{hint}") from None


def _zip_dict(zipped) -> dict | None:
    return {"basename": zipped.basename} if zipped is not None else None


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
    validate_shards: bool = True,
):
    """Build a `streaming.StreamingDataset` over one or several (weighted) MDS streams.

    Args:
        streams: sources; local ones must contain index.json (checked, naming the path).
        shuffle / shuffle_seed / shuffle_algo: deterministic shuffle per (seed, epoch).
        num_canonical_nodes: Streaming's canonical nodes (None = number of physical nodes).
        epoch_size: samples per epoch for proportion-weighted streams (None = total samples).
        cache_limit: shard cache limit for remote streams.
        rank_info: the rank layout used to pick the default num_canonical_nodes.
        validate_shards: have Streaming hash remote shards as it downloads them (local ones
            are hashed by `ShardGuard`); the size check of `check_shard_files` always runs.
    """
    from streaming import Stream, StreamingDataset

    if not streams:
        raise ValueError("no streams given: set data 'streams' or 'local'")
    for s in streams:
        _check_local(s)
        check_shard_files(s)
    rank_info = rank_info or detect_rank()
    if num_canonical_nodes is None:
        # Streaming's own default for these algorithms; fixed now so it can be saved and checked.
        num_canonical_nodes = rank_info.num_nodes * (64 if shuffle_algo in ("py1s", "py2s") else 1)
    mds_streams = [
        Stream(local=s.local, remote=s.remote, split=s.split, proportion=s.proportion, repeat=s.repeat, choose=s.choose)
        for s in streams
    ]
    try:
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
    except Exception as e:  # noqa: BLE001 - a remote index that cannot be fetched: say which, in one line
        missing = [s for s in streams if s.remote is not None
                   and not os.path.isfile(os.path.join(s.local, s.split or "", _INDEX))]
        if not missing:
            raise
        s = missing[0]
        url = "/".join(p.strip("/") for p in (s.remote, s.split or "", _INDEX) if p)
        raise DataError(f"cannot fetch {url} ({_one_line(e)}); check the path, the credentials (AWS_ACCESS_KEY_ID / "
                        f"AWS_SECRET_ACCESS_KEY, or gcloud's) and S3_ENDPOINT_URL") from None
    if validate_shards:
        for stream_id, stream in enumerate(ds.streams):
            shard_ids = np.flatnonzero(ds.stream_per_shard == stream_id)
            hashes = ds.shards[shard_ids[0]].file_pairs[0][0].hashes if len(shard_ids) else {}
            if stream.remote is not None and hashes:
                stream.validate_hash = _pick_hash(hashes)  # Streaming hashes what it downloads
            if len(shard_ids) and not hashes:
                log.info("MDS data %s records no shard hashes: its shards are checked for size only; "
                         "convert it again with data_prep/convert_to_mds.py to record them", os.path.join(stream.local, stream.split))
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
        validate_shards: hash each shard before its first read in this process (ShardGuard).

    A shard that cannot be read ends the iteration with a `DataError` *yielded* in place of the
    document: raised by the consumer (`raise_data_errors`), it stays one line even when it
    happened in a DataLoader worker (which would otherwise wrap it in a worker traceback).
    """

    def __init__(self, dataset, ids: np.ndarray, start: int, fetch_size: int, validate_shards: bool = True):
        self.dataset, self.ids, self.start, self.fetch_size = dataset, ids, start, fetch_size
        self.validate_shards = validate_shards

    def __iter__(self) -> Iterator[np.ndarray]:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        n = len(self.ids)
        guard = ShardGuard(self.dataset, self.validate_shards)
        chunk_start = self.start + wid * self.fetch_size
        while chunk_start < n:
            for pos in range(chunk_start, min(chunk_start + self.fetch_size, n)):
                try:
                    sample = guard.read(int(self.ids[pos]))
                except DataError as e:
                    yield e
                    return
                yield np.asarray(sample["input_ids"])
            chunk_start += nworkers * self.fetch_size


def raise_data_errors(docs: Iterator) -> Iterator[np.ndarray]:
    """Pass documents through, raising a `DataError` that a DocumentReader yielded."""
    for doc in docs:
        if isinstance(doc, DataError):
            close = getattr(docs, "close", None)
            if close is not None:
                close()  # stops the DataLoader's workers now, not when garbage collected
            raise DataError(str(doc)) from None
        yield doc
