"""The local runner and the report, driven by a fake training command.

The fake trainer takes train.py's command line (base YAML + key=value overrides), prints
Composer-console-style blocks, keeps a "checkpoint" (the last step) in save_folder and
continues from it under autoresume=true. FAKE_FAIL=<substring of run_name> makes it exit 1
at step 2. Its losses depend on model.norm and the seed, so the report's order is known.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import textwrap

import pytest

from flexbert.sweep.__main__ import main
from flexbert.sweep.collect import collect, status_of
from flexbert.sweep.expand import expand
from flexbert.sweep.report import aggregate, write_report
from flexbert.sweep.runner import run_sweep
from flexbert.sweep.spec import load_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_TRAIN = r'''
import os, sys
args = dict(a.split("=", 1) for a in sys.argv[2:])
folder = args["save_folder"]
os.makedirs(folder, exist_ok=True)
total = int(args["max_duration"].rstrip("ba"))
ckpt = os.path.join(folder, "latest-rank0.pt")
start = 0
if args.get("autoresume") == "true" and os.path.exists(ckpt):
    start = int(open(ckpt).read())
    print(f"resuming from step {start}")
loss0 = {"layernorm": 3.0, "rmsnorm": 2.5}[args.get("model.norm", "layernorm")] + 0.1 * int(args["seed"])
for step in range(start + 1, total + 1):
    print(f"[batch={step}/{total}]:")
    print(f"\t Train loss/train/total: {loss0 - 0.1 * step + 0.5:.4f}")
    print(f"\t Train throughput/tokens_per_sec: {1000.0 + step:.4f}")
    print(f"\t Train memory/peak_rss_gib: {0.5 + 0.01 * step:.4f}")
    if step % 2 == 0:
        print("[Eval batch=1/2] Eval on eval data")
        print("[Eval batch=2/2] Eval on eval data:")
        print(f"\t Eval metrics/eval/MaskedLoss: {loss0 - 0.1 * step:.4f}")
        print(f"\t Eval metrics/eval/MaskedAccuracy: {0.05 * step:.4f}")
    with open(ckpt, "w") as f:
        f.write(str(step))
    if os.environ.get("FAKE_FAIL", "\0") in args["run_name"] and step == 2:
        print("RuntimeError: boom")
        sys.exit(1)
'''

# A downstream evaluation reading the run's {checkpoint} (the fake's last step) as its score.
FAKE_DOWNSTREAM = r'''
import json, sys
print("fine-tuning ...")
print(json.dumps({"score": int(open(sys.argv[1]).read()) / 10, "task": "fake"}))
'''


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    """A 2-variant x 2-seed sweep on the real demo config, launched through the fake trainer."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    (tmp_path / "fake_eval.py").write_text(FAKE_DOWNSTREAM)
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""
        base: {os.path.join(REPO, 'yamls', 'demo.yaml')}
        command: "{{python}} fake_train.py"
        metrics_jsonl: false          # the fake prints to the console only: exercise log parsing
        overrides: {{max_duration: 4ba}}
        variants:
          - name: layernorm
          - name: rmsnorm
            overrides: {{model.norm: rmsnorm}}
        seeds: [0, 1]
        output: out
        downstream: "{sys.executable} fake_eval.py {{checkpoint}}"
    """))
    return str(path)


def test_runs_all_then_skips_finished_runs(sweep_file, tmp_path):
    sweep = load_sweep(sweep_file)
    runs = expand(sweep)
    lines = []
    assert run_sweep(sweep, runs, echo=lines.append) == {"done": 4, "failed": 0, "skipped": 0}
    assert lines[0] == "[1/4] layernorm__seed=0: starting; log: out/runs/layernorm__seed=0/train.log"
    assert "[1/4] layernorm__seed=0: done in" in lines[1] and lines[1].endswith("eval_loss 2.6000")
    assert lines[2].startswith("[1/4] layernorm__seed=0: downstream score 0.")
    for run in runs:
        done = json.loads(open(os.path.join(run.run_dir, "DONE")).read())
        assert done["exit_code"] == 0 and done["attempts"] == 1 and done["metrics"]["steps"] == 4
        assert "[batch=4/4]:" in open(os.path.join(run.run_dir, "train.log")).read()  # output tee'd to the log
    lines.clear()
    assert run_sweep(sweep, runs, echo=lines.append) == {"done": 0, "failed": 0, "skipped": 4}
    assert lines == [f"[{i}/4] {r.name}: finished earlier, skipped" for i, r in enumerate(runs, 1)]


def test_failed_run_is_recorded_the_sweep_continues_and_a_rerun_resumes_it(sweep_file, monkeypatch):
    sweep = load_sweep(sweep_file)
    runs = expand(sweep)
    monkeypatch.setenv("FAKE_FAIL", "rmsnorm__seed=1")
    lines = []
    assert run_sweep(sweep, runs, echo=lines.append) == {"done": 3, "failed": 1, "skipped": 0}
    failed_dir = runs[3].run_dir
    assert status_of(failed_dir) == "failed"
    failed = json.loads(open(os.path.join(failed_dir, "FAILED")).read())
    assert failed["exit_code"] == 1 and "RuntimeError: boom" in failed["log_tail"]
    assert any("rmsnorm__seed=1: FAILED (exit 1)" in ln and "RuntimeError: boom" in ln for ln in lines)

    monkeypatch.delenv("FAKE_FAIL")
    lines.clear()
    assert run_sweep(sweep, runs, echo=lines.append) == {"done": 1, "failed": 0, "skipped": 3}
    assert "[4/4] rmsnorm__seed=1: retrying after a failure" in lines[-3]
    log = open(os.path.join(failed_dir, "train.log")).read()
    assert "resuming from step 2" in log and log.count("# flexbert.sweep attempt") == 2  # same save_folder, autoresume
    done = json.loads(open(os.path.join(failed_dir, "DONE")).read())
    assert done["attempts"] == 2 and not os.path.exists(os.path.join(failed_dir, "FAILED"))
    assert done["metrics"]["eval_loss"] == pytest.approx(2.2)  # 2.5 + 0.1 * seed - 0.1 * 4: step 4 reached


def test_interrupted_run_without_marker_is_resumed(sweep_file):
    sweep = load_sweep(sweep_file)
    run = expand(sweep)[0]
    os.makedirs(run.run_dir)  # what a killed sweep leaves: a checkpoint at step 3, no DONE/FAILED
    open(os.path.join(run.run_dir, "latest-rank0.pt"), "w").write("3")
    assert status_of(run.run_dir) == "incomplete"
    lines = []
    run_sweep(sweep, [run], echo=lines.append)
    assert lines[0].startswith("[1/1] layernorm__seed=0: resuming (autoresume)")
    log = open(os.path.join(run.run_dir, "train.log")).read()
    assert "resuming from step 3" in log and "[batch=3/4]" not in log and "[batch=4/4]" in log


def test_report_csv_markdown_and_plots(sweep_file):
    sweep = load_sweep(sweep_file)
    run_sweep(sweep, expand(sweep), echo=lambda _: None)
    rows = collect(sweep, expand(sweep))
    paths = write_report(sweep, rows)

    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["layernorm__seed=0", "layernorm__seed=1", "rmsnorm__seed=0", "rmsnorm__seed=1"]
    assert list(table[0])[:4] == ["run", "variant", "seed", "status"]  # the `variants:` axis is the variant column
    for col in ("params_total", "params_encoder", "eval_loss", "best_eval_loss", "eval_accuracy", "train_loss",
                "tokens_per_sec", "peak_memory_gib", "wall_time_s", "downstream_score", "exit_code", "steps"):
        assert table[0][col] != "", col
    assert float(table[2]["eval_loss"]) == pytest.approx(2.1)  # rmsnorm seed 0: 2.5 - 0.4
    assert float(table[2]["tokens_per_sec"]) == pytest.approx(1002.5)  # median of 1001..1004
    assert float(table[2]["peak_memory_gib"]) == pytest.approx(0.54)
    # Parameters come from the real model config; biasless LayerNorm and RMSNorm have the same count.
    from flexbert.config.loading import load_run_config
    from flexbert.train.flops import count_params

    expected = count_params(load_run_config(os.path.join(REPO, "yamls", "demo.yaml")).model_cfg)["total"]
    assert int(table[0]["params_total"]) == int(table[2]["params_total"]) == expected
    assert float(table[0]["downstream_score"]) == pytest.approx(0.4)  # read from the run's checkpoint (step 4)

    agg = aggregate(rows, "eval_loss", maximize=False)
    assert [(e["variant"], e["n"]) for e in agg] == [("rmsnorm", 2), ("layernorm", 2)]
    assert agg[0]["mean"] == pytest.approx(2.15) and agg[0]["std"] == pytest.approx(0.0707107, rel=1e-4)
    assert agg[0]["delta"] == pytest.approx(-0.5)  # vs the baseline: the first variant in the file

    md = open(paths["report"]).read()
    variant_rows = [ln for ln in md.split("## Runs")[0].splitlines() if ln.startswith("| ") and "`" in ln]
    assert variant_rows[0].startswith("| 1 | `rmsnorm` | 2.1500 | 0.0707 | 2 | -0.5000 |")  # best first, mean, std, n, Δ
    assert variant_rows[1].startswith("| 2 | `layernorm` | 2.6500 | 0.0707 | 2 | +0.0000 |")
    assert "| `rmsnorm__seed=1` | done | 1 | 2.2000 |" in md
    assert "](plots/eval_loss_curves.png)" in md and "](plots/eval_loss_by_variant.png)" in md

    for name in ("eval_loss_curves.png", "eval_loss_by_variant.png"):
        data = open(os.path.join(sweep.output, "plots", name), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    from PIL import Image  # installed with matplotlib

    with Image.open(os.path.join(sweep.output, "plots", "eval_loss_curves.png")) as img:
        img.verify()  # a complete, decodable PNG
    assert not [f for f in os.listdir(sweep.output) if ".tmp" in f]  # atomic writes leave no temp files (.NAME.tmp-PID-X)


def test_report_lists_failures_with_their_log_tail(sweep_file, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "rmsnorm")
    sweep = load_sweep(sweep_file)
    run_sweep(sweep, expand(sweep), echo=lambda _: None)
    md = open(write_report(sweep, collect(sweep, expand(sweep)))["report"]).read()
    assert "## Failed runs" in md and "### `rmsnorm__seed=0` (exit 1)" in md and "RuntimeError: boom" in md
    assert "| `rmsnorm` | - | - | 0 |" in md  # no finished seed: no mean, listed after the ranked variants


def test_cli_dry_run_run_and_metric_override(sweep_file, capsys):
    assert main([sweep_file, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep tiny: 4 runs (2 variants x 2 seeds) -> out\n[1/4] layernorm__seed=0 (pending)\n")
    assert "fake_train.py" in out and "save_folder=out/runs/rmsnorm__seed=1" in out
    assert not os.path.exists("out")  # a dry run runs nothing

    assert main([sweep_file, "--metric", "eval_accuracy"]) == 0
    out = capsys.readouterr().out
    assert "runs: 4 finished now, 0 finished earlier, 0 failed" in out
    md = open(os.path.join("out", "report.md")).read()
    assert "## Variants by eval_accuracy" in md and "higher is better" in md
    assert os.path.isfile(os.path.join("out", "plots", "eval_accuracy_by_variant.png"))


def test_cli_reports_sweep_file_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: nowhere.yaml\nseed: [0]\n")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep error: unknown key 'seed' in ") and "did you mean 'seeds'?" in err
