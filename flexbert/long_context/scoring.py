"""Score probe documents with a masked-LM: packed forward passes, per-target prediction and loss.

Documents go through the model the way training batches do: packed back to back, with
`cu_seqlens` marking document boundaries (no token attends outside its document) and `labels`
set only at the targets, so a model with sparse prediction runs its head on the targets only.
Documents are sorted by length and grouped up to `batch_tokens` tokens per forward pass;
grouping similar lengths keeps kernels that pad each document to the longest (SDPA on CPU) cheap.

The model is anything called like FlexBertForMaskedLM:
`model(input_ids=(T,), labels=(T,), cu_seqlens=(D+1,), max_seqlen=int)` returning an object with
`.logits` ((M, V) rows for the labelled tokens, or (T, V) for every token) and `.labels` aligned
with those rows. Tests use this to plug in models whose logits they construct.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Sequence

import numpy as np
import torch

from flexbert.long_context.probes import IGNORE_INDEX, ProbeDoc

__all__ = ["TargetScores", "score_documents", "pack_groups"]


@dataclasses.dataclass
class TargetScores:
    """The model's answers at one document's targets.

    Attributes:
        positions: (M,) document positions of the targets (increasing).
        labels: (M,) the true ids.
        predictions: (M,) argmax ids.
        nll: (M,) -log p(true id), in nats.
    """

    positions: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    nll: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels


def pack_groups(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices of documents grouped into forward passes of at most `batch_tokens` tokens.

    Longest first; a document longer than `batch_tokens` forms a group of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    used = 0
    for i in order:
        if groups and used + lengths[i] <= batch_tokens:
            groups[-1].append(i)
            used += lengths[i]
        else:
            groups.append([i])
            used = lengths[i]
    return groups


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def score_documents(model: Any, docs: Sequence[ProbeDoc], *, batch_tokens: int = 16384,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> list[TargetScores]:
    """Run `model` over `docs` and return each document's TargetScores (same order as `docs`).

    Args:
        model: a FlexBertForMaskedLM (or a module with its call signature), already on `device`.
        docs: probe documents.
        batch_tokens: tokens per forward pass.
        device: where the inputs go (default: the model's parameters' device, else CPU).
        dtype: autocast dtype (torch.bfloat16 / float16), None for full precision.
    """
    if device is None:
        param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    results: list[TargetScores | None] = [None] * len(docs)
    for group in pack_groups([len(d) for d in docs], batch_tokens):
        lengths = [len(docs[i]) for i in group]
        ids_T = torch.from_numpy(np.concatenate([docs[i].input_ids for i in group])).to(device)
        labels_T = torch.from_numpy(np.concatenate([docs[i].labels for i in group])).to(device)
        cu = torch.zeros(len(group) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
        with _autocast(device, dtype):
            out = model(input_ids=ids_T, labels=labels_T, cu_seqlens=cu.to(device), max_seqlen=max(lengths))
        logits, row_labels = out.logits, out.labels
        if row_labels is None:
            raise ValueError("the model returned no labels aligned with its logits; it must return MaskedLMOutput")
        if logits.dim() == 3:  # a padded caller's output: never for packed input
            raise ValueError(f"expected packed logits (rows, vocab), got shape {tuple(logits.shape)}")
        keep = row_labels != IGNORE_INDEX
        logits, row_labels = logits[keep].float(), row_labels[keep]
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(1, row_labels[:, None]).squeeze(1)
        pred = logits.argmax(dim=-1)
        nll_np, pred_np, lab_np = nll.cpu().numpy(), pred.cpu().numpy(), row_labels.cpu().numpy()
        start = 0
        for i in group:
            pos = np.flatnonzero(docs[i].labels != IGNORE_INDEX)
            end = start + len(pos)
            if not np.array_equal(lab_np[start:end], docs[i].labels[pos]):
                raise AssertionError("scored rows do not line up with the documents' targets")  # our own invariant
            results[i] = TargetScores(pos, lab_np[start:end], pred_np[start:end], nll_np[start:end])
            start = end
        if start != len(lab_np):
            raise AssertionError("the model returned more labelled rows than the documents hold")
    return results  # type: ignore[return-value]
