"""Vectorized MLM masking of packed token ids, reproducible from (seed, batch index, rank).

Each non-special token is selected with probability `mlm_probability`; a selected token is
replaced by [MASK] with probability `mask_token_ratio`, by a random non-special token with
probability `random_token_ratio`, and kept otherwise. Labels hold the original id at selected
positions and -100 elsewhere. The random stream of a batch depends only on (seed, batch index,
rank), so a resumed run draws the same masks and ranks draw different ones.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from flexbert.labels import IGNORE_INDEX

__all__ = ["MLMMasker", "IGNORE_INDEX", "mask_seed"]



def mask_seed(seed: int, batch_index: int, rank: int) -> int:
    """A 63-bit generator seed mixing (seed, batch_index, rank) with numpy's SeedSequence hash.

    Hashing (instead of e.g. seed + batch_index) keeps nearby triples from sharing streams.
    """
    words = np.random.SeedSequence([seed, batch_index, rank]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


class MLMMasker:
    """Applies MLM masking to flat token ids.

    Args:
        special_ids: ids never selected nor drawn as replacements (cls, sep, pad, mask, unk, ...).
        mask_token_id: the [MASK] id.
        vocab_size: ids are in [0, vocab_size); random replacements come from the non-special ones.
        mlm_probability: selection rate; an attribute, so a schedule may change it between batches.
        mask_token_ratio: share of selected tokens replaced by [MASK].
        random_token_ratio: share of selected tokens replaced by a random token.
        seed: base seed; combined with the batch index and rank for each batch.
        rank: data-parallel rank (different ranks get different masks).
    """

    def __init__(
        self,
        special_ids: Iterable[int],
        mask_token_id: int,
        vocab_size: int,
        mlm_probability: float = 0.3,
        mask_token_ratio: float = 0.8,
        random_token_ratio: float = 0.1,
        seed: int = 0,
        rank: int = 0,
    ):
        special = sorted({int(i) for i in special_ids} | {int(mask_token_id)})
        if any(not 0 <= i < vocab_size for i in special):
            raise ValueError(f"special ids {special} must lie in [0, vocab_size={vocab_size})")
        if mask_token_ratio + random_token_ratio > 1.0 + 1e-9:
            raise ValueError(f"mask_token_ratio + random_token_ratio must be <= 1, got {mask_token_ratio} + {random_token_ratio}")
        self.special_ids = torch.tensor(special, dtype=torch.int64)
        self.mask_token_id, self.vocab_size = int(mask_token_id), int(vocab_size)
        self.mlm_probability = mlm_probability
        self.mask_token_ratio, self.random_token_ratio = mask_token_ratio, random_token_ratio
        self.seed, self.rank = int(seed), int(rank)
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[self.special_ids] = False
        self._replacements = allowed.nonzero().squeeze(1)  # non-special ids to draw from
        if len(self._replacements) == 0 and random_token_ratio > 0:
            raise ValueError("every id is special: nothing to draw random replacements from")

    @property
    def mlm_probability(self) -> float:
        return self._mlm_probability

    @mlm_probability.setter
    def mlm_probability(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {value}")
        self._mlm_probability = float(value)

    def __call__(self, input_ids: torch.Tensor, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask `input_ids` for batch number `batch_index`.

        Args:
            input_ids: (T,) int64 original token ids (any shape works; it is treated elementwise).
            batch_index: index of this batch in the rank's stream (the resume-stable step).
        Returns:
            (masked_ids, labels), both like `input_ids`; labels are -100 where not selected.
        """
        gen = torch.Generator().manual_seed(mask_seed(self.seed, batch_index, self.rank))
        shape = input_ids.shape
        # Draw all randoms up front so their count (and so the stream) depends on T only.
        u_select = torch.rand(shape, generator=gen)
        u_action = torch.rand(shape, generator=gen)
        random_pick = torch.randint(max(1, len(self._replacements)), shape, generator=gen)
        maskable = ~torch.isin(input_ids, self.special_ids)
        selected = maskable & (u_select < self.mlm_probability)
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        to_mask = selected & (u_action < self.mask_token_ratio)
        to_random = selected & ~to_mask & (u_action < self.mask_token_ratio + self.random_token_ratio)
        masked = input_ids.clone()
        masked[to_mask] = self.mask_token_id
        if len(self._replacements):
            masked[to_random] = self._replacements[random_pick[to_random]]
        return masked, labels
