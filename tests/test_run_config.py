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


def test_microbatch_larger_than_the_rank_batch_is_one_microbatch(tmp_path, corpus):
    # yamls/demo.yaml on two processes: 16 rows / 2 ranks = 8 rows per rank, microbatch 16.
    path = str(_yaml(tmp_path, corpus))
    cfg = load_run_config(path, ["global_train_batch_size=16", "device_train_microbatch_size=16"]).cfg
    cfg.world_batch_checks(2)  # 8 rows per rank in one microbatch, as Composer runs it
    cfg.world_batch_checks(4)  # 4 rows per rank
    # A microbatch smaller than the rank's batch must still divide it.
    cfg = load_run_config(path, ["global_train_batch_size=48", "device_train_microbatch_size=16"]).cfg
    with pytest.raises(ValueError, match=r"= 24 rows per rank is not divisible by device_train_microbatch_size \(16\)"):
        cfg.world_batch_checks(2)

    import torch

    from flexbert.data.batching import split_packed_batch

    # The split Composer calls gives the whole batch back as one microbatch.
    batch = {"input_ids": torch.arange(10), "labels": torch.arange(10), "position_ids": torch.arange(10),
             "cu_seqlens": torch.tensor([0, 4, 10], dtype=torch.int32), "max_seqlen": 6,
             "row_offsets": torch.tensor([0, 4, 10]), "row_num_tokens": torch.tensor([4, 6]), "num_tokens": 10}
    pieces = split_packed_batch(batch, 16)
    assert len(pieces) == 1 and torch.equal(pieces[0]["input_ids"], batch["input_ids"])


def test_dotted_override_into_a_missing_list_says_how_to_set_it(tmp_path, corpus):
    # docker/README.md once passed data.streams.0.local=... to a YAML without streams.
    path = str(_yaml(tmp_path, corpus))
    with pytest.raises(ConfigError, match=r"'data.streams' .* must be a list.*cannot create list items: give the whole list "
                                          r"\('data.streams=\[\{KEY: VALUE\}\]'\)"):
        load_run_config(path, ["data.streams.0.local=/data/mds"])
    cfg = load_run_config(path, ["data.streams=[{local: /data/mds, split: train}]", "data.local=null", "data.split=null"]).cfg
    assert [(s.local, s.split) for s in cfg.data.streams] == [("/data/mds", "train")]


def test_missing_run_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_run_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "yamls").rglob("*.yaml")
                                        if "models" not in p.parts and "ablations" not in p.parts))  # sweeps: test_sweep_spec
def test_every_shipped_run_yaml_loads(path, monkeypatch):
    monkeypatch.chdir(REPO)
    loaded = load_run_config(path)
    assert loaded.cfg.data.max_seq_len <= loaded.model_cfg.max_position_embeddings


def test_yaml_syntax_error_in_a_run_file_is_one_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("max_duration: 10ba\noptimizer:\n  lr: [1e-3\nseed: 3\n")
    with pytest.raises(ConfigError) as e:
        load_run_config(str(path))
    msg = str(e.value)
    assert msg.startswith(f"YAML syntax error in {path} at line 4, column 5: ") and "\n" not in msg


def test_train_py_prints_a_yaml_syntax_error_in_one_line(tmp_path):
    from _train_support import run_train

    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: tiny\n  norm: layer: norm\n")
    out = run_train(str(path), "--dry-run", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config error: YAML syntax error in {path} at line 3, column 14: ")


def test_the_model_section_has_one_home(tmp_path, corpus):
    """RunConfig has no raw `model` dict: the model lives in LoadedRun.model_cfg, a FlexBertConfig."""
    import dataclasses

    from flexbert.config.model import FlexBertConfig
    from flexbert.config.run import RunConfig

    loaded = load_run_config(str(_yaml(tmp_path, corpus)), ["model.num_hidden_layers=3"])
    assert "model" not in {f.name for f in dataclasses.fields(RunConfig)}
    assert isinstance(loaded.model_cfg, FlexBertConfig) and loaded.model_cfg.num_hidden_layers == 3
    assert loaded.resolved()["model"]["num_hidden_layers"] == 3
    assert list(loaded.resolved()).index("model") == list(loaded.resolved()).index("tokenizer") + 1
    with pytest.raises(ConfigError, match=r"unknown key 'modle' in .*did you mean 'model'"):
        load_run_config(str(write_yaml(tmp_path / "b.yaml", {"modle": {"preset": "tiny"}})))
    with pytest.raises(ConfigError, match=r"'model' in .* must be a mapping of model keys"):
        load_run_config(str(_yaml(tmp_path, corpus)), ["model=3"])
