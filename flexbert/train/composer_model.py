"""Composer wrapper around FlexBertForMaskedLM, and the DataSpec for packed batches.

The wrapped model lives at attribute `model`, so checkpoint keys are `model.<HF name>`
and the exporter only strips the `model.` prefix.

Metrics (train and eval): `MaskedAccuracy` (argmax == label on masked positions) and
`MaskedLoss` (token-weighted mean cross-entropy over masked positions). Eval also reports
`Perplexity` = exp(eval loss over all masked tokens of the eval set).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from composer.core import DataSpec
from composer.models import ComposerModel
from torchmetrics import Metric

from flexbert.labels import IGNORE_INDEX
from flexbert.data.batching import num_samples as rows_in
from flexbert.data.batching import num_tokens as tokens_in
from flexbert.data.batching import split_packed_batch
from flexbert.data.packed_batch import PackedBatch

__all__ = ["FlexBertComposerModel", "MaskedAccuracy", "MaskedLoss", "Perplexity", "packed_data_spec"]


def _masked_logits_labels(outputs: Any, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) restricted to positions where the MLM loss applies.

    With sparse prediction the model already returns only labelled rows and their labels
    (`outputs.labels`); otherwise logits cover every token and are filtered here.
    """
    logits = outputs.logits
    labels = getattr(outputs, "labels", None)
    if labels is None or labels.shape[0] != logits.shape[0]:
        labels = batch["labels"].to(logits.device)
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep]


class MaskedAccuracy(Metric):
    """Fraction of masked positions whose argmax prediction equals the original token."""

    full_state_update = False

    def __init__(self, dist_sync_on_step: bool = False):
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor | None, labels: torch.Tensor, predictions: torch.Tensor | None = None,
               token_loss: torch.Tensor | None = None) -> None:
        """From logits, or from per-row argmax `predictions` (the chunked MLM loss returns them, no logits)."""
        if predictions is None:
            predictions = logits.argmax(-1)
        self.correct += (predictions == labels).sum().float()
        self.total += labels.numel()

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1)


class MaskedLoss(Metric):
    """Mean cross-entropy over every masked token seen (token-weighted, not batch-weighted)."""

    full_state_update = False

    def __init__(self, dist_sync_on_step: bool = False):
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.add_state("sum_loss", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor | None, labels: torch.Tensor, predictions: torch.Tensor | None = None,
               token_loss: torch.Tensor | None = None) -> None:
        """From logits, or from per-row fp32 `token_loss` (the chunked MLM loss returns it, no logits)."""
        if token_loss is not None:
            self.sum_loss += token_loss.sum().double()
        elif labels.numel():
            self.sum_loss += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        self.total += labels.numel()

    def compute(self) -> torch.Tensor:
        return (self.sum_loss / self.total.clamp(min=1)).float()


class Perplexity(MaskedLoss):
    """exp(mean masked cross-entropy)."""

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute().clamp(max=math.log(torch.finfo(torch.float32).max)))


class FlexBertComposerModel(ComposerModel):
    """ComposerModel for masked-LM pretraining on packed batches.

    Args:
        model: a FlexBertForMaskedLM (kept as attribute `model`).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.train_metrics = {"MaskedAccuracy": MaskedAccuracy(), "MaskedLoss": MaskedLoss()}
        self.eval_metrics = {"MaskedAccuracy": MaskedAccuracy(), "MaskedLoss": MaskedLoss(), "Perplexity": Perplexity()}

    def forward(self, batch: PackedBatch | Mapping[str, Any]) -> Any:
        device = next(self.model.parameters()).device
        return self.model(**PackedBatch.coerce(batch).model_inputs(device))

    def loss(self, outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> Any:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: Any, outputs: Any, metric: Metric) -> None:
        rows = _scored_rows(outputs)
        if rows is not None and isinstance(metric, MaskedAccuracy | MaskedLoss):
            predictions, token_loss, labels = rows  # no logits made: the chunked loss never materialised them
            metric.update(None, labels, predictions=predictions, token_loss=token_loss)
            return
        logits, labels = _masked_logits_labels(outputs, batch)
        metric.update(logits.detach(), labels)


def _scored_rows(outputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(predictions, token losses, labels) of the labelled rows when the loss kernel returned them, else None."""
    preds, token_loss, labels = (getattr(outputs, k, None) for k in ("predictions", "token_loss", "labels"))
    if preds is None or token_loss is None or labels is None or labels.shape != preds.shape:
        return None
    keep = labels != IGNORE_INDEX
    return preds[keep], token_loss[keep], labels[keep]


def packed_data_spec(loader: Any, *, num_samples: int | None = None) -> DataSpec:
    """DataSpec for FlexBERT packed batches.

    `split_batch` splits by packing rows (gradient accumulation keeps whole rows);
    samples = rows; tokens = real (non-pad) tokens, plus `loss_generating` = labelled
    tokens so that Composer can weight microbatches by masked tokens
    (`accumulate_train_batch_on_tokens`), making accumulation equal to one big batch.
    Composer's device transfer hands a Mapping back as a plain dict: `microbatch_transforms`
    (run right after it, on every train and eval microbatch) makes it a PackedBatch again.
    """
    def get_tokens(batch: Mapping[str, Any]) -> dict[str, int]:
        return {"total": int(tokens_in(batch)), "loss_generating": int((batch["labels"] != IGNORE_INDEX).sum())}

    def split(batch: Mapping[str, Any], microbatch_size: int | float) -> list[PackedBatch]:
        return split_packed_batch(batch, int(microbatch_size))

    return DataSpec(
        loader,
        num_samples=num_samples,
        split_batch=split,
        get_num_samples_in_batch=lambda b: int(rows_in(b)),
        get_num_tokens_in_batch=get_tokens,
        microbatch_transforms=PackedBatch.coerce,
    )
