"""A real 2-variant x 1-seed sweep of the tiny demo model through train.py (a few steps each)."""
from __future__ import annotations

import csv
import json
import math
import os
import textwrap

import pytest

from flexbert.sweep.__main__ import main
from flexbert.sweep.collect import parse_console_log, read_metrics_jsonl

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "data", "demo")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DEMO, "mds")), reason="demo corpus missing: python data_prep/demo_corpus.py --output data/demo")
def test_real_tiny_sweep_runs_reports_and_skips_when_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "real.yaml"
    sweep.write_text(textwrap.dedent(f"""
        base: {os.path.join(REPO, 'yamls', 'demo.yaml')}
        command: "{{python}} {os.path.join(REPO, 'train.py')}"
        overrides:
          tokenizer: {os.path.join(DEMO, 'tokenizer')}
          data.local: {os.path.join(DEMO, 'mds')}
          max_duration: 4ba
          global_train_batch_size: 4
          device_train_microbatch_size: 4
          device_eval_batch_size: 4
          eval_interval: 2ba
          eval_subset_num_batches: 1
          save_interval: 2ba
          console_log_interval: 1ba
          console_metrics: all
          scheduler: {{t_warmup: 1ba, t_decay: 1ba}}
          export_hf: null
        variants:
          - name: baseline
          - name: rmsnorm
            overrides: {{model.norm: rmsnorm}}
        output: out
    """))
    assert main([str(sweep)]) == 0
    with open(os.path.join("out", "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["status"], r["steps"]) for r in rows] == [("baseline__seed=0", "done", "4"), ("rmsnorm__seed=0", "done", "4")]
    for row in rows:
        assert math.isfinite(float(row["eval_loss"])) and float(row["tokens_per_sec"]) > 0 and int(row["params_total"]) > 0
        run_dir = os.path.join("out", "runs", row["run"])
        assert json.loads(open(os.path.join(run_dir, "DONE")).read())["metrics"]["metrics_source"] == "metrics.jsonl"
        # With console_metrics: all, the console log the runner captured parses to the same eval
        # losses (rounded to 4 decimals).
        from_log = parse_console_log(open(os.path.join(run_dir, "train.log")))["metrics/eval/MaskedLoss"]
        exact = read_metrics_jsonl(os.path.join(run_dir, "metrics.jsonl"))["metrics/eval/MaskedLoss"]
        assert from_log == pytest.approx(exact, abs=5e-5) and sorted(exact) == [2, 4]
    assert os.path.isfile(os.path.join("out", "plots", "eval_loss_curves.png"))
    capsys.readouterr()
    assert main([str(sweep)]) == 0  # a second invocation finds both runs finished
    assert "runs: 0 finished now, 2 finished earlier, 0 failed" in capsys.readouterr().out
