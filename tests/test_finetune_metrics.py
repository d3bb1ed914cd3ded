"""Task metrics computed through the Composer wrapper agree with hand formulas."""
from __future__ import annotations

import math

import pytest
import torch

from _finetune_support import random_mlm
from flexbert.finetune.composer_model import SequenceClassificationComposerModel
from flexbert.finetune.run import majority_baseline


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def _ranks(v: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _wrapper(task: str, num_labels: int) -> SequenceClassificationComposerModel:
    from flexbert.model import FlexBertForSequenceClassification

    cfg = random_mlm().config
    import dataclasses

    return SequenceClassificationComposerModel(
        FlexBertForSequenceClassification(dataclasses.replace(cfg, num_labels=num_labels)), task)


def test_regression_metrics_match_pearson_and_spearman_by_hand():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(40, generator=gen)
    pred = (target + 0.7 * torch.randn(40, generator=gen)).reshape(-1, 1)  # (B, 1), as the model outputs
    pred[3] = pred[4]  # a tie, so the average-rank rule matters
    wrapper = _wrapper("regression", 1)
    metrics = wrapper.get_metrics(is_train=False)
    assert set(metrics) == {"pearson", "spearman"} and wrapper.get_metrics(is_train=True) == {}
    for half in (slice(0, 25), slice(25, 40)):  # two batches: state must accumulate
        for m in metrics.values():
            wrapper.update_metric({"labels": target[half]}, pred[half], m)
    p, t = pred.reshape(-1).tolist(), target.tolist()
    assert float(metrics["pearson"].compute()) == pytest.approx(_pearson(p, t), abs=1e-5)
    assert float(metrics["spearman"].compute()) == pytest.approx(_pearson(_ranks(p), _ranks(t)), abs=1e-5)


def test_classification_accuracy_and_macro_f1_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.nn.functional.one_hot(pred, 3).float()
    wrapper = _wrapper("classification", 3)
    metrics = wrapper.get_metrics()
    for m in metrics.values():
        wrapper.update_metric({"labels": labels}, logits, m)
    assert float(metrics["accuracy"].compute()) == pytest.approx(4 / 6)
    # per class F1 = 2PR/(P+R): class 0 P 1 R 2/3 -> 0.8; class 1 P 1/2 R 1/2 -> 0.5; class 2 P 1/2 R 1 -> 2/3
    assert float(metrics["macro_f1"].compute()) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_majority_baseline_predicts_the_most_frequent_training_label():
    b = majority_baseline(train_ids=[1, 1, 0], eval_ids=[1, 0, 0, 0], num_labels=2)
    assert b["accuracy"] == pytest.approx(0.25)
    # class 1: P 1/4, R 1 -> F1 0.4; class 0 never predicted -> F1 0; macro = 0.2
    assert b["macro_f1"] == pytest.approx(0.2)


def test_forward_and_loss_through_the_wrapper():
    wrapper = _wrapper("classification", 2)
    batch = {"input_ids": torch.tensor([[1, 9, 9, 2], [1, 8, 2, 3]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
             "labels": torch.tensor([0, 1])}
    out = wrapper(batch)
    assert wrapper.eval_forward(batch).shape == (2, 2)
    assert wrapper.loss(out, batch).item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits, batch["labels"]).item(), abs=1e-6)
