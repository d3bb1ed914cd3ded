"""Fine-tune a pretrained FlexBERT checkpoint on a labelled task with Composer's Trainer.

Flow: read and check every data file (fail before loading any weights) -> load the checkpoint
and its tokenizer -> tokenize -> build the classifier (encoder copied, head new) -> train for
`epochs`, evaluating on the validation set after each -> keep the weights of the best epoch (by
`cfg.metric`) -> score the test set with them -> write results.json atomically.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import warnings
from typing import Any, Sequence

import torch

from flexbert.config.optim import OptimizerConfig, SchedulerConfig
from flexbert.data.tokenizer import check_vocab_fits, load_tokenizer
from flexbert.finetune.config import FinetuneConfig
from flexbert.finetune.data import (EncodedDataset, Example, build_label_map, collate, encode, label_ids,
                            majority_label, read_examples)
from flexbert.finetune.model_loading import build_classifier, find_tokenizer, load_pretrained
from flexbert.outputs import atomic_write_json

__all__ = ["finetune", "TaskData", "load_task_data", "majority_baseline"]

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TaskData:
    """Examples per split, the label names (classification) and the targets per split."""

    examples: dict[str, list[Example]]
    labels: list[str] | None
    targets: dict[str, list[int] | list[float]]


def load_task_data(cfg: FinetuneConfig) -> TaskData:
    """Read train/validation(/test); map classification labels with the training file's label set."""
    examples = {}
    for split in SPLITS:
        path = getattr(cfg, split)
        if path is None:
            continue
        examples[split] = read_examples(path, text_field=cfg.text_field, text_pair_field=cfg.text_pair_field,
                                        label_field=cfg.label_field, task=cfg.task)
    if cfg.task == "regression":
        return TaskData(examples, None, {s: [float(e.label) for e in ex] for s, ex in examples.items()})
    labels = build_label_map(examples["train"])
    return TaskData(examples, labels, {s: label_ids(ex, labels) for s, ex in examples.items()})


def majority_baseline(train_ids: Sequence[int], eval_ids: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro F1 of always predicting the most frequent training class."""
    from flexbert.finetune.composer_model import task_metrics  # import cost: Composer loads at training only

    guess = majority_label(train_ids)
    target = torch.tensor(list(eval_ids))
    pred = torch.full_like(target, guess)
    return {name: float(m(pred, target)) for name, m in task_metrics("classification", num_labels).items()}


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _loader(ds: EncodedDataset, batch_size: int, pad_id: int, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(seed) if shuffle else None  # own generator: order set by cfg.seed only
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       collate_fn=lambda items: collate(items, pad_id))


def _better(metric: str, new: float, old: float | None) -> bool:
    """Higher is better for every task metric; NaN (e.g. a constant regression output) never wins."""
    if math.isnan(new):
        return False
    return old is None or math.isnan(old) or new > old


def _make_tracker(metric: str):
    """A Composer callback recording per-epoch train loss and validation metrics, keeping the best weights."""
    from composer.core import Callback, State
    from composer.loggers import Logger

    class EpochTracker(Callback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.best: dict[str, Any] | None = None
            self.best_state: dict[str, torch.Tensor] | None = None
            self._loss_sum, self._loss_n = 0.0, 0

        def batch_end(self, state: State, logger: Logger) -> None:
            loss = state.loss
            if isinstance(loss, dict):
                loss = sum(loss.values())
            self._loss_sum += float(loss)
            self._loss_n += 1

        def eval_end(self, state: State, logger: Logger) -> None:
            if state.dataloader_label != "validation":
                return
            epoch = int(state.timestamp.epoch.value)
            if self.rows and self.rows[-1]["epoch"] == epoch:
                return  # Composer may evaluate again at FIT_END on the same weights
            values = {name: float(m.compute()) for name, m in state.eval_metrics["validation"].items()}
            row = {"epoch": epoch, "train_loss": self._loss_sum / max(1, self._loss_n), "validation": values}
            self._loss_sum, self._loss_n = 0.0, 0
            self.rows.append(row)
            if _better(metric, values[metric], None if self.best is None else self.best["validation"][metric]):
                self.best = row
                # A CPU copy of the classifier: the test set is scored with the best epoch's weights.
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.model.model.state_dict().items()}

    return EpochTracker()


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run one fine-tuning job; return the results dict (also written to cfg.output/results.json)."""
    from composer import Evaluator, Trainer

    from flexbert.finetune.composer_model import SequenceClassificationComposerModel  # import cost: Composer loads at training only
    from flexbert.train.optim import build_optimizer  # import cost: Composer loads at training only
    from flexbert.train.schedulers import build_scheduler  # import cost: Composer loads at training only

    data = load_task_data(cfg)  # bad data fails here, before any weights are read
    pre = load_pretrained(cfg.checkpoint)
    tok_dir = find_tokenizer(pre, cfg.tokenizer)
    tok = load_tokenizer(tok_dir)
    check_vocab_fits(tok, pre.model.config.vocab_size, where="the checkpoint's vocab_size")

    encoded = {s: encode(ex, tok, cfg.max_seq_len) for s, ex in data.examples.items()}
    for split, enc in encoded.items():
        if enc.truncated:
            log.warning("%s: %d of %d examples truncated to max_seq_len %d", split, enc.truncated,
                        len(enc.input_ids), cfg.max_seq_len)
    datasets = {s: EncodedDataset(encoded[s].input_ids, data.targets[s]) for s in encoded}

    num_labels = 1 if cfg.task == "regression" else len(data.labels)
    _seed(cfg.seed)
    clf, report = build_classifier(pre, num_labels, regression=cfg.task == "regression", pooling=cfg.pooling,
                                   classifier_dropout=cfg.classifier_dropout,
                                   init_head_from_mlm=cfg.init_head_from_mlm)
    kind = pre.kind
    del pre  # the masked-LM copy is no longer needed: free its memory before training
    model = SequenceClassificationComposerModel(clf, cfg.task)

    train_dl = _loader(datasets["train"], cfg.batch_size, tok.pad_id, True, cfg.seed)
    val_dl = _loader(datasets["validation"], cfg.eval_batch_size, tok.pad_id, False, cfg.seed)
    total = cfg.epochs * len(train_dl)
    warmup = int(round(cfg.warmup_fraction * total))
    # Times in batches (integers): a linear warmup then a linear decay to 0 at the last step.
    sched_cfg = SchedulerConfig(name="warmup_stable_decay", t_warmup=f"{warmup}ba", t_decay=f"{total - warmup}ba",
                                decay_shape="linear", alpha_i=0.0, alpha_f=0.0)
    optim_cfg = OptimizerConfig(name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                no_decay_for=["norm", "bias"])  # ModernBERT's fine-tuning exempts 1-D params only
    optimizer = build_optimizer(clf, optim_cfg)

    device = None if cfg.device == "auto" else cfg.device
    on_gpu = cfg.device == "gpu" or (cfg.device == "auto" and torch.cuda.is_available())
    precision = cfg.precision if cfg.precision != "auto" else ("amp_bf16" if on_gpu else "fp32")
    tracker = _make_tracker(cfg.metric)
    metric_names = list(cfg.metric_names)
    # Composer warns on every last, short batch ("Cannot split tensor of length 12 ..."): expected here.
    warnings.filterwarnings("ignore", message="Cannot split tensor of length")
    # SpearmanCorrCoef keeps every prediction to rank them; eval sets here are small by design.
    warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save all targets")
    trainer = Trainer(
        model=model, train_dataloader=train_dl,
        eval_dataloader=Evaluator(label="validation", dataloader=val_dl, metric_names=metric_names),
        eval_interval="1ep", max_duration=f"{cfg.epochs}ep", optimizers=optimizer,
        schedulers=build_scheduler(sched_cfg), step_schedulers_every_batch=True,
        device=device, precision=precision, seed=cfg.seed, callbacks=[tracker], loggers=[],
        progress_bar=False, log_to_console=False,
    )
    trainer.fit()
    if tracker.best is None:
        raise RuntimeError(f"no validation result is usable: every epoch's {cfg.metric} was NaN")

    test_metrics = None
    if "test" in datasets:
        model.model.load_state_dict(tracker.best_state)
        test_dl = _loader(datasets["test"], cfg.eval_batch_size, tok.pad_id, False, cfg.seed)
        trainer.eval(eval_dataloader=Evaluator(label="test", dataloader=test_dl, metric_names=metric_names))
        test_metrics = {name: float(m.compute()) for name, m in trainer.state.eval_metrics["test"].items()}
    trainer.close()

    baseline = None
    if cfg.task == "classification":
        train_ids = data.targets["train"]
        guess = majority_label(train_ids)
        baseline = {"label": data.labels[guess],
                    **{s: majority_baseline(train_ids, data.targets[s], num_labels) for s in ("validation", "test")
                       if s in data.targets}}
    final_split = "test" if test_metrics is not None else "validation"
    final_value = (test_metrics or tracker.best["validation"])[cfg.metric]
    results = {
        "task": cfg.task,
        "checkpoint": {"path": cfg.checkpoint, "kind": kind, "tokenizer": tok_dir},
        "labels": data.labels,
        "num_examples": {s: len(ex) for s, ex in data.examples.items()},
        "truncated": {s: enc.truncated for s, enc in encoded.items()},
        "weights": dataclasses.asdict(report),
        "epochs": tracker.rows,
        "best_epoch": tracker.best["epoch"],
        "selected_metric": cfg.metric,
        "validation": tracker.best["validation"],
        "test": test_metrics,
        "majority_baseline": baseline,
        "downstream": {"metric": cfg.metric, "value": final_value, "split": final_split},
        "config": dataclasses.asdict(cfg),
    }
    if cfg.output:
        atomic_write_json(os.path.join(cfg.output, "results.json"), results)
    return results

