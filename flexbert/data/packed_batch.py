"""`PackedBatch`: the one type of a packed batch, from the packer through batching to the model wrapper.

Shape legend: T packed tokens, D documents (attention segments), R packing rows.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["PackedBatch", "TOKEN_FIELDS", "MODEL_INPUTS"]

#: Fields holding one value per packed token (sliced together when a batch is split by rows).
TOKEN_FIELDS = ("input_ids", "labels", "position_ids")
#: Fields the model takes as keyword arguments (FlexBertForMaskedLM.forward); the rest is for batching.
MODEL_INPUTS = ("input_ids", "labels", "cu_seqlens", "max_seqlen", "position_ids")


@dataclasses.dataclass(eq=False)  # tensors have no truth value: compare fields with torch.equal
class PackedBatch(Mapping):
    """R rows of whole documents, back to back in one flat token sequence (CPU tensors from the loader).

    This docstring is the contract; docs/ARCHITECTURE.md points here.

    Attributes:
        input_ids: (T,) int64, all documents of the batch back to back (masked tokens already
            replaced once the masker ran).
        position_ids: (T,) int64, position inside the document, restarting at 0 for each document.
        cu_seqlens: (D+1,) int32 document boundaries; cu_seqlens[0] == 0, cu_seqlens[-1] == T.
            Padding added by `pad_rows` is one extra segment per padded row.
        max_seqlen: the longest document, a Python int (kernels need it on the host).
        row_offsets: (R+1,) int64 token offsets of the rows; every row holds whole documents and
            at most `row_capacity` tokens. Gradient accumulation splits batches by rows.
        row_num_tokens: (R,) int64 real tokens of each row, so a microbatch split off a padded
            batch still knows its real token count.
        num_tokens: real (non-pad) tokens, a Python int; == T unless padding was added.
        labels: (T,) int64 original token where the MLM loss applies, -100 elsewhere; None until
            the masker ran.
        row_capacity: tokens a row can hold (the data's max_seq_len); None when unknown.

    It is a Mapping over its fields that are not None (`batch["input_ids"]`, `"labels"
    in batch`), because Composer's trainer only moves Mappings and Sequences to the device: its
    `batch_to_device` leaves any other object's tensors where they are, and hands a Mapping back
    as a plain dict, which `coerce` (the DataSpec's `microbatch_transforms`) turns back into a
    PackedBatch. Fields are assigned by attribute; `batch[name] = value` also works for a field.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    row_offsets: torch.Tensor
    row_num_tokens: torch.Tensor
    num_tokens: int
    labels: torch.Tensor | None = None
    row_capacity: int | None = None

    # ---- the Mapping view (Composer and dict-style callers) ------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELD_NAMES:
            raise KeyError(key)
        value = getattr(self, key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _FIELD_NAMES:
            raise KeyError(f"{key!r} is not a PackedBatch field; fields: {', '.join(_FIELD_NAMES)}")
        setattr(self, key, value)

    def __iter__(self) -> Iterator[str]:
        return (name for name in _FIELD_NAMES if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def coerce(cls, batch: Mapping[str, Any]) -> PackedBatch:
        """`batch` itself when it is a PackedBatch, else one built from a Mapping with its field names.

        Raises:
            KeyError: naming the missing or unknown keys.
        """
        if isinstance(batch, cls):
            return batch
        unknown = sorted(set(batch) - set(_FIELD_NAMES))
        missing = sorted(n for n in _REQUIRED if n not in batch)
        if unknown or missing:
            raise KeyError(f"not a packed batch: missing keys {missing}, unknown keys {unknown}; "
                           f"a packed batch has {', '.join(_FIELD_NAMES)} (flexbert.data.packed_batch)")
        return cls(**batch)

    # ---- derived facts ---------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """R, the packing rows (Composer's samples)."""
        return len(self.row_offsets) - 1

    @property
    def num_docs(self) -> int:
        """D, the attention segments (documents, chunks of long ones, padding segments)."""
        return len(self.cu_seqlens) - 1

    @property
    def packing_efficiency(self) -> float:
        """Real tokens over the rows' capacity, num_tokens / (R * row_capacity)."""
        if self.row_capacity is None:
            raise ValueError("packing_efficiency needs row_capacity (the packer sets it)")
        return self.num_tokens / (self.num_rows * self.row_capacity)

    def model_inputs(self, device: torch.device | None = None) -> dict[str, Any]:
        """The model's keyword arguments (MODEL_INPUTS), tensors moved to `device`, max_seqlen a host int."""
        inputs = {name: getattr(self, name) for name in MODEL_INPUTS}
        if device is not None:
            inputs = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        inputs["max_seqlen"] = int(inputs["max_seqlen"])  # kernels need it on the host
        return inputs

    def replace(self, **changes: Any) -> PackedBatch:
        """A copy with `changes` applied (tensors shared, not copied)."""
        return dataclasses.replace(self, **changes)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(PackedBatch))
_REQUIRED = tuple(f.name for f in dataclasses.fields(PackedBatch) if f.default is dataclasses.MISSING)
