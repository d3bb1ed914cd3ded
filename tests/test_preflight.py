"""What can be known before step 0 is checked before step 0: `--dry-run` exits 2 on it, as the real run does."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def train_main():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def dry_run(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = train_main()([*args])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("yaml", ["yamls/demo.yaml", "yamls/tiny/1-pretrain.yaml", "yamls/tiny/2-context-extension.yaml",
                                  "yamls/tiny/3-decay.yaml"])
def test_shipped_cpu_configs_take_a_four_batch_smoke_run(yaml):
    rc, out, err = dry_run(str(REPO / yaml), "max_duration=4ba", "--dry-run")
    assert rc == 0, err
    assert " n/a " not in out  # every row of the schedule table has an LR


@pytest.mark.parametrize("overrides,message", [
    (["max_duration=4ba", "scheduler.t_warmup=20ba"], "scheduler.t_warmup (20ba) + t_decay (0.3dur) exceed max_duration"),
    (["max_duration=30ba", "scheduler.t_warmup=20ba", "scheduler.t_decay=20ba"], "exceed max_duration"),
    (["callbacks.nan_gard=false"], "unknown callback 'nan_gard' at callbacks.nan_gard"),
    (["callbacks.thruput.window=3"], "did you mean 'throughput'"),
    (["model.norm=rmsnorm"], "export_hf runs/demo/hf: this model cannot be exported"),
])
def test_dry_run_exits_2_on_what_would_stop_the_run(overrides, message):
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), "--dry-run", *overrides)
    assert rc == 2
    assert message in err, err
    assert err.count("\n") == 1  # one line


def test_export_hf_under_a_file_is_refused_before_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    rc, _, err = dry_run(str(REPO / "yamls/demo.yaml"), f"export_hf={tmp_path / 'file' / 'hf'}", "--dry-run")
    assert rc == 2 and "cannot be created" in err and str(tmp_path / "file") in err, err


@pytest.mark.parametrize("value,resolved", [("0", "eval_interval: 0"), ("2", "eval_interval: 2"),
                                            ("500ba", "eval_interval: 500ba")])
def test_composer_eval_interval_forms_are_accepted(value, resolved):
    rc, out, err = dry_run(str(REPO / "yamls/demo.yaml"), f"eval_interval={value}", "--dry-run")
    assert rc == 0, err
    assert resolved in out.splitlines()


def test_flags_and_overrides_in_any_order():
    for args in (["--dry-run", "optimizer.lr=1e-3"], ["optimizer.lr=1e-3", "--dry-run"]):
        rc, out, err = dry_run(str(REPO / "yamls/demo.yaml"), *args)
        assert rc == 0, (args, err)
        assert "  lr: 0.001" in out.splitlines()
