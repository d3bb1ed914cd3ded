"""The fine-tuning config: one typed dataclass, decoded strictly from the CLI or a YAML file.

Defaults live only here. `FinetuneConfig.__post_init__` checks values across fields and
raises `ValueError` saying what to change; `flexbert.config.strict.decode` adds the source.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

__all__ = ["FinetuneConfig", "TASKS"]

TASKS = ("classification", "regression")


@dataclasses.dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs.

    Attributes:
        checkpoint: a Composer checkpoint `.pt` (config.yaml beside it), a FlexBERT folder
            (model.safetensors + config.yaml) or a Hugging Face ModernBERT folder.
        train, validation, test: CSV (header row) or JSONL files; `test` is optional.
        text_field, text_pair_field, label_field: column / key names in those files.
        task: `classification` (labels are names, mapped to ids in a stable order) or
            `regression` (labels are numbers; the model has one output).
        tokenizer: tokenizer folder; default: the checkpoint folder if it holds tokenizer.json,
            else the `tokenizer:` recorded in the checkpoint's config.yaml.
        epochs, batch_size, eval_batch_size, max_seq_len: the usual; longer inputs are
            truncated (longest field first) and the count is reported, never silent.
        lr, optimizer, weight_decay, warmup_fraction: StableAdamW/AdamW from
            flexbert.train.optim; LR warms up linearly over `warmup_fraction` of the steps and
            decays linearly to 0 at the end.
        pooling, classifier_dropout: override the checkpoint's classifier settings (None keeps them).
        init_head_from_mlm: copy the MLM head's dense + norm into the classification head, as
            Hugging Face's `ModernBertForSequenceClassification.from_pretrained` does (same names).
        select_metric: validation metric that picks the best epoch and is the downstream score;
            None: accuracy (classification) or spearman (regression).
        output: folder for results.json (None: print only).
        device, precision: Composer's; `auto` picks a GPU when present (bf16 autocast there).
        seed: seeds the new head's init, data order and dropout.
    """

    checkpoint: str
    train: str
    validation: str
    test: Optional[str] = None
    text_field: str = "text"
    text_pair_field: Optional[str] = None
    label_field: str = "label"
    task: Literal["classification", "regression"] = "classification"
    tokenizer: Optional[str] = None

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    max_seq_len: int = 512
    lr: float = 5e-5
    optimizer: Literal["stable_adamw", "adamw"] = "stable_adamw"
    weight_decay: float = 1e-5
    warmup_fraction: float = 0.1

    pooling: Optional[Literal["cls", "mean"]] = None
    classifier_dropout: Optional[float] = None
    init_head_from_mlm: bool = True
    select_metric: Optional[str] = None

    output: Optional[str] = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["auto", "fp32", "amp_bf16"] = "auto"
    seed: int = 17

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_seq_len < 4:
            raise ValueError(f"max_seq_len must be >= 4 ([CLS] text [SEP] needs room), got {self.max_seq_len}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction is a fraction of the training steps in [0, 1), got {self.warmup_fraction}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout is a probability in [0, 1), got {self.classifier_dropout}")
        if self.text_pair_field is not None and self.text_pair_field == self.text_field:
            raise ValueError(f"text_pair_field and text_field are both '{self.text_field}'; "
                             "drop --text-pair-field for single texts")
        if self.label_field in (self.text_field, self.text_pair_field):
            raise ValueError(f"label_field '{self.label_field}' is also a text field; pass --label-field")
        metric = self.metric
        if metric not in self.metric_names:
            raise ValueError(f"select_metric '{metric}' is not a {self.task} metric; choices: "
                             f"{', '.join(self.metric_names)}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Metrics reported for this task (validation and test)."""
        return ("accuracy", "macro_f1") if self.task == "classification" else ("pearson", "spearman")

    @property
    def metric(self) -> str:
        """The metric that picks the best epoch and is reported as the downstream score."""
        return self.select_metric or ("accuracy" if self.task == "classification" else "spearman")
