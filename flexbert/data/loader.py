"""The training / evaluation loaders: MDS documents -> best-fit packed rows -> MLM-masked batches.

Documents are read in the background by a torch DataLoader (its workers fetch this rank's
documents in order, see `flexbert.data.streaming.DocumentReader`); packing and masking run in
the main process, where the loader's state lives. The state (`state_dict`) is this rank's
position in its epoch order plus the packer's pending documents and counters: after
`load_state_dict` a freshly built loader yields exactly the batches the interrupted one would
have, without re-reading earlier documents.

Under DDP/FSDP every rank has its own state (ranks consume documents at different rates),
so the trainer saves one loader state per rank.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from flexbert.config.data import DataConfig, StreamConfig
from flexbert.data.batching import pad_rows
from flexbert.data.masking import MLMMasker
from flexbert.data.packed_batch import PackedBatch
from flexbert.data.batch_size_warmup import BatchSizeWarmup
from flexbert.data.packer import SequencePacker
from flexbert.data.streaming import (DocumentReader, RankInfo, build_streaming_dataset, detect_rank, raise_data_errors,
                                     rank_sample_ids)

__all__ = ["PackedMLMLoader", "build_train_loader", "build_eval_loader"]

_STATE_VERSION = 1


def _keep_list(items: list) -> list:
    # Documents have different lengths: hand the fetch over as a list, packing does the rest.
    return items


class PackedMLMLoader:
    """Iterable of packed, masked batches (CPU tensors) with resumable state.

    Args:
        dataset: StreamingDataset over the MDS shards.
        rank_info: this process's data-parallel rank.
        packer: the best-fit packer (owns pending documents and counters).
        masker: MLM masker (owns the masking rate).
        warmup: rows per batch as a function of tokens emitted.
        num_workers / prefetch_factor / fetch_size: background document reading.
        pad_to_budget / pad_token_id: pad every row to max_seq_len.
        vocab_size: ids must be below it (checked per batch, a cheap max).
        finite: evaluation mode: one pass over the data, restarting at every `iter()`.
        validate_shards: hash each shard against index.json before its first read in a process.
    """

    def __init__(self, dataset, *, rank_info: RankInfo, packer: SequencePacker, masker: MLMMasker, warmup: BatchSizeWarmup,
                 num_workers: int = 0, prefetch_factor: int = 2, fetch_size: int = 64, pad_to_budget: bool = False,
                 pad_token_id: int = 0, vocab_size: int | None = None, finite: bool = False, validate_shards: bool = True):
        self.dataset, self.rank_info = dataset, rank_info
        self.packer, self.masker, self.warmup = packer, masker, warmup
        self.num_workers, self.prefetch_factor, self.fetch_size = num_workers, prefetch_factor, fetch_size
        self.pad_to_budget, self.pad_token_id, self.vocab_size = pad_to_budget, pad_token_id, vocab_size
        self.finite, self.validate_shards = finite, validate_shards
        self._initial_packer_state = packer.state_dict()
        self.epoch = 0
        self.sample_in_epoch = 0  # position in this rank's order of `epoch` (documents pushed)
        self._ids: np.ndarray | None = None  # this rank's order for `epoch`, built lazily
        self._docs: Iterator[np.ndarray] | None = None  # documents from sample_in_epoch on
        self._stats: dict = {}

    # ---- masking rate (a schedule may change it between batches) -------------------------------
    @property
    def mlm_probability(self) -> float:
        return self.masker.mlm_probability

    @mlm_probability.setter
    def mlm_probability(self, value: float) -> None:
        self.masker.mlm_probability = value

    # ---- reading documents ----------------------------------------------------------------------
    def _epoch_ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = rank_sample_ids(self.dataset, self.epoch, self.rank_info)
        return self._ids

    def _open_documents(self) -> Iterator[np.ndarray]:
        reader = DocumentReader(self.dataset, self._epoch_ids(), self.sample_in_epoch, self.fetch_size, self.validate_shards)
        dl = DataLoader(reader, batch_size=self.fetch_size, num_workers=self.num_workers, collate_fn=_keep_list,
                        prefetch_factor=self.prefetch_factor if self.num_workers else None)
        return raise_data_errors(doc for fetch in dl for doc in fetch)

    def _next_document(self) -> np.ndarray | None:
        """The next document of this rank, moving to the next epoch at the end (None: finite and done)."""
        for _ in range(2):
            if self._docs is None:
                self._docs = self._open_documents()
            doc = next(self._docs, None)
            if doc is not None:
                self.sample_in_epoch += 1
                return doc
            self._docs = None
            if self.finite:
                return None
            if self.sample_in_epoch == 0:
                raise RuntimeError(f"rank {self.rank_info.rank} got no samples in epoch {self.epoch}: the dataset is smaller than the world size")
            self.epoch, self.sample_in_epoch, self._ids = self.epoch + 1, 0, None
        raise AssertionError("unreachable: an epoch that just started has samples")

    # ---- iteration --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PackedBatch]:
        if self.finite:
            self._restart()  # every evaluation is the same pass over the data
        exhausted = False
        while True:
            rows = self.warmup.rows(self.packer.budget_tokens_emitted)
            while not exhausted and self.packer.needs_more(rows):
                doc = self._next_document()
                if doc is None:
                    exhausted = True
                    break
                self.packer.push(doc)
            batch_index = self.packer.batches_emitted
            batch = self.packer.pack(rows)
            if batch is None:
                return
            yield self._finish(batch, batch_index, rows)
            if exhausted and self.packer.num_pending == 0:
                return

    def _finish(self, batch: PackedBatch, batch_index: int, rows: int) -> PackedBatch:
        ids = batch.input_ids
        if self.vocab_size is not None and len(ids) and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(ids.max())} >= vocab_size {self.vocab_size}: the MDS shards were made with another tokenizer")
        # Stats of the packing itself, before padding adds its segments.
        stats = {"packing_efficiency": batch.packing_efficiency, "num_docs": batch.num_docs}
        if self.pad_to_budget:
            batch = pad_rows(batch, self.packer.max_seq_len, self.pad_token_id)
        batch.input_ids, batch.labels = self.masker(batch.input_ids, batch_index)
        self._stats = dict(stats, rows=rows, num_tokens=batch.num_tokens, batch_index=batch_index,
                           pending_docs=self.packer.num_pending, chunked_docs=self.packer.chunked_docs,
                           truncated_tokens=self.packer.truncated_tokens)
        return batch

    def stats(self) -> dict:
        """Metrics of the last batch: packing_efficiency, num_docs, rows, num_tokens, pending_docs, ..."""
        return dict(self._stats)

    def _restart(self) -> None:
        self.packer.load_state_dict(self._initial_packer_state)
        self.epoch, self.sample_in_epoch, self._ids, self._docs = 0, 0, None, None

    # ---- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This rank's resumable state: ints and small tensors (torch.load(weights_only=True) safe)."""
        return {
            "version": _STATE_VERSION,
            "rank": self.rank_info.rank,
            "world_size": self.rank_info.world_size,
            "shuffle_seed": int(self.dataset.shuffle_seed),
            "num_canonical_nodes": int(self.dataset.num_canonical_nodes),
            "epoch": self.epoch,
            "sample_in_epoch": self.sample_in_epoch,
            "packer": self.packer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (saved by this rank with the same data order settings)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown loader state version {state.get('version')}; expected {_STATE_VERSION}")
        mine = {"rank": self.rank_info.rank, "world_size": self.rank_info.world_size,
                "shuffle_seed": int(self.dataset.shuffle_seed), "num_canonical_nodes": int(self.dataset.num_canonical_nodes)}
        for key, value in mine.items():
            if int(state[key]) != value:
                raise ValueError(f"loader state has {key}={state[key]} but this loader has {value}: resume with the same "
                                 f"world size, data.shuffle_seed and data.num_canonical_nodes (each rank loads its own state)")
        self.packer.load_state_dict(state["packer"])
        self.epoch, self.sample_in_epoch = int(state["epoch"]), int(state["sample_in_epoch"])
        self._ids, self._docs = None, None


def _build(cfg: DataConfig, streams: list[StreamConfig], *, shuffle: bool, device_batch_rows: int, special_ids: Iterable[int],
           mask_token_id: int, vocab_size: int, pad_token_id: int, rank_info: RankInfo | None, warmup: BatchSizeWarmup | None,
           finite: bool, num_workers: int) -> PackedMLMLoader:
    rank_info = rank_info or detect_rank()
    dataset = build_streaming_dataset(streams, shuffle=shuffle, shuffle_seed=cfg.shuffle_seed, shuffle_algo=cfg.shuffle_algo,
                                      num_canonical_nodes=cfg.num_canonical_nodes, epoch_size=cfg.epoch_size,
                                      cache_limit=cfg.cache_limit, rank_info=rank_info, validate_shards=cfg.validate_shards)
    packer = SequencePacker(cfg.max_seq_len, cfg.long_documents, cfg.packing_buffer_docs)
    masker = MLMMasker(set(special_ids) | {pad_token_id}, mask_token_id, vocab_size, cfg.mlm_probability, cfg.mask_token_ratio,
                       cfg.random_token_ratio, seed=cfg.masking_seed, rank=rank_info.rank)
    warmup = warmup or BatchSizeWarmup(device_batch_rows, None, 0)
    return PackedMLMLoader(dataset, rank_info=rank_info, packer=packer, masker=masker, warmup=warmup, num_workers=num_workers,
                           prefetch_factor=cfg.prefetch_factor, fetch_size=cfg.fetch_size, pad_to_budget=cfg.pad_to_budget,
                           pad_token_id=pad_token_id, vocab_size=vocab_size, finite=finite,
                           validate_shards=cfg.validate_shards)


def build_train_loader(cfg: DataConfig, *, device_batch_rows: int, special_ids: Iterable[int], mask_token_id: int, vocab_size: int,
                       pad_token_id: int, rank_info: RankInfo | None = None, batch_size_warmup_min_rows: int | None = None,
                       batch_size_warmup_tokens: int = 0, batch_size_warmup_granularity: int = 1) -> PackedMLMLoader:
    """Endless loader of packed, masked training batches for this rank.

    Args:
        cfg: the data config (streams, packing, masking).
        device_batch_rows: R, rows of max_seq_len tokens per device batch (after warmup).
        special_ids: ids never masked (cls, sep, pad, mask, unk); pad and mask are added anyway.
        mask_token_id / vocab_size / pad_token_id: from the tokenizer / model config.
        rank_info: data-parallel rank (None: from RANK / WORLD_SIZE / LOCAL_WORLD_SIZE).
        batch_size_warmup_min_rows: rows at the start of batch-size warmup (None: no warmup).
        batch_size_warmup_tokens: global tokens over which rows grow to device_batch_rows.
        batch_size_warmup_granularity: rows are a multiple of this during warmup (e.g. the
            microbatch rows, so gradient accumulation splits evenly).
    """
    rank_info = rank_info or detect_rank()
    warmup = BatchSizeWarmup(device_batch_rows, batch_size_warmup_min_rows, batch_size_warmup_tokens,
                             rank_info.world_size, batch_size_warmup_granularity)
    return _build(cfg, cfg.train_streams(), shuffle=cfg.shuffle, device_batch_rows=device_batch_rows, special_ids=special_ids,
                  mask_token_id=mask_token_id, vocab_size=vocab_size, pad_token_id=pad_token_id, rank_info=rank_info,
                  warmup=warmup, finite=False, num_workers=cfg.num_workers)


def build_eval_loader(cfg: DataConfig, *, device_batch_rows: int, special_ids: Iterable[int], mask_token_id: int, vocab_size: int,
                      pad_token_id: int, rank_info: RankInfo | None = None) -> PackedMLMLoader:
    """One-pass validation loader: no shuffle, fixed masks, the same batches at every evaluation.

    Args: as `build_train_loader`; the streams are `cfg.validation_streams()` (eval_streams, or
    the training streams at eval_split).
    """
    streams = cfg.validation_streams()
    if not streams:
        raise ValueError("no validation data: set data.eval_streams or data.eval_split")
    return _build(cfg, streams, shuffle=False, device_batch_rows=device_batch_rows, special_ids=special_ids,
                  mask_token_id=mask_token_id, vocab_size=vocab_size, pad_token_id=pad_token_id, rank_info=rank_info,
                  warmup=None, finite=True, num_workers=cfg.num_workers)
