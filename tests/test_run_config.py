"""Run config: defaults <- YAML <- command line, strict keys, messages that say where and what."""
from __future__ import annotations

from pathlib import Path

import pytest

from _train_support import REPO, make_corpus, tiny_run, write_yaml
from flexbert.config.loading import load_run_config
from flexbert.config.strict import ConfigError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=60, n_val=10)


def _yaml(tmp_path: Path, corpus: Path, **over) -> Path:
    return write_yaml(tmp_path / "run.yaml", tiny_run(corpus, tmp_path / "save", **over))


def test_yaml_then_command_line_override(tmp_path, corpus):
    path = _yaml(tmp_path, corpus)
    loaded = load_run_config(str(path), ["optimizer.lr=1e-4", "model.num_hidden_layers=3", "max_duration=7ba"])
    assert loaded.cfg.optimizer.lr == 1e-4
    assert loaded.cfg.max_duration == "7ba"
    assert loaded.model_cfg.num_hidden_layers == 3
    assert loaded.model_cfg.hidden_size == 32  # from the YAML over the tiny preset
    assert loaded.cfg.on_nan == "stop"  # a default from the dataclass


def test_resolved_config_expands_the_model_preset(tmp_path, corpus):
    loaded = load_run_config(str(_yaml(tmp_path, corpus)))
    resolved = loaded.resolved()
    assert "preset" not in resolved["model"]
    assert resolved["model"]["global_rope_theta"] == loaded.model_cfg.global_rope_theta
    assert resolved["model"]["vocab_size"] == 128


def test_misspelled_key_names_key_file_and_closest(tmp_path, corpus):
    data = tiny_run(corpus)
    data["optimizer"]["lrr"] = 1e-3
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_run_config(str(path))
    msg = str(e.value)
    assert "optimizer.lrr" in msg and str(path) in msg and "did you mean 'lr'" in msg


def test_misspelled_top_level_and_model_keys(tmp_path, corpus):
    data = tiny_run(corpus)
    data["max_durration"] = "5ba"
    with pytest.raises(ConfigError, match=r"max_durration.*did you mean 'max_duration'"):
        load_run_config(str(write_yaml(tmp_path / "a.yaml", data)))
    data = tiny_run(corpus)
    data["model"]["hiden_size"] = 8
    with pytest.raises(ConfigError, match=r"model.hiden_size.*a.yaml.*did you mean 'hidden_size'"):
        load_run_config(str(write_yaml(tmp_path / "a.yaml", data)))


def test_misspelled_command_line_override_says_command_line(tmp_path, corpus):
    path = _yaml(tmp_path, corpus)
    with pytest.raises(ConfigError) as e:
        load_run_config(str(path), ["data.mlm_probabilty=0.2"])
    msg = str(e.value)
    assert "data.mlm_probabilty" in msg and "command line" in msg and "did you mean 'mlm_probability'" in msg
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_run_config(str(path), ["optimizer.lr"])


def test_bad_values_are_explained(tmp_path, corpus):
    path = _yaml(tmp_path, corpus)
    with pytest.raises(ConfigError, match="on_nan.*choices: stop, skip"):
        load_run_config(str(path), ["on_nan=ignore"])
    with pytest.raises(ConfigError, match="max_duration"):
        load_run_config(str(path), ["max_duration=12"])
    with pytest.raises(ConfigError, match=r"max_seq_len \(2048\).*max_position_embeddings \(1024\)"):
        load_run_config(str(path), ["data.max_seq_len=2048", "model.max_position_embeddings=1024"])
    with pytest.raises(ConfigError, match="min_batch_size.*larger than global_train_batch_size"):
        load_run_config(str(path), ["batch_size_warmup.min_batch_size=64", "batch_size_warmup.tokens=100tok"])


def test_world_size_divisibility_is_explained(tmp_path, corpus):
    path = str(_yaml(tmp_path, corpus))
    cfg = load_run_config(path, ["global_train_batch_size=6", "device_train_microbatch_size=2"]).cfg
    with pytest.raises(ValueError, match=r"\(6\) / world size \(2\) = 3 rows per rank is not divisible by device_train_microbatch_size \(2\)"):
        cfg.world_batch_checks(2)
    cfg = load_run_config(path, ["global_train_batch_size=5", "device_train_microbatch_size=1"]).cfg
    with pytest.raises(ValueError, match=r"global_train_batch_size \(5\) is not divisible by the world size \(2\)"):
        cfg.world_batch_checks(2)


def test_missing_run_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_run_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "yamls").rglob("*.yaml")
                                        if "models" not in p.parts and "ablations" not in p.parts))  # sweeps: test_sweep_spec
def test_every_shipped_run_yaml_loads(path, monkeypatch):
    monkeypatch.chdir(REPO)
    loaded = load_run_config(path)
    assert loaded.cfg.data.max_seq_len <= loaded.model_cfg.max_position_embeddings
