"""Greedy packing of whole documents into rows of `max_seq_len` tokens, over a buffer.

`SequencePacker` keeps the pending documents in arrival order; `pack(R)` hands them to a
`_RowBuilder`, which fills R rows one at a time. A row repeats the first of these steps that
places something, and ends when none does:

1. **Oldest first.** The oldest pending document goes in: a piece of it when it is long, whole
   while the row is empty or an average document would still fit after it. Consuming in arrival
   order keeps the buffer's length mix unbiased (a largest-first policy starves the buffer of the
   lengths that close rows and drops to ~99.2% on Normal(256, 64)).
   *Choosing the opener.* When it would open the row, few documents fit (the gap it leaves is
   under two average documents) and no long document is pending, up to 8 oldest and 8 longest
   whole documents are tried as openers instead and the fullest row wins (rows within 0.1% count
   as full; then the longer opener, then the older). If none closes its row within 1% (at ~2
   documents per row the oldest and longest are long documents waiting for a short partner), the
   longest document whose best single partner closes the row within 0.1% is tried too.
   *Fairness.* A document that more than 2 x (pending documents) newer documents arrived after
   opens its row itself when that row closes within 1%; after 8 x (pending documents) it opens its
   row whatever the waste, so no document waits more than about eight buffer turnovers.
2. **Best fit.** The single whole document or pair, from anywhere in the buffer, that fills the
   gap best closes the row (a single one leaving at most 0.1% free is taken without a pair search).
3. **Pieces of long documents**, oldest first, fill what is left.

Long documents (longer than max_seq_len) with long_documents="split" stay one pending item that
rows take pieces from: a piece fills whatever space a row has left (up to max_seq_len, never
shorter than min(64, max_seq_len // 8) tokens, nor leaving less than that) and is its own attention
segment, so long documents are chunks that fill rows exactly instead of being cut at max_seq_len.
With "truncate" they keep their first max_seq_len tokens.

The output is a `PackedBatch` (flat tokens, cu_seqlens, position_ids restarting per document,
row_offsets); labels are added by the masker. The packer's state is small tensors and ints
(torch.load(weights_only=True) safe): the pending documents' tokens and the counters. It has no
randomness.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from flexbert.data.packed_batch import PackedBatch

__all__ = ["SequencePacker"]

# A piece cut from a long document to fill a row is at least this long (and so is what is left
# of the document), so that no chunk is a handful of tokens without context.
_MIN_CHUNK = 64
# Openers tried per row (oldest, and again longest) when the oldest document's row is hard to close.
_OPENER_CANDIDATES = 8
# A document older than _SOFT_AGE x (pending documents) arrivals opens its row when that row
# closes within 1%; older than _HARD_AGE x, it opens its row whatever the waste.
_SOFT_AGE = 2
_HARD_AGE = 8


def _largest_partners(lens: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """For each i, the position k != i of the longest document with lens[k] <= gaps[i]; -1 if none.

    Args:
        lens: (n,) int64 lengths, ascending.
        gaps: (n,) free tokens left beside each document.
    """
    k = np.searchsorted(lens, gaps, side="right") - 1
    return np.where(k == np.arange(len(lens)), k - 1, k)


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
    k = _largest_partners(lens, gap - lens)
    sums = np.where(k >= 0, lens + lens[np.maximum(k, 0)], -1)
    i = int(np.argmax(sums))
    return [i, int(k[i])] if sums[i] > lens[j] else [j]


class _RowBuilder:
    """Fills the rows of one batch from the pending documents' lengths (module docstring, steps 1-3).

    `taken[d]` counts the tokens of pending document d placed so far; whole documents are also
    marked `placed`, which takes them out of the best-fit search (long ones never enter it).

    Args:
        lengths: (n,) int64 pending lengths, arrival order.
        arrival: (n,) int64 arrival number of each pending document.
        arrived: documents arrived so far (the newest arrival number).
        cap: row capacity (max_seq_len).
        min_chunk: the shortest piece of a long document.
    """

    def __init__(self, lengths: np.ndarray, arrival: np.ndarray, arrived: int, cap: int, min_chunk: int):
        n = len(lengths)
        self.lengths, self.arrival, self.cap, self.min_chunk = lengths, arrival, cap, min_chunk
        self.split = lengths > cap  # long documents: rows take pieces of them
        self.taken = np.zeros(n, dtype=np.int64)
        self.placed = self.split.copy()
        self.mean = float(np.minimum(lengths, cap).mean())
        whole = np.flatnonzero(~self.split)
        self.by_len = whole[np.argsort(lengths[whole], kind="stable")]  # ties by arrival order: deterministic
        self.overdue_arrival = arrived - _SOFT_AGE * n  # these open a row if it closes within 1%
        self.forced_arrival = arrived - _HARD_AGE * n  # these open a row whatever the waste
        self.long_ids = list(np.flatnonzero(self.split))
        self.long_pos = 0  # first long document that step 3 has not seen used up
        self.head = 0  # oldest pending document with tokens left
        self.tol = cap // 1000  # a row this close to full counts as full
        self.good = cap // 100  # a row this close to full is good enough for fairness
        self.gap, self.pieces = cap, []  # the row being filled: free tokens, (document, start, end)

    def fill_row(self) -> list[tuple[int, int, int]]:
        """Fill the next row; its pieces (document, start, end), in order."""
        self.gap, self.pieces = self.cap, []
        while self._add_oldest() or self._close_best_fit() or self._add_long_pieces():
            pass
        return self.pieces

    # ---- the three steps (each True when it placed something) -------------------------------------
    def _add_oldest(self) -> bool:
        while self.head < len(self.lengths) and self._used_up(self.head):
            self.head += 1
        d = self.head
        if d >= len(self.lengths):
            return False
        if self.split[d]:
            k = self._piece(self._left(d), self._more_long(d))
            if k:
                self._put(d, k)
            return bool(k)
        n_d = int(self.lengths[d])
        if n_d > self.gap or (self.pieces and self.gap - n_d < self.mean):
            return False
        if self._opener_is_chosen(d):
            d = self._choose_opener(d)
        self._put(d, int(self.lengths[d]))
        return True

    def _close_best_fit(self) -> bool:
        a = self._available()
        if not len(a) or self.lengths[a[0]] > self.gap:
            return False
        for p in _close(self.lengths[a], self.gap, self.tol):
            self._put(int(a[p]), int(self.lengths[a[p]]))
        return True

    def _add_long_pieces(self) -> bool:
        while self.long_pos < len(self.long_ids) and self._used_up(self.long_ids[self.long_pos]):
            self.long_pos += 1
        added = False
        for d in self.long_ids[self.long_pos:]:
            if self.gap < self.min_chunk:
                break
            k = self._piece(self._left(d), self._more_long(d))
            if k:
                self._put(d, k)
                added = True
        return added

    # ---- choosing the opener (step 1) --------------------------------------------------------------
    def _opener_is_chosen(self, oldest: int) -> bool:
        """Whether the oldest document's row is opened by `_choose_opener` rather than by it directly."""
        left_after = self.gap - int(self.lengths[oldest])
        return (not self.pieces and left_after < 2 * self.mean and self.arrival[oldest] > self.forced_arrival
                and self.long_pos >= len(self.long_ids)
                and (self.arrival[oldest] > self.overdue_arrival or self._close_waste_without(oldest, left_after) > self.good))

    def _choose_opener(self, oldest: int) -> int:
        """The opener, among the oldest and the longest whole documents, that fills its row best."""
        keys = {i: self._opener_key(i) for i in self._opener_candidates(oldest)}
        best = min(keys, key=keys.__getitem__)
        if keys[best][0] > self.good:
            fallback = self._longest_closing_opener()
            if self._opener_key(fallback) < keys[best]:
                best = fallback
        return best

    def _opener_candidates(self, oldest: int) -> list[int]:
        """Up to 8 oldest available whole documents from `oldest` on, then up to 8 longest."""
        cands, i = [], oldest
        while i < len(self.lengths) and len(cands) < _OPENER_CANDIDATES:
            if not self.split[i] and not self.placed[i]:
                cands.append(i)
            i += 1
        return cands + [int(d) for d in self._available()[::-1][:_OPENER_CANDIDATES] if int(d) not in cands]

    def _opener_key(self, i: int) -> tuple[int, int, int]:
        """Sort key of opener i: its row's waste (within `tol` counts as full), then longer, then older."""
        waste = self._close_waste_without(i, self.cap - int(self.lengths[i]))
        return max(waste, self.tol), -int(self.lengths[i]), i

    def _longest_closing_opener(self) -> int:
        """The longest available document whose best single partner closes the row within `tol`.

        None does: the one whose best single partner leaves the least waste (the longest of those).
        """
        a = self._available()
        lens = self.lengths[a]
        k = _largest_partners(lens, self.cap - lens)
        waste = np.where(k >= 0, self.cap - lens - lens[np.maximum(k, 0)], self.cap - lens)
        ok = np.flatnonzero(waste <= self.tol)
        pick = ok[-1] if len(ok) else len(a) - 1 - int(np.argmin(waste[::-1]))
        return int(a[pick])

    # ---- small facts -------------------------------------------------------------------------------
    def _available(self) -> np.ndarray:
        """Whole documents not placed yet, ascending length."""
        return self.by_len[~self.placed[self.by_len]]

    def _close_waste(self, gap: int) -> int:
        """Tokens left free when a gap of `gap` is closed by best fit (step 2)."""
        a = self._available()
        if not len(a) or self.lengths[a[0]] > gap:
            return gap
        return gap - int(sum(self.lengths[a[p]] for p in _close(self.lengths[a], gap, self.tol)))

    def _close_waste_without(self, i: int, gap: int) -> int:
        """`_close_waste(gap)` with document i out of the search (it is the opener, not its own partner)."""
        self.placed[i] = True
        waste = self._close_waste(gap)
        self.placed[i] = False
        return waste

    def _left(self, d: int) -> int:
        return int(self.lengths[d] - self.taken[d])

    def _used_up(self, d: int) -> bool:
        return self.taken[d] >= self.lengths[d]

    def _more_long(self, i: int) -> bool:
        """Whether a long document other than i has tokens left."""
        return any(not self._used_up(j) for j in self.long_ids[self.long_pos:] if j != i)

    def _piece(self, left: int, more: bool) -> int:
        """Tokens to cut from a long document with `left` tokens for the row's gap (0: none).

        `more`: another long document can fill what this piece leaves of the row.
        """
        m, gap = self.min_chunk, self.gap
        if left <= gap:
            return left
        if left - gap >= m:
            return gap
        # Cutting `gap` would leave less than a minimal chunk: leave room for a minimal piece of
        # the next long document instead, or leave a minimal chunk of this one behind.
        k = gap - m if more and gap - m >= m else left - m
        return k if k >= m else 0

    def _put(self, d: int, k: int) -> None:
        start = int(self.taken[d])
        self.pieces.append((d, start, start + k))
        self.taken[d] += k
        self.gap -= k
        if not self.split[d]:
            self.placed[d] = True


class SequencePacker:
    """Stateful packer of documents into R rows of `max_seq_len` tokens (the module docstring).

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
    def pack(self, rows: int) -> PackedBatch | None:
        """Pack pending documents into `rows` rows; None if nothing is pending.

        Returns the packed batch without labels, `row_capacity` = max_seq_len. Rows left empty
        (only at the end of a finite stream) are kept, so it always has `rows` rows.
        """
        if not self._docs:
            return None
        lengths = np.fromiter((len(d) for d in self._docs), dtype=np.int64, count=len(self._docs))
        builder = _RowBuilder(lengths, np.asarray(self._seq, dtype=np.int64), self.samples_consumed,
                              self.max_seq_len, self.min_chunk)
        batch = self._assemble([builder.fill_row() for _ in range(rows)])
        self._remove_taken(builder.taken)
        self.batches_emitted += 1
        self.tokens_emitted += batch.num_tokens
        self.budget_tokens_emitted += rows * self.max_seq_len
        return batch

    def _remove_taken(self, taken: np.ndarray) -> None:
        """Drop the placed tokens from the buffer: used-up documents go, long ones keep their rest."""
        keep = [t < len(d) for d, t in zip(self._docs, taken)]
        self._docs = [d[t:] if t else d for d, t, k in zip(self._docs, taken, keep) if k]
        self._seq = [s for s, k in zip(self._seq, keep) if k]
        self._pending_tokens -= int(taken.sum())

    def _assemble(self, row_pieces: list[list[tuple[int, int, int]]]) -> PackedBatch:
        """The PackedBatch of rows given as pieces (document, start, end) of the pending documents."""
        pieces = [p for row in row_pieces for p in row]
        lens = np.array([b - a for _, a, b in pieces], dtype=np.int64)
        ids = (np.concatenate([self._docs[d][a:b] for d, a, b in pieces]).astype(np.int64) if pieces
               else np.zeros(0, np.int64))
        cu = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=cu[1:])
        # position = token index - start of its document (chunk)
        positions = np.arange(len(ids), dtype=np.int64) - np.repeat(cu[:-1], lens)
        row_offsets = np.zeros(len(row_pieces) + 1, np.int64)
        row_offsets[1:] = cu[np.cumsum([len(row) for row in row_pieces])]
        return PackedBatch(
            input_ids=torch.from_numpy(ids),
            position_ids=torch.from_numpy(positions),
            cu_seqlens=torch.from_numpy(cu.astype(np.int32)),
            max_seqlen=int(lens.max()) if len(lens) else 0,
            row_offsets=torch.from_numpy(row_offsets),
            row_num_tokens=torch.from_numpy(np.diff(row_offsets)),
            num_tokens=int(cu[-1]),
            row_capacity=self.max_seq_len,
        )

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
