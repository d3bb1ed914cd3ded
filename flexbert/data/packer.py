"""Greedy packing of whole documents into rows of `max_seq_len` tokens, over a buffer.

The packer keeps a buffer of pending documents in arrival order. For each device batch of R
rows it fills the rows one by one: the oldest pending document opens the row and older
documents keep filling it while an average document would still fit after them; then the row
is closed with the single document or pair, from anywhere in the buffer, that fills it best.
Rows mostly consume the oldest document, and no document waits more than about eight buffer
turnovers (see SequencePacker); consuming in arrival order keeps the buffer's length mix unbiased (a largest-first policy
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


def _close(lens: np.ndarray, gap: int, tol: int = 0) -> list[int]:
    """Positions in the ascending `lens` of the single document or pair that best fills `gap`.

    Args:
        lens: (n,) int64 pending lengths, ascending, lens[0] <= gap.
        gap: free tokens left in the row.
        tol: a single document leaving at most this many tokens free is taken without looking
            for a pair (short documents are what long ones need to close their rows).
    """
    j = int(np.searchsorted(lens, gap, side="right")) - 1  # largest single that fits
    if len(lens) < 2 or gap - lens[j] <= tol:
        return [j]
    # For each i, its largest partner k != i with lens[k] <= gap - lens[i].
    k = np.searchsorted(lens, gap - lens, side="right") - 1
    k = np.where(k == np.arange(len(lens)), k - 1, k)
    sums = np.where(k >= 0, lens + lens[np.maximum(k, 0)], -1)
    i = int(np.argmax(sums))
    return [i, int(k[i])] if sums[i] > lens[j] else [j]


# A piece cut from a long document to fill a row is at least this long (and so is what is left
# of the document), so that no chunk is a handful of tokens without context.
_MIN_CHUNK = 64
# Openers tried per row when the oldest document leaves a gap the buffer cannot close well.
_OPENER_CANDIDATES = 8
# A document older than _SOFT_AGE x (pending documents) arrivals opens its row when that row
# closes within 1%; older than _HARD_AGE x, it opens its row whatever the waste.
_SOFT_AGE = 2
_HARD_AGE = 8


class SequencePacker:
    """Stateful best-fit packer of documents into R rows of `max_seq_len` tokens.

    Documents of at most max_seq_len tokens are placed whole. With long_documents="split" a
    longer document stays one pending item that rows take pieces from: a piece fills whatever
    space a row has left (up to max_seq_len, never shorter than min(64, max_seq_len // 8)
    tokens, nor leaving less than that), and each piece is its own attention segment. Long
    documents are thus chunks that fill rows exactly instead of cut at max_seq_len.

    Rows are filled as follows: the oldest pending document opens the row (pieces of a long
    one fill it); older documents keep filling it while an average document would still fit;
    then the row is closed with the single document or pair, from anywhere in the buffer, that
    fills it best, and pieces of long documents fill what is left. When few documents fit in a
    row (the gap left by the opener is under two average documents) and the oldest document's
    best close wastes more than 0.1% of the row, up to 8 oldest documents are tried as openers
    and the one with the fullest row wins (longer on ties). If none of them closes its row within
    1% (at ~2 documents per row the oldest and longest are long documents waiting for a short
    partner), the longest available document whose best single partner closes the row within
    0.1% opens it instead. Fairness: a document that more than 2 x (pending documents) newer
    documents arrived after opens its row as soon as that row closes within 1%, and after
    8 x (pending documents) it opens its row whatever the waste, so no document waits more than
    about eight buffer turnovers.

    Args:
        max_seq_len: row capacity in tokens.
        long_documents: "split" packs longer documents as chunks of at most max_seq_len
            (each chunk its own attention segment); "truncate" keeps the first max_seq_len tokens.
        buffer_docs: surplus of pending documents (beyond one batch's tokens) wanted before packing.
    """

    def __init__(self, max_seq_len: int, long_documents: str = "split", buffer_docs: int = 256):
        if long_documents not in ("split", "truncate"):
            raise ValueError(f"long_documents must be 'split' or 'truncate', got {long_documents!r}")
        self.max_seq_len, self.long_documents = max_seq_len, long_documents
        self.buffer_docs = buffer_docs
        self.min_chunk = max(1, min(_MIN_CHUNK, max_seq_len // 8))
        self._docs: list[np.ndarray] = []  # pending documents (or what is left of long ones), arrival order
        self._seq: list[int] = []  # arrival number of each pending document (samples_consumed at push)
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
        """Add one source document (1-D token ids) to the pending buffer (truncated if so configured)."""
        doc = np.asarray(doc).reshape(-1)
        self.samples_consumed += 1
        n, cap = len(doc), self.max_seq_len
        if n == 0:
            return
        if n > cap:
            if self.long_documents == "truncate":
                self.truncated_docs += 1
                self.truncated_tokens += n - cap
                doc = doc[:cap]
            else:
                self.chunked_docs += 1
                self.chunked_tokens += n
        self._docs.append(doc)
        self._seq.append(self.samples_consumed)
        self._pending_tokens += len(doc)

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
    def _piece(self, left: int, gap: int, more: bool) -> int:
        """Tokens to cut from a long document with `left` tokens for a row with `gap` free (0: none).

        `more`: another long document can fill what this piece leaves of the row.
        """
        m = self.min_chunk
        if left <= gap:
            return left
        if left - gap >= m:
            return gap
        # Cutting `gap` would leave less than a minimal chunk: leave room for a minimal piece of
        # the next long document instead, or leave a minimal chunk of this one behind.
        k = gap - m if more and gap - m >= m else left - m
        return k if k >= m else 0

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
        cap = self.max_seq_len
        lengths = np.fromiter((len(d) for d in self._docs), dtype=np.int64, count=len(self._docs))
        n = len(lengths)
        split = lengths > cap  # long documents: rows take pieces of them
        taken = np.zeros(n, dtype=np.int64)  # tokens of each document placed in this batch
        mean = float(np.minimum(lengths, cap).mean())
        whole = np.flatnonzero(~split)
        by_len = whole[np.argsort(lengths[whole], kind="stable")]  # ties by arrival order: deterministic
        placed = split.copy()  # whole documents placed; long ones never enter the best-fit search
        overdue_seq = self.samples_consumed - _SOFT_AGE * n  # these open a row if it closes well
        forced_seq = self.samples_consumed - _HARD_AGE * n  # these open a row whatever the waste
        seq = np.asarray(self._seq, dtype=np.int64)
        long_ids = list(np.flatnonzero(split))
        long_pos = 0  # first long document with tokens left
        head = 0  # oldest pending document with tokens left
        tol = cap // 1000
        good = cap // 100

        def avail() -> np.ndarray:
            return by_len[~placed[by_len]]

        def close_waste(gap: int) -> int:
            a = avail()
            if not len(a) or lengths[a[0]] > gap:
                return gap
            return gap - int(sum(lengths[a[p]] for p in _close(lengths[a], gap, tol)))

        def close_waste_without(i: int, gap: int) -> int:
            placed[i] = True
            w = close_waste(gap)
            placed[i] = False
            return w

        def more_long(i: int) -> bool:
            return any(taken[j] < lengths[j] for j in long_ids[long_pos:] if j != i)

        def left(i: int) -> int:
            return int(lengths[i] - taken[i])

        row_pieces: list[list[tuple[int, int, int]]] = []  # (document, start, end)
        for _ in range(rows):
            gap, pieces = cap, []

            def put(d: int, k: int) -> None:
                nonlocal gap
                pieces.append((d, int(taken[d]), int(taken[d]) + k))
                taken[d] += k
                gap -= k
                if not split[d]:
                    placed[d] = True

            while True:
                while head < n and taken[head] >= lengths[head]:
                    head += 1
                if head < n and split[head]:  # the oldest document is long: a piece of it
                    k = self._piece(left(head), gap, more_long(head))
                    if k:
                        put(head, k)
                        continue
                elif head < n and lengths[head] <= gap and (not pieces or gap - lengths[head] >= mean):
                    d = head
                    if (not pieces and gap - lengths[d] < 2 * mean and seq[d] > forced_seq and not long_pos < len(long_ids)
                            and (seq[d] > overdue_seq or close_waste_without(d, gap - int(lengths[d])) > good)):
                        d = self._choose_opener(d, n, lengths, placed, split, by_len, close_waste, tol)
                    put(d, int(lengths[d]))
                    continue
                # close the row with the best single or pair of whole documents from the buffer
                a = avail()
                if len(a) and lengths[a[0]] <= gap:
                    for p in _close(lengths[a], gap, tol):
                        put(int(a[p]), int(lengths[a[p]]))
                    continue
                # fill what is left with pieces of long documents, oldest first
                while long_pos < len(long_ids) and taken[long_ids[long_pos]] >= lengths[long_ids[long_pos]]:
                    long_pos += 1
                put_any = False
                for d in long_ids[long_pos:]:
                    if gap < self.min_chunk:
                        break
                    k = self._piece(left(d), gap, more_long(d))
                    if k:
                        put(d, k)
                        put_any = True
                if not put_any:
                    break
            row_pieces.append(pieces)
        flat = [p for r in row_pieces for p in r]
        batch = self._assemble(flat, [len(r) for r in row_pieces])
        keep = taken < lengths
        self._docs = [d[t:] if t else d for d, t, k in zip(self._docs, taken, keep) if k]
        self._seq = [s for s, k in zip(self._seq, keep) if k]
        self._pending_tokens -= batch["num_tokens"]
        self.batches_emitted += 1
        self.tokens_emitted += batch["num_tokens"]
        self.budget_tokens_emitted += rows * self.max_seq_len
        return batch

    def _choose_opener(self, oldest, n, lengths, placed, split, by_len, close_waste, tol) -> int:
        """The opener, among the oldest and the longest whole documents, that fills its row best.

        Rows closing within `tol` tokens count as full; among those the longest opener wins
        (long documents are the hard ones to place: placing them while a partner exists keeps
        the buffer from filling up with them), then the oldest.
        """
        cap = self.max_seq_len
        cands, i = [], oldest
        while i < n and len(cands) < _OPENER_CANDIDATES:
            if not split[i] and not placed[i]:
                cands.append(i)
            i += 1
        a = by_len[~placed[by_len]]
        cands += [int(d) for d in a[::-1][:_OPENER_CANDIDATES] if int(d) not in cands]
        best, best_key = oldest, None

        def consider(i: int) -> None:
            nonlocal best, best_key
            placed[i] = True  # not its own partner
            waste = close_waste(cap - int(lengths[i]))
            placed[i] = False
            key = (max(waste, tol), -int(lengths[i]), i)
            if best_key is None or key < best_key:
                best, best_key = i, key

        for i in cands:
            consider(i)
        if best_key[0] > cap // 100:
            # The oldest and the longest documents all leave more than 1% of the row empty (long
            # documents waiting for a short partner): open the row with the longest other
            # document that closes it within `tol` instead of leaving the row part empty.
            # Single partners of every available document at once (lens ascending).
            lens = lengths[a]
            k = np.searchsorted(lens, cap - lens, side="right") - 1
            k = np.where(k == np.arange(len(lens)), k - 1, k)
            waste = np.where(k >= 0, cap - lens - lens[np.maximum(k, 0)], cap - lens)
            ok = np.flatnonzero(waste <= tol)
            consider(int(a[ok[-1]]) if len(ok) else int(a[np.argmin(waste[::-1]) * -1 + len(a) - 1]))
        return best

    def _assemble(self, pieces: list[tuple[int, int, int]], docs_per_row: list[int]) -> dict:
        rows = len(docs_per_row)
        lens = np.array([b - a for _, a, b in pieces], dtype=np.int64)
        ids = (np.concatenate([self._docs[d][a:b] for d, a, b in pieces]).astype(np.int64) if pieces
               else np.zeros(0, np.int64))
        cu = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=cu[1:])
        # position = token index - start of its document (chunk)
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
        """Pending documents (flat int32 tokens + lengths + arrival numbers, arrival order) and counters; weights_only-safe."""
        lengths = [len(d) for d in self._docs]
        # int32 holds any vocabulary and halves the checkpoint size of the buffer.
        flat = np.concatenate(self._docs).astype(np.int32) if self._docs else np.zeros(0, np.int32)
        state = {k: int(getattr(self, k)) for k in self._COUNTERS}
        state.update(
            max_seq_len=self.max_seq_len,
            buffer_tokens=torch.from_numpy(flat),
            buffer_lengths=torch.tensor(lengths, dtype=torch.int64),
            buffer_arrival=torch.tensor(self._seq, dtype=torch.int64),
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
        self._seq = state["buffer_arrival"].tolist()

    def extend(self, docs: Iterable[np.ndarray]) -> None:
        """Push several documents (convenience for tests and benchmarks)."""
        for d in docs:
            self.push(d)
