"""Composer wrapper for FlexBertForSequenceClassification, with task metrics.

Metric names (the keys in Composer's `state.eval_metrics[label]` and in results.json):
  classification: `accuracy` (micro, = fraction correct) and `macro_f1` (unweighted mean of
  per-class F1, so a minority class counts as much as the majority);
  regression: `pearson` and `spearman` correlations of the single output with the target.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from composer.models import ComposerModel
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

__all__ = ["SequenceClassificationComposerModel", "task_metrics"]

INPUTS = ("input_ids", "attention_mask", "labels")


def task_metrics(task: str, num_labels: int) -> dict[str, Metric]:
    """Fresh metric objects for `task` (`classification` or `regression`)."""
    if task == "regression":
        return {"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()}
    return {"accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes=num_labels, average="macro")}


class SequenceClassificationComposerModel(ComposerModel):
    """Wraps the classifier at attribute `model` (checkpoint keys `model.<name>`)."""

    def __init__(self, model: torch.nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task
        self.num_labels = model.config.num_labels
        self.eval_metrics = task_metrics(task, self.num_labels)

    def forward(self, batch: Mapping[str, Any]) -> Any:
        return self.model(**{k: batch[k] for k in INPUTS if k in batch})

    def loss(self, outputs: Any, batch: Mapping[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: Mapping[str, Any], outputs: Any | None = None) -> torch.Tensor:
        if outputs is None:
            outputs = self.forward(batch)
        return outputs.logits

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        # No train metrics: the train loss is logged anyway, and argmax on every step costs time.
        return {} if is_train else self.eval_metrics

    def update_metric(self, batch: Mapping[str, Any], outputs: torch.Tensor, metric: Metric) -> None:
        labels = batch["labels"]
        if self.task == "regression":
            metric.update(outputs.float().reshape(-1), labels.float().reshape(-1))
        else:
            metric.update(outputs.argmax(dim=-1), labels)
