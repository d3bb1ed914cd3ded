"""The model config: presets, parameter counts, strict errors, the layer pattern."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexbert import FlexBertConfig, FlexBertForMaskedLM, build_model, load_model_config
from flexbert.config.model import PRESET_DIR, preset_names
from flexbert.config.strict import ConfigError

PRESETS = sorted(PRESET_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parent.parent


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_and_builds(path):
    config = load_model_config(path)
    with torch.device("meta"):
        model = build_model(config)
    assert model.config is config
    assert len(model.model.layers) == config.num_hidden_layers


def test_shipped_presets_are_the_documented_ones():
    assert {"modernbert-base", "modernbert-large", "bert-base", "tiny"} <= set(preset_names())


@pytest.mark.parametrize("name, expected", [("modernbert-base", 149_655_232), ("modernbert-large", 395_881_664)])
def test_parameter_counts_match_modernbert(name, expected):
    with torch.device("meta"):
        model = build_model(PRESET_DIR / f"{name}.yaml")
    assert n_params(model) == expected


def test_defaults_are_modernbert_base():
    assert load_model_config(PRESET_DIR / "modernbert-base.yaml") == FlexBertConfig()


def test_weight_names_and_shapes_equal_hf():
    """Same state_dict keys and shapes as transformers' ModernBertForMaskedLM of the same sizes."""
    transformers = pytest.importorskip("transformers")
    c = load_model_config(PRESET_DIR / "modernbert-base.yaml")
    hf_config = transformers.ModernBertConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        pad_token_id=c.pad_token_id, cls_token_id=c.cls_token_id, sep_token_id=c.sep_token_id)
    with torch.device("meta"):
        ours = build_model(c)
        theirs = transformers.ModernBertForMaskedLM(hf_config)
    ours_sd = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_sd = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_sd == theirs_sd
    assert n_params(ours) == n_params(theirs)
    assert "model.layers.0.attn_norm.weight" not in ours_sd and "model.layers.1.attn_norm.weight" in ours_sd


def test_layer_types_follow_the_period_and_thetas(make_config):
    config = make_config(num_hidden_layers=7, global_attn_every_n_layers=3, local_attention=16,
                         global_rope_theta=1234.0, local_rope_theta=56.0)
    specs = config.layer_types()
    assert [s.kind for s in specs] == ["global", "local", "local", "global", "local", "local", "global"]
    assert all(s.window is None and s.rope_theta == 1234.0 for s in specs if s.kind == "global")
    assert all(s.window == 8 and s.rope_theta == 56.0 for s in specs if s.kind == "local")
    assert {s.kind for s in make_config(global_attn_every_n_layers=1).layer_types()} == {"global"}


def test_base_global_layers_are_every_third():
    specs = FlexBertConfig().layer_types()
    assert [i for i, s in enumerate(specs) if s.kind == "global"] == [0, 3, 6, 9, 12, 15, 18, 21]
    assert FlexBertConfig().head_dim == 64 and specs[1].window == 64


def test_preset_with_overrides_in_a_run_file(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("seed: 1\nmodel:\n  preset: tiny\n  num_hidden_layers: 2\n  norm: rmsnorm\n")
    config = load_model_config(run)
    tiny = load_model_config(PRESET_DIR / "tiny.yaml")
    assert config == dataclasses.replace(tiny, num_hidden_layers=2, norm="rmsnorm")


def test_interpolation_from_the_run_file(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("max_seq_len: 1024\nmodel:\n  preset: tiny\n  max_position_embeddings: ${max_seq_len}\n")
    assert load_model_config(run).max_position_embeddings == 1024


def test_preset_by_relative_path_and_dict(tmp_path):
    (tmp_path / "base.yaml").write_text("preset: tiny\nhidden_size: 128\n")
    (tmp_path / "child.yaml").write_text("preset: base.yaml\nnum_attention_heads: 8\n")
    config = load_model_config(tmp_path / "child.yaml")
    assert (config.hidden_size, config.num_attention_heads, config.vocab_size) == (128, 8, 512)
    assert load_model_config({"preset": "tiny", "hidden_size": 128, "num_attention_heads": 8}) == config


def test_misspelled_key_names_key_file_and_closest(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("model:\n  preset: tiny\n  hiden_size: 64\n")
    with pytest.raises(ConfigError) as e:
        load_model_config(run)
    msg = str(e.value)
    assert "model.hiden_size" in msg and str(run) in msg and "did you mean 'hidden_size'" in msg


@pytest.mark.parametrize("text, load, pattern", [
    ("num_hiden_layers: 2\n", load_model_config, r"num_hiden_layers.*m\.yaml.*did you mean 'num_hidden_layers'"),
    # a block name is checked where the model is built, still naming the file
    ("preset: tiny\nnorm: layrnorm\n", build_model,
     r"unknown norm 'layrnorm' at model.norm in \S*m\.yaml; choices: .*did you mean 'layernorm'"),
])
def test_misspelling_in_a_model_only_file_names_the_file(tmp_path, text, load, pattern):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load(path)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown model preset 'modernbert-bse'.*did you mean 'modernbert-base'"):
        load_model_config({"preset": "modernbert-bse"})


@pytest.mark.parametrize("key, value, fragment", [
    ("norm", "layrnorm", "did you mean 'layernorm'"),
    ("mlp", "swiglu", "choices: glu, mlp"),
    ("attn_backend", "flsh_attn", "did you mean 'flash_attn'"),
    ("layer_layout", "pre_norm", "did you mean 'prenorm'"),
    ("embedding", "rotary", "choices: absolute, modernbert"),
    ("hidden_activation", "gelu_new", "choices: gelu, gelu_tanh, relu, silu"),
    ("classifier_pooling", "max", "choices: cls, mean"),
    ("init", "xavier", "choices: modernbert, normal"),
])
def test_unknown_block_names_list_choices(key, value, fragment):
    config = load_model_config({"preset": "tiny", key: value})  # the config layer knows no registry
    for build in (lambda: build_model(config), lambda: FlexBertForMaskedLM(config)):
        with pytest.raises(ConfigError) as e, torch.device("meta"):
            build()
        assert f"model.{key}" in str(e.value) and fragment in str(e.value)


def test_loading_a_model_config_imports_no_model_and_no_torch():
    """config sits below model: reading a preset must not import flexbert.model (nor torch)."""
    code = ("import sys; from flexbert.config.model import load_model_config; "
            "load_model_config('yamls/models/tiny.yaml'); load_model_config({'preset': 'tiny', 'norm': 'layrnorm'}); "
            "print(sorted(m for m in sys.modules if m.startswith(('flexbert.model', 'flexbert.train', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("text, line, column", [
    ("preset: tiny\nhidden_size: [64\nnorm: layernorm\n", 3, 5),
    ("model:\n  preset: tiny\n  norm: layer: norm\n", 3, 14),
    ("preset: tiny\npreset: base\n", 2, 1),
])
def test_yaml_syntax_error_in_a_model_file_is_one_line(tmp_path, text, line, column):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_model_config(path)
    msg = str(e.value)
    assert msg.startswith(f"YAML syntax error in {path} at line {line}, column {column}: ") and "\n" not in msg


def test_yaml_syntax_error_in_a_preset_names_the_preset(tmp_path):
    (tmp_path / "base.yaml").write_text("hidden_size: 64\n  num_attention_heads: 4\n")
    (tmp_path / "child.yaml").write_text("preset: base.yaml\n")
    with pytest.raises(ConfigError, match=rf"YAML syntax error in {tmp_path / 'base.yaml'} at line 2, column \d+"):
        load_model_config(tmp_path / "child.yaml")


@pytest.mark.parametrize("overrides, reason", [
    (dict(hidden_size=64, num_attention_heads=5), "not divisible by num_attention_heads"),
    (dict(hidden_size=60, num_attention_heads=4), "RoPE needs an even head dim"),
    (dict(local_attention=15), "must be even"),
    (dict(local_attention=0), "must be even and >= 2"),
    (dict(global_attn_every_n_layers=0), "global_attn_every_n_layers must be >= 1"),
    (dict(attn_out_dropout=1.0), "attn_out_dropout is a probability"),
    (dict(mlp_dropout=-0.1), "mlp_dropout is a probability"),
    (dict(norm_eps=0.0), "norm_eps must be a positive number"),
    (dict(mask_token_id=512), "mask_token_id 512 is outside the vocabulary"),
    (dict(norm="rmsnorm", norm_bias=True), "rmsnorm has no bias"),
    (dict(problem_type="regresion"), "did you mean 'regression'"),
    (dict(num_hidden_layers=0), "num_hidden_layers must be >= 1"),
])
def test_impossible_values_are_rejected_with_the_reason(overrides, reason):
    with pytest.raises(ConfigError, match=reason):
        load_model_config({"preset": "tiny", **overrides})


def test_plain_attention_allows_odd_head_dim(make_config):
    assert make_config(hidden_size=36, num_attention_heads=4, attention="plain").head_dim == 9


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"model.num_hidden_layers.*must be an integer"):
        load_model_config({"preset": "tiny", "num_hidden_layers": "four"})


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_config(tmp_path / "nope.yaml")


def test_config_is_passed_through_and_not_mutated(make_config):
    config = make_config()
    before = dataclasses.asdict(config)
    assert load_model_config(config) is config
    build_model(config)
    assert dataclasses.asdict(config) == before
