"""The console a person reads during a run: the `progress` callback and its text.

The callback is driven event by event with a fake clock (2 s per batch), so every number in
its lines is known exactly; one real `train.py` run checks the console end to end: compact
lines and eval lines by default, no escape codes off a terminal, Composer's full metric dump
only in metrics.jsonl (tests/test_train_logging.py checks the dump with `console_metrics: all`).
"""
from __future__ import annotations

import io
import json
import re
import types
from pathlib import Path

import pytest
from composer.core import Time, Timestamp, TimeUnit

from _train_support import REPO, make_corpus, run_train, tiny_run, write_yaml
from flexbert.train.builder import DEFAULT_CALLBACKS
from flexbert.train.callbacks import CALLBACKS, Progress, build_callback
from flexbert.train.progress_text import (ProgressSnapshot, bar_text, compact_line, eta_seconds, eval_line,
                                          format_duration, format_rate)

ESCAPES = re.compile(r"\x1b|\r")
LOSS, ACC = "loss/train/total", "metrics/train/MaskedAccuracy"


# --- the text ------------------------------------------------------------------------------------------
def test_eta_is_the_remaining_share_at_this_sessions_pace():
    assert eta_seconds(0.0, 0.25, 60.0) == pytest.approx(180.0)  # a quarter in a minute: three more
    assert eta_seconds(0.5, 0.75, 60.0) == pytest.approx(60.0)  # resumed at half: only this session's pace counts
    assert eta_seconds(0.0, 1.0, 60.0) == 0.0
    assert eta_seconds(0.3, 0.3, 60.0) is None and eta_seconds(0.0, 0.1, 0.0) is None  # no progress yet


def test_durations_and_rates_read_at_a_glance():
    assert [format_duration(s) for s in (0, 42.4, 65, 3599, 3600 * 2 + 180, 86400 * 3 + 3600 * 4, None)] == \
        ["0s", "42s", "1m05s", "59m59s", "2h03m", "3d04h", "-"]
    assert [format_rate(r) for r in (512, 12_345, 1_234_567, None)] == ["512 tok/s", "12.3k tok/s", "1.23M tok/s", "- tok/s"]


def test_compact_line_bar_text_and_eval_line():
    snap = ProgressSnapshot(step=200, total_steps=2000, fraction=0.1, loss=5.43214, accuracy=0.12345,
                            tokens_per_sec=12_345.0, elapsed_s=65.0, eta_s=585.0)
    assert compact_line(snap) == "step 200/2000 (10.0%) | loss 5.4321 | acc 0.1235 | 12.3k tok/s | elapsed 1m05s | ETA 9m45s"
    assert bar_text(snap) == "step 200/2000 | loss 5.4321 | acc 0.1235 | 12.3k tok/s | 1m05s<9m45s"
    unknown = ProgressSnapshot(step=3, total_steps=None, fraction=0.5, loss=None, accuracy=None, tokens_per_sec=None,
                               elapsed_s=1.0, eta_s=None)  # max_duration in tokens; nothing logged yet
    assert compact_line(unknown) == "step 3 (50.0%) | loss - | acc - | - tok/s | elapsed 1s | ETA -"
    assert eval_line(1000, 2000, "eval", {"MaskedLoss": 3.21, "MaskedAccuracy": 0.412, "Perplexity": 24.8}) == \
        "eval at step 1000/2000: loss 3.2100 | acc 0.4120"
    assert eval_line(5, None, "code", {}) == "eval code at step 5: loss - | acc -"


# --- the callback, event by event, on a fake clock --------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _state(max_duration: str = "10ba"):
    return types.SimpleNamespace(run_name="tiny", max_duration=Time.from_timestring(max_duration),
                                 timestamp=Timestamp(), dataloader_label="eval")


def _drive(progress: Progress, steps: int, tokens_per_batch: int = 100, eval_at: tuple[int, ...] = (),
           eval_seconds: float = 5.0, max_duration: str = "10ba") -> types.SimpleNamespace:
    """Run `steps` batches of 2 s each (loss 10 - step, accuracy step / 100) through the callback."""
    clock, state = progress.clock, _state(max_duration)
    progress.fit_start(state, logger=None)
    for step in range(1, steps + 1):
        clock.now += 2.0
        progress.log_metrics({LOSS: 10.0 - step, ACC: step / 100, "throughput/mfu": 0.5})
        state.timestamp = Timestamp(batch=step, token=tokens_per_batch * step, sample=4 * step)
        progress.batch_end(state, logger=None)
        if step in eval_at:
            progress.eval_start(state, logger=None)
            clock.now += eval_seconds
            progress.log_metrics({"metrics/eval/MaskedLoss": 3.0, "metrics/eval/MaskedAccuracy": 0.25})
            progress.eval_end(state, logger=None)
    progress.fit_end(state, logger=None)
    progress.close(state, logger=None)
    return state


def test_compact_lines_every_interval_with_exact_eta_and_rate():
    out = io.StringIO()
    progress = Progress(bar=False, interval="4ba", window=2, metrics_file="runs/x/metrics.jsonl", stream=out, clock=FakeClock())
    _drive(progress, steps=10, eval_at=(4,))
    lines = out.getvalue().splitlines()
    assert lines[0] == "training tiny: every metric goes to runs/x/metrics.jsonl; console_metrics: all prints them all here"
    # step 1 always; then each 4ba boundary; the eval (5 s, not training) after step 4 slows the ETA, not tokens/s
    assert lines[1:] == [
        "step 1/10 (10.0%) | loss 9.0000 | acc 0.0100 | 50 tok/s | elapsed 2s | ETA 18s",
        "step 4/10 (40.0%) | loss 6.5000 | acc 0.0350 | 50 tok/s | elapsed 8s | ETA 12s",
        "eval at step 4/10: loss 3.0000 | acc 0.2500",
        "step 8/10 (80.0%) | loss 2.5000 | acc 0.0750 | 50 tok/s | elapsed 21s | ETA 5s",
        "step 10/10 (100.0%) | loss 0.5000 | acc 0.0950 | 50 tok/s | elapsed 25s | ETA 0s",
        "finished at step 10/10 in 25s (50 tok/s on average)",
    ]
    assert not ESCAPES.search(out.getvalue())


def test_a_resumed_run_counts_only_its_own_pace_and_durations_in_tokens_work():
    out = io.StringIO()
    progress = Progress(bar=False, interval="1000tok", window=1, stream=out, clock=FakeClock())
    clock, state = progress.clock, _state("2000tok")
    state.timestamp = Timestamp(batch=10, token=1000)  # resumed half way
    progress.fit_start(state, logger=None)
    clock.now += 4.0
    progress.log_metrics({LOSS: 1.0})
    state.timestamp = Timestamp(batch=11, token=1500)
    progress.batch_end(state, logger=None)
    assert out.getvalue().splitlines()[1:] == ["step 11 (75.0%) | loss 1.0000 | acc - | 125 tok/s | elapsed 4s | ETA 4s"]
    assert "set loggers.jsonl to keep every metric in a file" in out.getvalue()


def test_on_a_terminal_one_bar_with_eval_lines_above_it():
    tty = FakeTTY()
    progress = Progress(bar="auto", interval="4ba", window=2, stream=tty, clock=FakeClock())
    _drive(progress, steps=6, eval_at=(3,), max_duration="6ba")
    text = tty.getvalue()
    assert "\r" in text and "|" in text  # tqdm redraws one line in place
    assert "step 6/6 | loss 4.5000 | acc 0.0550 | 50 tok/s | 17s<0s" in text
    assert "eval at step 3/6: loss 3.0000 | acc 0.2500\n" in text
    assert "step 4/6 (" not in text  # no compact lines on a terminal
    assert text.rstrip().endswith("finished at step 6/6 in 17s (50 tok/s on average)")


def test_bar_and_window_are_checked():
    with pytest.raises(ValueError, match="must be true, false or 'auto'"):
        Progress(bar="yes")
    with pytest.raises(ValueError, match="window must be >= 1"):
        Progress(window=0)
    with pytest.raises(ValueError, match="interval"):
        Progress(interval="2ep")


def test_progress_is_a_default_callback_registered_and_documented():
    assert "progress" in CALLBACKS and "progress" in DEFAULT_CALLBACKS
    assert isinstance(build_callback("progress", {"bar": False}), Progress)
    readme = (REPO / "yamls" / "README.md").read_text()
    for key in ("`console_metrics`", "`progress_bar`", "`progress`"):
        assert key in readme, key


# --- a real run ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_py_prints_compact_lines_and_keeps_the_full_dump_in_the_file(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_train=100, n_val=10)
    run = tiny_run(corpus, tmp_path / "save", max_duration="4ba", console_log_interval="2ba", log_to_console=True,
                   eval_interval="4ba", eval_subset_num_batches=1, data={"eval_split": "val"})
    out = run_train(str(write_yaml(tmp_path / "run.yaml", run)))  # captured: not a terminal
    assert out.returncode == 0, out.stderr[-3000:]
    console = out.stdout + out.stderr
    assert not ESCAPES.search(console), console[-2000:]
    steps = re.findall(r"^step (\d+)/4 \(\d+\.\d%\) \| loss \d+\.\d{4} \| acc \d\.\d{4} \| [\d.]+[kM]? tok/s \| "
                       r"elapsed \S+ \| ETA \S+$", console, re.M)
    assert steps == ["1", "2", "4"], console[-3000:]
    assert re.search(r"^eval at step 4/4: loss \d+\.\d{4} \| acc \d\.\d{4}$", console, re.M), console[-3000:]
    assert LOSS not in console and "Config:" not in console  # Composer's dump and its config print are off
    records = [json.loads(line) for line in (Path(tmp_path / "save" / "metrics.jsonl")).read_text().splitlines()]
    assert sum(LOSS in r for r in records) == 4 and any("metrics/eval/MaskedAccuracy" in r for r in records)
