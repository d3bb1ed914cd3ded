"""Console-log parsing against a log printed by a real Composer 0.32 ConsoleLogger.

A tiny classifier is trained for 4 batches with console logging every 2 batches and evaluation
every 2 batches; an InMemoryLogger records the exact values for comparison (the console rounds
to 4 decimals). The JSON-lines reader is checked on the same run through FlexBERT's JsonlLogger.
"""
from __future__ import annotations

import io

import pytest
import torch

from flexbert.sweep.collect import parse_console_log, read_metrics_jsonl, summarize


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from composer import Trainer
    from composer.loggers import InMemoryLogger
    from composer.models import ComposerClassifier
    from torch.utils.data import DataLoader, TensorDataset

    from flexbert.train.jsonl_logger import JsonlLogger

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    stream = io.StringIO()
    memory = InMemoryLogger()
    jsonl = tmp_path_factory.mktemp("log") / "metrics.jsonl"
    trainer = Trainer(
        model=model,
        train_dataloader=DataLoader(data, batch_size=4),
        eval_dataloader=DataLoader(data, batch_size=8),
        max_duration="4ba",
        eval_interval="2ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        loggers=[memory, JsonlLogger(str(jsonl))],
        log_to_console=True,
        console_stream=stream,
        console_log_interval="2ba",
        progress_bar=False,
        device="cpu",
    )
    trainer.fit()
    trainer.close()
    return stream.getvalue(), memory, str(jsonl)


def _exact(memory, key: str) -> dict[int, float]:
    """{batch: value} from the InMemoryLogger (timestamp.batch is the number of batches done)."""
    return {int(ts.batch): float(v) for ts, v in memory.data[key]}


def test_console_log_train_and_eval_metrics_match_the_logged_values(real_run):
    text, memory, _ = real_run
    assert "[batch=2/4]:" in text and "Eval metrics/eval/MulticlassAccuracy" in text  # it is a real console log
    series = parse_console_log(text.splitlines(keepends=True))

    train = series["loss/train/total"]
    exact = _exact(memory, "loss/train/total")
    assert sorted(train) == [1, 2, 4]  # every 2 batches, and batch 1 (ConsoleLogger prints the first one)
    for step, value in train.items():
        assert value == pytest.approx(exact[step - 1], abs=5e-5)  # console rounds to 4 decimals

    evals = series["metrics/eval/MulticlassAccuracy"]
    exact_eval = _exact(memory, "metrics/eval/MulticlassAccuracy")
    assert sorted(evals) == sorted(exact_eval) == [2, 4]  # eval blocks take the step of the train block before them
    for step, value in evals.items():
        assert value == pytest.approx(exact_eval[step], abs=5e-5)


def test_jsonl_reader_gives_exact_values_at_exact_steps(real_run):
    _, memory, path = real_run
    series = read_metrics_jsonl(path)
    assert series["metrics/eval/MulticlassAccuracy"] == pytest.approx(_exact(memory, "metrics/eval/MulticlassAccuracy"))


def test_noise_between_blocks_is_ignored_and_later_values_win():
    log = [
        "[batch=2/8]:\n", "\t Train loss/train/total: 5.0000\n", "\t Train note: \"text\"\n",
        "some warning printed by a library\n", "\t Train loss/train/total: 99.0\n",  # outside a block: ignored
        "[Eval batch=1/1] Eval on eval data:\n", "\t Eval metrics/eval/MaskedLoss: 4.5000\n",
        "# flexbert.sweep attempt 2 (resumed)\n",
        "[batch=2/8]:\n", "\t Train loss/train/total: 4.9000\n",  # a resumed run repeats step 2
        "[batch=4/8]:\n", "\t Train loss/train/total: 4.0000\n", "\t Train throughput/tokens_per_sec: 100.0000\n",
        "[Eval batch=1/1] Eval on eval data:\n", "\t Eval metrics/eval/MaskedLoss: 3.5000\n",
        "\t Eval metrics/eval/MaskedAccuracy: 0.2500\n",
    ]
    series = parse_console_log(log)
    assert series["loss/train/total"] == {2: 4.9, 4: 4.0}
    assert "note" not in series
    summary = summarize(series)
    assert summary == {"steps": 4, "eval_loss": 3.5, "best_eval_loss": 3.5, "eval_accuracy": 0.25, "train_loss": 4.0,
                       "tokens_per_sec": 100.0, "peak_memory_gib": None}
