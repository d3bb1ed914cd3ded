"""collect_run: a run's result files that cannot be used are named on stderr, and only a
non-FlexBERT base config (a ConfigError) is tolerated when counting parameters."""
from __future__ import annotations

import os
import textwrap

import pytest

from flexbert.sweep import collect as collect_mod
from flexbert.sweep.collect import collect_run
from flexbert.sweep.expand import expand
from flexbert.sweep.spec import load_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(tmp_path, base: str):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        base: {base}
        validate: false
        metrics_jsonl: false
        variants: [{{name: a}}]
        seeds: [0]
        output: {tmp_path / 'out'}
    """))
    sweep = load_sweep(str(path))
    (run,) = expand(sweep)
    os.makedirs(run.run_dir)
    return sweep, run


@pytest.mark.parametrize("name, text, why", [
    ("DONE", '{"exit_code": 0, "wall_ti', "JSONDecodeError"),
    ("FAILED", "[1, 2]", "holds a list, not a JSON object"),
    ("downstream.json", "\xff\xfe", "UnicodeDecodeError"),
])
def test_an_unusable_result_file_is_named_and_the_run_still_reported(tmp_path, capsys, name, text, why):
    sweep, run = _sweep(tmp_path, os.path.join(REPO, "yamls", "demo.yaml"))
    path = os.path.join(run.run_dir, name)
    with open(path, "wb") as f:
        f.write(text.encode("latin-1"))
    row = collect_run(sweep, run)
    err = capsys.readouterr().err
    assert f"sweep: cannot use {path} (" in err and why in err
    assert row["run"] == run.name and row["downstream_score"] is None and row["wall_time_s"] is None
    assert row["params_total"] > 0  # the base is FlexBERT's demo config


def test_a_custom_base_config_has_no_parameter_counts(tmp_path, capsys):
    base = tmp_path / "custom.yaml"
    base.write_text("lr: 0.1\n")  # another trainer's config: not FlexBERT keys
    sweep, run = _sweep(tmp_path, str(base))
    row = collect_run(sweep, run)
    assert row["params_total"] is None and row["params_encoder"] is None
    assert capsys.readouterr().err == ""


def test_a_bug_while_counting_parameters_is_not_swallowed(tmp_path, monkeypatch):
    sweep, run = _sweep(tmp_path, os.path.join(REPO, "yamls", "demo.yaml"))

    def broken(cfg):
        raise RuntimeError("count_params is broken")

    monkeypatch.setattr(collect_mod, "count_params", broken)
    with pytest.raises(RuntimeError, match="count_params is broken"):
        collect_mod.collect_run(sweep, run)
