"""PackedBatch (one type from the packer to the model wrapper) and the per-token document helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexbert.data.batching import pad_rows, split_packed_batch
from flexbert.data.packed_batch import MODEL_INPUTS, PackedBatch
from flexbert.data.packer import SequencePacker
from flexbert.model.attention.kernels.base import document_ids, positions_in_documents


def _loop_ids_and_positions(lengths: list[int], padded_len: int) -> tuple[list[int], list[int]]:
    """Document id and in-document position of every position, one document at a time."""
    ids, pos = [], []
    for d, n in enumerate(lengths):
        ids += [d] * n
        pos += list(range(n))
    ids += [len(lengths)] * (padded_len - sum(lengths))  # padding: one extra document
    return ids, pos


@pytest.mark.parametrize("lengths", [[5], [3, 0, 4, 1], [0, 2, 0, 0, 6], [1, 1, 1]])
def test_document_ids_and_positions_match_a_per_document_loop(lengths):
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    T = sum(lengths)
    want_ids, want_pos = _loop_ids_and_positions(lengths, T + 3)
    doc_P = document_ids(cu, T + 3)
    assert doc_P.dtype == torch.int64 and doc_P.tolist() == want_ids
    doc_T = document_ids(cu, T)
    assert positions_in_documents(cu, doc_T).tolist() == want_pos


def _packed(rows: int = 3, seq: int = 64) -> PackedBatch:
    packer = SequencePacker(seq, buffer_docs=4)
    rng = np.random.default_rng(0)
    while packer.needs_more(rows):
        packer.push(rng.integers(5, 100, int(rng.integers(3, 40))))
    batch = packer.pack(rows)
    batch.labels = torch.where(batch.input_ids % 2 == 0, batch.input_ids, -100)
    return batch


def test_packer_positions_agree_with_the_shared_helper():
    batch = _packed()
    doc_T = document_ids(batch.cu_seqlens, batch.num_tokens)
    assert torch.equal(batch.position_ids, positions_in_documents(batch.cu_seqlens, doc_T))


def test_a_packed_batch_is_a_mapping_of_its_set_fields():
    batch = _packed()
    assert batch["input_ids"] is batch.input_ids and "labels" in batch
    assert set(batch) == {"input_ids", "position_ids", "cu_seqlens", "max_seqlen", "row_offsets", "row_num_tokens",
                          "num_tokens", "labels", "row_capacity"}
    unlabelled = batch.replace(labels=None)
    assert "labels" not in unlabelled and unlabelled.get("labels") is None
    assert batch.packing_efficiency == batch.num_tokens / (batch.num_rows * 64)
    assert batch.num_docs == len(batch.cu_seqlens) - 1
    with pytest.raises(KeyError, match="'loss_mask' is not a PackedBatch field"):
        batch["loss_mask"] = batch.input_ids


def test_composer_device_transfer_round_trips_through_microbatch_transforms():
    """Composer hands a Mapping back as a plain dict; the DataSpec's microbatch_transforms restores the type."""
    from composer.devices import DeviceCPU

    from flexbert.train.composer_model import packed_data_spec

    batch = _packed(rows=4)
    spec = packed_data_spec([batch])
    for micro in spec.split_batch(batch, 2):
        assert isinstance(micro, PackedBatch) and micro.row_capacity == 64
        moved = DeviceCPU().batch_to_device(micro)
        assert type(moved) is dict  # what Composer gives the model without the transform
        again = spec.microbatch_transforms(moved)
        assert isinstance(again, PackedBatch)
        for key in micro:
            value = micro[key]
            assert torch.equal(again[key], value) if isinstance(value, torch.Tensor) else again[key] == value
    assert spec.get_num_samples_in_batch(batch) == 4


def test_padding_and_splitting_keep_the_type_and_the_model_inputs():
    batch = _packed(rows=3)
    padded = pad_rows(batch, 64, pad_token_id=0)
    assert isinstance(padded, PackedBatch) and padded.num_tokens == batch.num_tokens and len(padded.input_ids) == 3 * 64
    parts = split_packed_batch(padded, 2)
    assert [p.num_rows for p in parts] == [2, 1] and all(isinstance(p, PackedBatch) for p in parts)
    inputs = parts[0].model_inputs(torch.device("cpu"))
    assert tuple(inputs) == MODEL_INPUTS and type(inputs["max_seqlen"]) is int


def test_coerce_names_missing_and_unknown_keys():
    fields = dict(_packed().items())
    assert isinstance(PackedBatch.coerce(fields), PackedBatch)
    del fields["row_num_tokens"]
    fields["attention_mask"] = None
    with pytest.raises(KeyError, match=r"missing keys \['row_num_tokens'\], unknown keys \['attention_mask'\]"):
        PackedBatch.coerce(fields)
