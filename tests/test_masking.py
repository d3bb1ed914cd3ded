"""MLM masking: rates, 80/10/10 split, special tokens, labels, determinism per (seed, batch, rank)."""
from __future__ import annotations

import pytest
import torch

from flexbert.data.masking import MLMMasker

VOCAB, CLS, SEP, PAD, MASK, UNK = 1000, 1, 2, 0, 4, 3
SPECIAL = {CLS, SEP, PAD, MASK, UNK}


def docs_tokens(n: int = 200_000, seed: int = 0) -> torch.Tensor:
    """Flat tokens: random non-special ids with a [CLS] ... [SEP] pair every 100 tokens."""
    ids = torch.randint(5, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))
    ids[::100], ids[99::100] = CLS, SEP
    return ids


def masker(**kw) -> MLMMasker:
    return MLMMasker(SPECIAL, MASK, VOCAB, **kw)


def test_rate_and_80_10_10_split_within_one_percent():
    ids = docs_tokens()
    out, labels = masker(seed=0)(ids, batch_index=0)
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    selected = labels != -100
    assert abs(selected.sum() / (~special).sum() - 0.30) < 0.01
    n = selected.sum()
    to_mask = (out == MASK) & selected
    to_random = (out != MASK) & (out != ids) & selected
    kept = (out == ids) & selected
    assert abs(to_mask.sum() / n - 0.8) < 0.01
    assert abs(to_random.sum() / n - 0.1) < 0.01
    assert abs(kept.sum() / n - 0.1) < 0.01  # (includes the ~0.1% random draws equal to the original)


def test_labels_hold_originals_at_selected_positions_and_minus_100_elsewhere():
    ids = docs_tokens(20_000)
    out, labels = masker()(ids, 3)
    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(out[~selected], ids[~selected])  # unselected tokens are untouched


def test_special_tokens_are_never_selected_nor_drawn_as_replacements():
    ids = docs_tokens(50_000)
    ids[::7] = UNK
    ids[3::7] = PAD
    out, labels = masker(mlm_probability=0.9, mask_token_ratio=0.0, random_token_ratio=1.0)(ids, 0)
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    assert (labels[special] == -100).all() and torch.equal(out[special], ids[special])
    replaced = (labels != -100)
    assert not torch.isin(out[replaced], torch.tensor(sorted(SPECIAL))).any()


def test_masks_are_deterministic_in_seed_batch_and_rank():
    ids = docs_tokens(10_000)
    a = masker(seed=5, rank=0)(ids, 7)
    b = masker(seed=5, rank=0)(ids, 7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (masker(seed=5, rank=1)(ids, 7), masker(seed=5, rank=0)(ids, 8), masker(seed=6, rank=0)(ids, 7)):
        assert not torch.equal(a[1], other[1])


def test_rate_is_an_attribute_a_schedule_can_change():
    ids = docs_tokens(100_000)
    m = masker()
    m.mlm_probability = 0.15
    _, labels = m(ids, 0)
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    assert abs((labels != -100).sum() / (~special).sum() - 0.15) < 0.01
    with pytest.raises(ValueError, match="mlm_probability"):
        m.mlm_probability = 1.5


def test_configurable_ratios():
    ids = docs_tokens(100_000)
    out, labels = masker(mask_token_ratio=1.0, random_token_ratio=0.0)(ids, 0)
    selected = labels != -100
    assert (out[selected] == MASK).all()
    with pytest.raises(ValueError, match="<= 1"):
        masker(mask_token_ratio=0.8, random_token_ratio=0.3)
