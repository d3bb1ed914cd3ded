"""Turn a pretrained FlexBERT encoder into FlexBertForSequenceClassification.

The encoder is loaded by `flexbert.export.pretrained.load_pretrained` (Composer checkpoint,
FlexBERT folder or Hugging Face folder; its names are re-exported here). The classifier
gets the encoder (``model.*``) and, optionally, the MLM head's dense + norm (``head.*``, as
Hugging Face does since the names match); everything else is newly initialised and reported.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from flexbert.export.pretrained import CheckpointError, Pretrained, checkpoint_kind, find_tokenizer, load_pretrained
from flexbert.model import FlexBertForSequenceClassification

__all__ = ["CheckpointError", "Pretrained", "LoadReport", "checkpoint_kind", "load_pretrained", "build_classifier",
           "find_tokenizer"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadReport:
    """What the classifier got from the checkpoint."""

    loaded: list[str]
    newly_initialised: list[str]
    unused: list[str]

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded from the checkpoint; newly initialised: "
                f"{', '.join(self.newly_initialised) or 'none'}; unused: {', '.join(self.unused) or 'none'}")


def build_classifier(pre: Pretrained, num_labels: int, *, regression: bool, pooling: str | None = None,
                     classifier_dropout: float | None = None,
                     init_head_from_mlm: bool = True) -> tuple[torch.nn.Module, LoadReport]:
    """A FlexBertForSequenceClassification with the pretrained encoder weights copied in.

    Args:
        pre: the loaded masked-LM model.
        num_labels: classes (1 for regression).
        regression: sets problem_type so the loss never depends on the label dtype.
        pooling, classifier_dropout: override the checkpoint config (None keeps it).
        init_head_from_mlm: also copy `head.*` (dense + norm of the MLM head).

    Seed the RNG before calling: the new weights come from the model's own initialiser.
    """
    changes: dict[str, Any] = {"num_labels": num_labels,
                               "problem_type": "regression" if regression else "single_label_classification"}
    if pooling is not None:
        changes["classifier_pooling"] = pooling
    if classifier_dropout is not None:
        changes["classifier_dropout"] = classifier_dropout
    cfg = dataclasses.replace(pre.model.config, **changes)
    clf = FlexBertForSequenceClassification(cfg)
    src = pre.model.state_dict()
    own = clf.state_dict()
    prefixes = ("model.", "head.") if init_head_from_mlm else ("model.",)
    take = {k: v for k, v in src.items() if k.startswith(prefixes) and k in own and own[k].shape == v.shape}
    missing_encoder = sorted(k for k in own if k.startswith("model.") and k not in take)
    if missing_encoder:  # same config on both sides: this is a bug, not a user error
        raise CheckpointError(f"{pre.path}: encoder tensors missing from the checkpoint: {missing_encoder[:8]}")
    clf.load_state_dict(take, strict=False)
    report = LoadReport(loaded=sorted(take), newly_initialised=sorted(set(own) - set(take)),
                        unused=sorted(set(src) - set(take)))
    log.info("classifier from %s checkpoint %s: %s", pre.kind, pre.path, report.summary())
    return clf, report
