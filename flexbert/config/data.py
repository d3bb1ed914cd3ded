"""Data config: where the MDS shards live and how they become packed, masked batches.

Decoded from YAML with `flexbert.config.strict.decode(DataConfig, node, source=path)`.
Defaults live only here. Token ids (pad, mask, special ids, vocabulary size) are not part of
this config: they come from the tokenizer / model config when the loader is built.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["StreamConfig", "DataConfig"]


@dataclass
class StreamConfig:
    """One source of MDS shards (a Streaming `Stream`), optionally weighted against the others.

    Args:
        local: local directory holding (or caching) the shards; must contain index.json when
            `remote` is not set.
        remote: remote prefix (s3://, gs://, oci://, hf://, a path, ...) to stream shards from.
        split: sub-directory of `local` / `remote` (e.g. "train", "val").
        proportion: relative weight of this stream in the mix (all streams or none set it).
        repeat: absolute up/down-sampling factor of this stream per epoch.
        choose: absolute number of samples drawn from this stream per epoch.
    """

    local: str
    remote: str | None = None
    split: str | None = None
    proportion: float | None = None
    repeat: float | None = None
    choose: int | None = None

    def __post_init__(self):
        if not self.local:
            raise ValueError("a stream needs 'local' (the shard directory, or the cache directory when 'remote' is set)")
        set_weights = [k for k in ("proportion", "repeat", "choose") if getattr(self, k) is not None]
        if len(set_weights) > 1:
            raise ValueError(f"set at most one of proportion / repeat / choose for stream '{self.local}', got {', '.join(set_weights)}")
        for k in set_weights:
            if getattr(self, k) < 0:
                raise ValueError(f"stream '{self.local}': {k} must be >= 0, got {getattr(self, k)}")


@dataclass
class DataConfig:
    """How MDS documents are streamed, packed into rows of `max_seq_len` tokens and masked.

    Args:
        streams: the training sources; several streams are mixed by their weights.
        local / remote / split: shorthand for a single stream (use either this or `streams`).
        eval_streams: validation sources; when empty, `eval_split` applied to `streams` is used.
        eval_split: split of the training streams used for validation (e.g. "val"); None = no eval.
        max_seq_len: capacity of one packed row in tokens (the training context length).
        shuffle / shuffle_seed / shuffle_algo: Streaming's deterministic shuffle of the documents.
        num_canonical_nodes: Streaming's canonical node count (None = physical nodes at start).
        epoch_size: samples per epoch when streams are weighted by proportion (None = dataset size).
        cache_limit: Streaming shard cache limit for remote streams (e.g. "100gb"), None = no limit.
        validate_shards: check each shard against the hash its index.json records (xxh64 when
            data_prep/convert_to_mds.py wrote it): local shards once per process before their
            first read, remote ones as they are downloaded. false skips the hashing; files
            missing or of the wrong size are reported at start either way.
        num_workers: DataLoader worker processes reading documents in the background.
        prefetch_factor: fetches each worker keeps in flight (num_workers > 0 only).
        fetch_size: documents per background fetch (the DataLoader batch size of raw documents).
        packing_buffer_docs: surplus of pending documents, beyond one batch's worth of tokens,
            that the best-fit packer can choose from (larger = fuller rows, more memory).
        long_documents: "split" cuts documents longer than max_seq_len into chunks (each its own
            attention segment); "truncate" keeps the first max_seq_len tokens (dropped tokens counted).
        mlm_probability: fraction of non-special tokens selected for the MLM loss.
        mask_token_ratio / random_token_ratio: of the selected tokens, the share replaced by
            [MASK] and by a random non-special token; the rest keep their id.
        masking_seed: base seed of the masks (mixed with the batch index and the rank).
        pad_to_budget: pad every row to max_seq_len (static shapes, e.g. for compilation).
    """

    streams: list[StreamConfig] = field(default_factory=list)
    local: str | None = None
    remote: str | None = None
    split: str | None = None
    eval_streams: list[StreamConfig] = field(default_factory=list)
    eval_split: str | None = None
    max_seq_len: int = 1024
    shuffle: bool = True
    shuffle_seed: int = 17
    shuffle_algo: Literal["py1e", "py1br", "py1b", "py1s", "py2s", "naive"] = "py1e"
    num_canonical_nodes: int | None = None
    epoch_size: int | None = None
    cache_limit: str | None = None
    validate_shards: bool = True
    num_workers: int = 0
    prefetch_factor: int = 2
    fetch_size: int = 64
    packing_buffer_docs: int = 256
    long_documents: Literal["split", "truncate"] = "split"
    mlm_probability: float = 0.3
    mask_token_ratio: float = 0.8
    random_token_ratio: float = 0.1
    masking_seed: int = 1234
    pad_to_budget: bool = False

    def __post_init__(self):
        if self.streams and (self.local or self.remote):
            raise ValueError("give either 'streams' (a list) or the 'local'/'remote' shorthand, not both")
        if not self.streams and not (self.local or self.remote):
            raise ValueError("no training data: set 'streams' (a list of {local, remote, split, proportion}) or 'local'")
        if self.remote and not self.local:
            raise ValueError("'remote' needs 'local' too: the directory where shards are cached")
        if self.max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {self.max_seq_len}")
        if self.num_canonical_nodes is not None and self.num_canonical_nodes < 1:
            raise ValueError(f"num_canonical_nodes must be >= 1 or null, got {self.num_canonical_nodes}")
        if self.shuffle_seed < 0:
            raise ValueError(f"shuffle_seed must be >= 0 (Streaming requires it), got {self.shuffle_seed}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.fetch_size < 1:
            raise ValueError(f"fetch_size must be >= 1, got {self.fetch_size}")
        if self.packing_buffer_docs < 0:
            raise ValueError(f"packing_buffer_docs must be >= 0, got {self.packing_buffer_docs}")
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        for name in ("mask_token_ratio", "random_token_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mask_token_ratio + self.random_token_ratio > 1.0 + 1e-9:
            raise ValueError(
                f"mask_token_ratio + random_token_ratio must be <= 1 (the rest keep their token), "
                f"got {self.mask_token_ratio} + {self.random_token_ratio}"
            )
        self._check_weights(self.streams, "streams")
        self._check_weights(self.eval_streams, "eval_streams")

    @staticmethod
    def _check_weights(streams: list[StreamConfig], key: str) -> None:
        # Streaming refuses to mix relative (proportion) and absolute (repeat/choose) weights.
        has_prop = [s.proportion is not None for s in streams]
        if any(has_prop) and not all(has_prop):
            raise ValueError(f"either every entry of '{key}' sets 'proportion' or none does")
        if any(has_prop) and any(s.repeat is not None or s.choose is not None for s in streams):
            raise ValueError(f"'{key}' mixes 'proportion' with 'repeat'/'choose'; use one kind of weight")

    def train_streams(self) -> list[StreamConfig]:
        """The training streams, expanding the single-stream shorthand."""
        if self.streams:
            return list(self.streams)
        return [StreamConfig(local=self.local, remote=self.remote, split=self.split)]

    def validation_streams(self) -> list[StreamConfig]:
        """The validation streams (explicit ones, else the train streams at `eval_split`); may be empty."""
        if self.eval_streams:
            return list(self.eval_streams)
        if self.eval_split is None:
            return []
        # Relative weights of the training mix are kept; absolute choose/repeat are per split sizes.
        return [dataclasses.replace(s, split=self.eval_split, repeat=None, choose=None) for s in self.train_streams()]
