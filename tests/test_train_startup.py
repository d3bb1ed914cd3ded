"""train.py before training: --dry-run, and startup errors that name the path or numbers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from _train_support import make_corpus, run_train, tiny_run, write_yaml
from flexbert.config.loading import load_run_config
from flexbert.config.strict import ConfigError
from flexbert.train.builder import preflight


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=60, n_val=10)


def test_dry_run_prints_config_sizes_and_schedule_table(tmp_path, corpus):
    run = tiny_run(corpus, tmp_path / "save", max_duration="40ba",
                   batch_size_warmup={"min_batch_size": 2, "tokens": "2560tok"},
                   scheduler={"name": "warmup_stable_decay", "t_warmup": "10ba", "t_decay": "0.5dur"})
    path = write_yaml(tmp_path / "run.yaml", run)
    out = run_train(str(path), "--dry-run", timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "max_duration: 40ba" in text  # the resolved config
    assert "parameters: " in text and "training FLOPs per token" in text
    header = next(line for line in text.splitlines() if line.split()[:2] == ["tokens", "step"])
    assert header.split() == ["tokens", "step", "lr", "batch_rows", "seq_len", "mlm", "global_theta", "local_theta"]
    rows = [line.split() for line in text.splitlines()[text.splitlines().index(header) + 2:] if line.strip()]
    assert len(rows) == 11
    assert rows[0][3] == "2" and rows[-1][3] == "4"  # batch-size warmup 2 -> 4 rows
    assert float(rows[0][2]) == 0.0 and float(rows[-1][2]) == 0.0  # warmup from 0, decay to alpha_f = 0
    assert max(float(r[2]) for r in rows) == pytest.approx(3e-3)
    assert not (tmp_path / "save").exists()  # nothing was built or written


def _loaded(tmp_path: Path, corpus: Path, *overrides: str, **run_over):
    path = write_yaml(tmp_path / "run.yaml", tiny_run(corpus, tmp_path / "save", **run_over))
    return load_run_config(str(path), list(overrides))


def test_missing_data_path_is_named(tmp_path, corpus):
    loaded = _loaded(tmp_path, corpus, f"data.local={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match=f"data path {tmp_path / 'nowhere' / 'train'} does not exist"):
        preflight(loaded, world_size=1)


def test_tokenizer_larger_than_model_vocab_names_both_numbers(tmp_path, corpus):
    from flexbert.data.tokenizer import train_tokenizer

    docs = [f"word{i} other{i % 7} text {i * 3}" for i in range(400)]
    train_tokenizer(docs, vocab_size=320, output=tmp_path / "tok", show_progress=False)
    loaded = _loaded(tmp_path, corpus, f"tokenizer={tmp_path / 'tok'}")  # model.vocab_size is 128
    with pytest.raises(ConfigError, match=r"has 320 tokens but model.vocab_size is 128; set model.vocab_size to at least 320"):
        preflight(loaded, world_size=1)
    loaded = _loaded(tmp_path, corpus, f"tokenizer={tmp_path / 'tok'}", "model.vocab_size=320", "model.pad_token_id=9")
    with pytest.raises(ConfigError, match=r"model.pad_token_id is 9 but the tokenizer's pad id is 3: set model.pad_token_id: 3"):
        preflight(loaded, world_size=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_save_folder_is_named(tmp_path, corpus):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    loaded = _loaded(tmp_path, corpus, f"save_folder={locked / 'run'}")
    with pytest.raises(ConfigError, match=f"save_folder {locked / 'run'} is not writable"):
        preflight(loaded, world_size=1)


def test_save_folder_under_a_file_is_named(tmp_path, corpus):
    # Works as root too: a regular file cannot hold a folder.
    (tmp_path / "afile").write_text("x")
    loaded = _loaded(tmp_path, corpus, f"save_folder={tmp_path / 'afile' / 'run'}")
    with pytest.raises(ConfigError, match=f"save_folder {tmp_path / 'afile' / 'run'} is not writable"):
        preflight(loaded, world_size=1)


def test_train_py_reports_config_errors_in_one_line(tmp_path, corpus):
    path = write_yaml(tmp_path / "run.yaml", tiny_run(corpus, tmp_path / "save"))
    out = run_train(str(path), f"data.local={tmp_path / 'nowhere'}", timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("config error: data: data path")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("key, value, choice", [("norm", "layrnorm", "layernorm"), ("mlp", "gluu", "glu"),
                                                ("attn_backend", "flsh_attn", "flash_attn")])
def test_misspelt_block_name_is_refused_before_any_data_is_read(tmp_path, key, value, choice):
    """Preflight and the dry run check block names against the registries first (the data path does not exist)."""
    run = tiny_run(tmp_path / "no-corpus", tmp_path / "save")
    run["model"][key] = value
    path = write_yaml(tmp_path / "run.yaml", run)
    expected = rf"unknown .* '{value}' at model.{key} in {path}; choices: .*did you mean '{choice}'"
    with pytest.raises(ConfigError, match=expected):
        preflight(load_run_config(str(path)), world_size=1)
    from flexbert.train.loading import load_run

    with pytest.raises(ConfigError, match=expected):
        load_run(str(path))
    out = run_train(str(path), "--dry-run", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "resolved config" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config error: unknown ") and f"in {path}" in lines[0]
