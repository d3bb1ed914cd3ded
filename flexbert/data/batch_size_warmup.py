"""Batch-size warmup: how many rows the loader asks the packer for, as tokens are emitted."""
from __future__ import annotations

__all__ = ["BatchSizeWarmup"]


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
