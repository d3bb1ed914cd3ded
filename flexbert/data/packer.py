"""Greedy packing of whole documents into rows of `max_seq_len` tokens, over a buffer.

The packer keeps a buffer of pending documents in arrival order. For each device batch of R
rows it fills the rows one by one: the oldest pending document opens the row and older
documents keep filling it while an average document would still fit after them; then the row
is closed with the single document or pair, from anywhere in the buffer, that fills it best.
Every row consumes the oldest document, so none waits more than about buffer/R batches, and
consuming in arrival order keeps the buffer's length mix unbiased (a largest-first policy
starves the buffer of the lengths that close rows and drops to ~99.2% on Normal(256, 64)).
The output is the packed batch of docs/ARCHITECTURE.md (flat tokens, cu_seqlens,
position_ids restarting per document, row_offsets); labels are added by the masker.

The packer is stateful and its state is small tensors and ints (torch.load(weights_only=True)
safe): the pending documents' tokens and the counters. It has no randomness.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

__all__ = ["SequencePacker", "BatchSizeWarmup"]


class BatchSizeWarmup:
    """Rows per device batch growing linearly from `min_rows` to `max_rows` over `warmup_tokens`.

    Progress is counted in *budget* tokens (rows x max_seq_len, times world_size): it is the
    same on every rank at every step, so all ranks agree on the batch size without talking.
    Real tokens differ from the budget by the packing loss (< 0.5%).

    Args:
        max_rows: full rows per device batch.
        min_rows: rows at the start (None or >= max_rows: no warmup).
        warmup_tokens: global budget tokens over which rows grow (0: no warmup).
        world_size: data-parallel ranks (their batches count toward the global tokens).
        granularity: rows are rounded down to a multiple of this (>= min_rows always).
    """

    def __init__(self, max_rows: int, min_rows: int | None, warmup_tokens: int, world_size: int = 1, granularity: int = 1):
        if max_rows < 1:
            raise ValueError(f"device batch rows must be >= 1, got {max_rows}")
        if min_rows is not None and min_rows < 1:
            raise ValueError(f"batch_size_warmup_min_rows must be >= 1, got {min_rows}")
        if warmup_tokens < 0 or granularity < 1:
            raise ValueError(f"batch_size_warmup_tokens must be >= 0 and granularity >= 1, got {warmup_tokens}, {granularity}")
        self.max_rows, self.warmup_tokens = max_rows, warmup_tokens
        self.min_rows = max_rows if min_rows is None else min(min_rows, max_rows)
        self.world_size = world_size
        self.granularity = granularity

    def rows(self, budget_tokens_emitted: int) -> int:
        """Rows of the next batch after this rank emitted `budget_tokens_emitted` budget tokens."""
        if self.warmup_tokens <= 0 or self.min_rows >= self.max_rows:
            return self.max_rows
        frac = min(1.0, budget_tokens_emitted * self.world_size / self.warmup_tokens)
        rows = self.min_rows + (self.max_rows - self.min_rows) * frac
        rows = int(rows) // self.granularity * self.granularity
        return max(self.min_rows, min(self.max_rows, rows))


def _close(lens: np.ndarray, gap: int) -> list[int]:
    """Positions in the ascending `lens` of the single document or pair that best fills `gap`.

    Args:
        lens: (n,) int64 pending lengths, ascending, lens[0] <= gap.
        gap: free tokens left in the row.
    """
    j = int(np.searchsorted(lens, gap, side="right")) - 1  # largest single that fits
    if len(lens) < 2 or lens[j] == gap:
        return [j]
    # For each i, its largest partner k != i with lens[k] <= gap - lens[i].
    k = np.searchsorted(lens, gap - lens, side="right") - 1
    k = np.where(k == np.arange(len(lens)), k - 1, k)
    sums = np.where(k >= 0, lens + lens[np.maximum(k, 0)], -1)
    i = int(np.argmax(sums))
    return [i, int(k[i])] if sums[i] > lens[j] else [j]


class SequencePacker:
    """Stateful greedy best-fit packer of documents into R rows of `max_seq_len` tokens.

    Args:
        max_seq_len: row capacity in tokens.
        long_documents: "split" cuts longer documents into chunks of at most max_seq_len
            (each chunk its own attention segment); "truncate" keeps the first max_seq_len tokens.
        buffer_docs: surplus of pending documents (beyond one batch's tokens) wanted before packing.
    """

    def __init__(self, max_seq_len: int, long_documents: str = "split", buffer_docs: int = 256):
        if long_documents not in ("split", "truncate"):
            raise ValueError(f"long_documents must be 'split' or 'truncate', got {long_documents!r}")
        self.max_seq_len, self.long_documents = max_seq_len, long_documents
        self.buffer_docs = buffer_docs
        self._docs: list[np.ndarray] = []  # pending documents (chunks), arrival order
        self._pending_tokens = 0
        self.samples_consumed = 0  # source documents pushed
        self.batches_emitted = 0
        self.tokens_emitted = 0  # real tokens in emitted batches
        self.budget_tokens_emitted = 0  # rows x max_seq_len of emitted batches
        self.chunked_docs = 0  # source documents split into chunks
        self.chunked_tokens = 0  # tokens of those documents
        self.truncated_docs = 0
        self.truncated_tokens = 0  # tokens dropped by truncation

    # ---- input -------------------------------------------------------------------------------
    def push(self, doc: np.ndarray) -> None:
        """Add one source document (1-D token ids) to the pending buffer, chunked or truncated."""
        doc = np.asarray(doc).reshape(-1)
        self.samples_consumed += 1
        n, cap = len(doc), self.max_seq_len
        if n == 0:
            return
        if n <= cap:
            pieces = [doc]
        elif self.long_documents == "truncate":
            self.truncated_docs += 1
            self.truncated_tokens += n - cap
            pieces = [doc[:cap]]
        else:
            self.chunked_docs += 1
            self.chunked_tokens += n
            pieces = [doc[i : i + cap] for i in range(0, n, cap)]
        for p in pieces:
            self._docs.append(p)
            self._pending_tokens += len(p)

    def needs_more(self, rows: int) -> bool:
        """Whether the buffer wants more documents before packing a batch of `rows` rows.

        True until the pending tokens exceed the batch's capacity by `buffer_docs` documents of
        average length: n * (tokens - R*S) >= buffer_docs * tokens.
        """
        cap = rows * self.max_seq_len
        n, tok = len(self._docs), self._pending_tokens
        return tok < cap or n * (tok - cap) < self.buffer_docs * tok

    @property
    def num_pending(self) -> int:
        return len(self._docs)

    # ---- packing -----------------------------------------------------------------------------
    def pack(self, rows: int) -> dict | None:
        """Pack pending documents into `rows` rows; None if nothing is pending.

        Returns the packed batch without labels: input_ids (T,) int64, position_ids (T,) int64,
        cu_seqlens (D+1,) int32, max_seqlen int, row_offsets (R+1,) int64, row_num_tokens (R,)
        int64, num_tokens int, plus `packing_efficiency` float (T / (R*max_seq_len)) and
        `num_docs` int. Rows left empty (only at the end of a finite stream) are kept, so R is
        always `rows`.
        """
        if not self._docs:
            return None
        lengths = np.fromiter((len(d) for d in self._docs), dtype=np.int64, count=len(self._docs))
        n, mean = len(lengths), float(lengths.mean())
        by_len = np.argsort(lengths, kind="stable")  # ties by arrival order: deterministic
        placed = np.zeros(n, dtype=bool)
        head = 0  # oldest pending document
        row_docs: list[list[int]] = []
        for _ in range(rows):
            gap, docs = self.max_seq_len, []
            while True:
                while head < n and placed[head]:
                    head += 1
                # The oldest document opens every row (so none waits long) and goes on filling
                # it while an average document still fits after it.
                if head < n and lengths[head] <= gap and (not docs or gap - lengths[head] >= mean):
                    picks = [head]
                else:  # close the row with the best single or pair from the whole buffer
                    avail = by_len[~placed[by_len]]
                    if not len(avail) or lengths[avail[0]] > gap:
                        break
                    picks = [int(avail[p]) for p in _close(lengths[avail], gap)]
                for d in picks:
                    docs.append(d)
                    placed[d] = True
                    gap -= int(lengths[d])
            row_docs.append(docs)
        batch = self._assemble([d for r in row_docs for d in r], [len(r) for r in row_docs], lengths)
        self._docs = [d for d, p in zip(self._docs, placed) if not p]
        self._pending_tokens -= batch["num_tokens"]
        self.batches_emitted += 1
        self.tokens_emitted += batch["num_tokens"]
        self.budget_tokens_emitted += rows * self.max_seq_len
        return batch

    def _assemble(self, doc_ids: list[int], docs_per_row: list[int], lengths: np.ndarray) -> dict:
        rows = len(docs_per_row)
        lens = lengths[doc_ids] if doc_ids else np.zeros(0, np.int64)
        ids = np.concatenate([self._docs[i] for i in doc_ids]).astype(np.int64) if doc_ids else np.zeros(0, np.int64)
        cu = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=cu[1:])
        # position = token index - start of its document
        positions = np.arange(len(ids), dtype=np.int64) - np.repeat(cu[:-1], lens)
        doc_row_end = np.cumsum(docs_per_row)
        row_offsets = np.zeros(rows + 1, np.int64)
        row_offsets[1:] = cu[doc_row_end]
        total = int(cu[-1])
        return {
            "input_ids": torch.from_numpy(ids),
            "position_ids": torch.from_numpy(positions),
            "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
            "max_seqlen": int(lens.max()) if len(lens) else 0,
            "row_offsets": torch.from_numpy(row_offsets),
            "row_num_tokens": torch.from_numpy(np.diff(row_offsets)),
            "num_tokens": total,
            "packing_efficiency": total / (rows * self.max_seq_len),
            "num_docs": len(lens),
        }

    # ---- state -------------------------------------------------------------------------------
    _COUNTERS = (
        "samples_consumed", "batches_emitted", "tokens_emitted", "budget_tokens_emitted",
        "chunked_docs", "chunked_tokens", "truncated_docs", "truncated_tokens",
    )

    def state_dict(self) -> dict:
        """Pending documents (flat int32 tokens + lengths, arrival order) and counters; weights_only-safe."""
        lengths = [len(d) for d in self._docs]
        # int32 holds any vocabulary and halves the checkpoint size of the buffer.
        flat = np.concatenate(self._docs).astype(np.int32) if self._docs else np.zeros(0, np.int32)
        state = {k: int(getattr(self, k)) for k in self._COUNTERS}
        state.update(
            max_seq_len=self.max_seq_len,
            buffer_tokens=torch.from_numpy(flat),
            buffer_lengths=torch.tensor(lengths, dtype=torch.int64),
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the pending buffer and counters saved by `state_dict`."""
        if int(state["max_seq_len"]) != self.max_seq_len:
            raise ValueError(f"packer state was saved with max_seq_len {state['max_seq_len']}, this loader uses {self.max_seq_len}")
        lengths = state["buffer_lengths"].tolist()
        flat = state["buffer_tokens"].numpy()
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._docs = [flat[offsets[i] : offsets[i + 1]].copy() for i in range(len(lengths))]
        self._pending_tokens = int(offsets[-1])
        for k in self._COUNTERS:
            setattr(self, k, int(state[k]))

    def extend(self, docs: Iterable[np.ndarray]) -> None:
        """Push several documents (convenience for tests and benchmarks)."""
        for d in docs:
            self.push(d)
