"""Shared fixtures: tiny model configs and documents given packed or padded."""
from __future__ import annotations

import dataclasses
from typing import Callable

import pytest
import torch

from flexbert.config.model import FlexBertConfig

TINY = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            global_attn_every_n_layers=2, local_attention=8, attn_out_dropout=0.0,
            pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3)


@pytest.fixture
def make_config() -> Callable[..., FlexBertConfig]:
    """Factory: a tiny config (d 32, 3 layers: global, local (|i - j| <= 4), global), with overrides."""

    def make(**overrides) -> FlexBertConfig:
        return FlexBertConfig(**{**TINY, **overrides})

    return make


@dataclasses.dataclass
class Docs:
    """The same documents packed (T,) with cu_seqlens and padded (B, S) with attention_mask."""

    input_ids_T: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    input_ids_BS: torch.Tensor
    attention_mask_BS: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()

    def pad(self, x_T: torch.Tensor) -> torch.Tensor:
        """(T, ...) packed values -> (B, S, ...) with zeros at padding."""
        out = x_T.new_zeros(*self.input_ids_BS.shape, *x_T.shape[1:])
        out[self.attention_mask_BS.bool()] = x_T
        return out


def _make_docs(lengths: list[int], vocab_size: int = 256, seed: int = 0) -> Docs:
    """Random documents of the given lengths (ids >= 4, so never a special token)."""
    gen = torch.Generator().manual_seed(seed)
    ids_T = torch.randint(4, vocab_size, (sum(lengths),), generator=gen)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    S = max(lengths)
    ids_BS = torch.zeros(len(lengths), S, dtype=torch.long)
    mask_BS = torch.zeros(len(lengths), S, dtype=torch.long)
    for b, (start, n) in enumerate(zip(cu[:-1].tolist(), lengths)):
        ids_BS[b, :n] = ids_T[start:start + n]
        mask_BS[b, :n] = 1
    return Docs(ids_T, cu, S, ids_BS, mask_BS)


@pytest.fixture
def make_docs() -> Callable[..., Docs]:
    """Factory: make_docs(lengths, vocab_size=256, seed=0) -> Docs."""
    return _make_docs
