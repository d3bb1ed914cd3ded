"""The packer: whole documents in rows, efficiency, chunking/truncation, warmup, state; batch helpers."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from flexbert.data.batching import num_samples, num_tokens, pad_rows, packed_to_padded, split_packed_batch
from flexbert.data.batch_size_warmup import BatchSizeWarmup
from flexbert.data.packer import SequencePacker

S = 1024  # max_seq_len


def normal_docs(n: int, seed: int = 0, mean: float = 256, std: float = 64) -> list[np.ndarray]:
    """`n` documents with Normal(mean, std) lengths; document i is filled with a pattern unique to it."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(mean, std, n), 2, None).astype(int)
    return [(rng.integers(5, 60000, L)).astype(np.uint16) for L in lengths]


def segments(batch: dict) -> list[np.ndarray]:
    cu = batch["cu_seqlens"].tolist()
    ids = batch["input_ids"].numpy()
    return [ids[a:b] for a, b in zip(cu[:-1], cu[1:])]


def check_contract(batch: dict, rows: int, max_seq_len: int = S) -> None:
    """The packed-batch contract of docs/ARCHITECTURE.md."""
    T = len(batch["input_ids"])
    cu, offs = batch["cu_seqlens"], batch["row_offsets"]
    assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == T
    assert batch["input_ids"].dtype == batch["position_ids"].dtype == torch.int64
    assert len(offs) == rows + 1 and offs[0] == 0 and offs[-1] == T
    assert (offs[1:] - offs[:-1]).max() <= max_seq_len  # no row exceeds max_seq_len
    assert set(offs.tolist()) <= set(cu.tolist())  # rows hold whole documents
    lens = (cu[1:] - cu[:-1]).long()
    assert batch["max_seqlen"] == int(lens.max())
    expected_pos = torch.cat([torch.arange(int(n)) for n in lens])
    assert torch.equal(batch["position_ids"], expected_pos)  # positions restart per document
    assert batch["num_tokens"] == int(batch["row_num_tokens"].sum())


def drain(packer: SequencePacker, docs: list[np.ndarray], rows: int) -> list[dict]:
    """Feed documents as the loader does (until the buffer is full), then pack until empty."""
    out, it = [], iter(docs)
    exhausted = False
    while True:
        while not exhausted and packer.needs_more(rows):
            d = next(it, None)
            if d is None:
                exhausted = True
            else:
                packer.push(d)
        b = packer.pack(rows)
        if b is None:
            return out
        out.append(b)


def test_every_document_appears_once_contiguous_and_unchanged():
    docs = normal_docs(600)
    batches = drain(SequencePacker(S, buffer_docs=64), docs, rows=4)
    seen = []
    for b in batches:
        check_contract(b, rows=4)
        seen += [seg.tobytes() for seg in segments(b)]
    assert sorted(seen) == sorted(d.astype(np.int64).tobytes() for d in docs)


def test_efficiency_on_normal_256_lengths_is_at_least_99_5_percent_and_reported():
    rows, packer = 8, SequencePacker(S, buffer_docs=256)
    docs = iter(normal_docs(20000, seed=1))
    effs = []
    for _ in range(40):
        while packer.needs_more(rows):
            packer.push(next(docs))
        b = packer.pack(rows)
        assert b.packing_efficiency == b["num_tokens"] / (rows * S)
        assert b.num_docs == len(b["cu_seqlens"]) - 1
        effs.append(b.packing_efficiency)
    assert np.mean(effs) >= 0.995
    assert min(effs) >= 0.99


def test_long_documents_are_split_into_chunks_keeping_every_token():
    long_doc = np.arange(5, 5 + 2500).astype(np.uint16)
    packer = SequencePacker(S, "split", buffer_docs=0)
    packer.push(long_doc)
    b = packer.pack(rows=3)
    check_contract(b, rows=3)
    chunks = segments(b)
    assert sorted(len(c) for c in chunks) == [452, 1024, 1024]  # each chunk <= max_seq_len, own segment
    assert sorted(np.concatenate(chunks).tolist()) == long_doc.tolist()
    assert packer.chunked_docs == 1 and packer.chunked_tokens == 2500 and packer.truncated_tokens == 0


def test_truncation_keeps_the_first_max_seq_len_tokens_and_counts_the_rest():
    long_doc = np.arange(5, 5 + 2500).astype(np.uint16)
    packer = SequencePacker(S, "truncate", buffer_docs=0)
    packer.push(long_doc)
    b = packer.pack(rows=1)
    assert b["input_ids"].tolist() == long_doc[:S].tolist()
    assert packer.truncated_docs == 1 and packer.truncated_tokens == 2500 - S and packer.chunked_docs == 0


def test_state_round_trip_through_torch_save_continues_exactly():
    docs = normal_docs(800, seed=3)
    full = drain(SequencePacker(S, buffer_docs=32), docs, rows=4)

    first = SequencePacker(S, buffer_docs=32)
    it = iter(docs)
    for _ in range(5):
        while first.needs_more(4):
            first.push(next(it))
        first.pack(4)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = SequencePacker(S, buffer_docs=32)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.samples_consumed == first.samples_consumed and resumed.batches_emitted == 5
    rest = drain(resumed, docs[resumed.samples_consumed :], rows=4)
    assert len(rest) == len(full) - 5
    for a, b in zip(full[5:], rest):
        for k in a:
            assert (torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]), k


def test_batch_size_warmup_grows_rows_linearly_over_global_tokens():
    # 2 ranks: each rank's batch counts twice toward the global warmup tokens.
    w = BatchSizeWarmup(max_rows=16, min_rows=4, warmup_tokens=100 * S, world_size=2, granularity=4)
    assert w.rows(0) == 4
    assert w.rows(25 * S) == 8  # half way (50 global rows): 4 + 12 * 0.5 = 10 -> 8 (multiple of 4)
    assert w.rows(50 * S) == 16 and w.rows(10**9) == 16
    rows = [w.rows(t * S) for t in range(0, 60, 5)]
    assert rows == sorted(rows)
    assert BatchSizeWarmup(16, None, 100 * S).rows(0) == 16  # no warmup


def one_batch(rows: int = 4, seed: int = 0) -> dict:
    packer = SequencePacker(S, buffer_docs=16)
    docs = iter(normal_docs(200, seed=seed))
    while packer.needs_more(rows):
        packer.push(next(docs))
    b = packer.pack(rows)
    b["labels"] = torch.where(b["input_ids"] % 3 == 0, b["input_ids"], -100)
    return b


def test_split_packed_batch_by_rows_round_trips():
    b = one_batch(rows=5)
    parts = split_packed_batch(b, rows_per_microbatch=2)
    assert [num_samples(p) for p in parts] == [2, 2, 1]
    for p, rows in zip(parts, [2, 2, 1]):
        check_contract(p, rows=rows)
    for k in ("input_ids", "labels", "position_ids"):
        assert torch.equal(torch.cat([p[k] for p in parts]), b[k])
    assert sum(num_tokens(p) for p in parts) == num_tokens(b)
    assert sum(len(p["cu_seqlens"]) - 1 for p in parts) == len(b["cu_seqlens"]) - 1


def test_pad_rows_reaches_the_budget_with_isolated_unlabelled_padding():
    b = one_batch(rows=3)
    padded = pad_rows(b, S, pad_token_id=0)
    assert len(padded["input_ids"]) == 3 * S and padded["num_tokens"] == b["num_tokens"]
    assert padded["row_offsets"].tolist() == [0, S, 2 * S, 3 * S]
    cu = padded["cu_seqlens"]
    assert cu[-1] == 3 * S and set(padded["row_offsets"].tolist()) <= set(cu.tolist())
    assert (padded["labels"] != -100).sum() == (b["labels"] != -100).sum()
    # Splitting a padded batch still counts only real tokens.
    assert sum(num_tokens(p) for p in split_packed_batch(padded, 2)) == b["num_tokens"]
    # Unpacking drops the padding segments: the same documents as the unpadded batch.
    ids_a, mask_a, lab_a = packed_to_padded(b)
    ids_b, mask_b, lab_b = packed_to_padded(padded)
    assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b) and torch.equal(lab_a, lab_b)


def test_packed_to_padded_gives_one_row_per_document():
    b = one_batch(rows=2)
    ids, mask, labels = packed_to_padded(b, pad_token_id=0)
    lens = (b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).long()
    assert ids.shape == (len(lens), b["max_seqlen"]) and torch.equal(mask.sum(1), lens)
    assert torch.equal(ids[mask.bool()], b["input_ids"]) and torch.equal(labels[mask.bool()], b["labels"])
    assert (ids[~mask.bool()] == 0).all() and (labels[~mask.bool()] == -100).all()


def test_bad_options_are_rejected_with_what_to_change():
    with pytest.raises(ValueError, match="long_documents"):
        SequencePacker(S, "drop")
    with pytest.raises(ValueError, match="batch_size_warmup_min_rows"):
        BatchSizeWarmup(8, 0, 10)


def test_long_documents_fill_rows_exactly_losing_no_token_and_short_ones_stay_whole():
    docs = normal_docs(300, seed=5, mean=4096, std=1024) + normal_docs(300, seed=6)
    order = np.random.default_rng(0).permutation(len(docs))
    docs = [docs[i] for i in order]
    batches = drain(SequencePacker(S, buffer_docs=64), docs, rows=8)
    seen, effs = [], []
    for b in batches:
        check_contract(b, rows=8)
        seen += [seg.tobytes() for seg in segments(b)]
        effs.append(b.packing_efficiency)
    short = {d.astype(np.int64).tobytes() for d in docs if len(d) <= S}
    assert short <= set(seen)  # every short document is one whole segment
    all_tokens = np.sort(np.concatenate([d.astype(np.int64) for d in docs]))
    assert np.array_equal(np.sort(np.frombuffer(b"".join(seen), dtype=np.int64)), all_tokens)
    assert np.mean(effs[:-2]) >= 0.995


def test_normal_4096_at_8192_stays_at_least_99_5_percent_in_the_steady_state():
    # ~2 documents per row: long documents wait for a short partner instead of opening rows
    # that cannot be closed; 400 batches reach the steady state (the buffer full of them).
    S8, rows, buffer_docs = 8192, 8, 256
    packer = SequencePacker(S8, buffer_docs=buffer_docs)
    rng = np.random.default_rng(7)
    effs, max_age = [], 0
    for _ in range(400):
        while packer.needs_more(rows):
            packer.push(np.ones(max(2, int(rng.normal(4096, 1024))), dtype=np.uint16))
        b = packer.pack(rows)
        check_contract(b, rows=rows, max_seq_len=S8)
        effs.append(b.packing_efficiency)
        max_age = max(max_age, packer.samples_consumed - min(packer._seq))
    assert np.mean(effs[2:]) >= 0.995
    assert min(effs[2:]) >= 0.85
    assert max_age <= 10 * (packer.num_pending + rows * 2)  # the hard age cap still holds
