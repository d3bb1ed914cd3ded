"""What cannot be exported or imported is refused with the option and its value named."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("transformers")

from test_export_helpers import random_model, tiny_config  # noqa: E402

from flexbert.export import ExportError, config_from_hf, config_to_hf, hf_refusals, save_hf  # noqa: E402

# (option, value) pairs FlexBERT can build but HF ModernBERT cannot compute.
UNREPRESENTABLE = [
    ("norm", "rmsnorm"),
    ("layer_layout", "postnorm"),
    ("layer_layout", "parallel"),
    ("embedding", "absolute"),
    ("attention", "plain"),
    ("mlp", "mlp"),
]


@pytest.mark.parametrize("key,value", UNREPRESENTABLE, ids=[f"{k}={v}" for k, v in UNREPRESENTABLE])
def test_unrepresentable_config_refused(tmp_path, key, value):
    cfg = tiny_config(**{key: value})
    with pytest.raises(ExportError) as e:
        config_to_hf(cfg)
    assert f"model.{key}" in str(e.value) and repr(value) in str(e.value)
    out = tmp_path / "hf"
    with pytest.raises(ExportError):
        save_hf(random_model(cfg), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_all_refusals_listed_together():
    cfg = tiny_config(norm="rmsnorm", mlp="mlp")
    reasons = hf_refusals(cfg)
    assert len(reasons) == 2 and "model.norm" in reasons[0] + reasons[1]


@pytest.mark.parametrize("key", ["hidden_activation", "classifier_activation"])
def test_activation_without_hf_equivalent(key):
    d = dataclasses.asdict(tiny_config())
    d[key] = "mish"  # not a FlexBERT activation today; the check must not depend on that
    assert any(key in r and "'mish'" in r for r in hf_refusals(d))


@pytest.mark.parametrize("pooling_ok", ["cls", "mean"])
def test_poolings_hf_has_are_exported(pooling_ok):
    assert config_to_hf(tiny_config(classifier_pooling=pooling_ok))["classifier_pooling"] == pooling_ok


def test_flexbert_only_parameter_refused():
    from flexbert.export import hf_state_dict

    model = random_model(tiny_config())
    model.head.extra_scale = torch.nn.Parameter(torch.ones(3))  # a parameter HF would silently drop
    with pytest.raises(ExportError, match=r"head\.extra_scale"):
        hf_state_dict(model)


def test_broken_tie_refused():
    from flexbert.export import hf_state_dict

    model = random_model(tiny_config())
    model.decoder.weight = torch.nn.Parameter(model.decoder.weight.detach().clone() + 1)
    with pytest.raises(ExportError, match="tie_word_embeddings"):
        hf_state_dict(model)


def _hf_dict(**kw):
    from transformers import ModernBertConfig

    d = ModernBertConfig(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=2, pad_token_id=0, bos_token_id=1, cls_token_id=1, eos_token_id=2,
                         sep_token_id=2).to_dict()
    d["mask_token_id"] = 3
    d.update(kw)
    return d


def _hf_v4_dict(**kw):
    """_hf_dict as transformers 4.x writes it: no layer_types / rope_parameters (5.x adds those)."""
    d = _hf_dict(**kw)
    d.pop("layer_types", None)
    d.pop("rope_parameters", None)
    return d


def test_import_maps_every_field():
    # a 4.x dict: a null local_rope_theta ("use the global theta") exists only in 4.x's config
    cfg = config_from_hf(_hf_v4_dict(attention_dropout=0.1, hidden_activation="gelu_pytorch_tanh",
                                     classifier_activation="swish", local_rope_theta=None, global_rope_theta=5e4,
                                     classifier_pooling="mean", tie_word_embeddings=False, decoder_bias=False))
    assert cfg.attention_dropout == 0.1 and cfg.attn_out_dropout == 0.1  # HF uses one value for both
    assert cfg.hidden_activation == "gelu_tanh" and cfg.classifier_activation == "silu"
    assert cfg.local_rope_theta == 5e4  # HF: null local theta means the global one
    assert cfg.classifier_pooling == "mean" and not cfg.tie_word_embeddings and not cfg.decoder_bias
    assert (cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id, cfg.mask_token_id) == (0, 1, 2, 3)


@pytest.mark.parametrize("bad,fragment", [
    (dict(model_type="bert"), "model_type"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
    (dict(hidden_activation="gelu_new"), "hidden_activation is 'gelu_new'"),
    (dict(classifier_activation="tanh"), "classifier_activation is 'tanh'"),
    (dict(my_new_switch=True), "my_new_switch"),
    (dict(pruned_heads={"0": [1]}), "pruned_heads"),
    (dict(sparse_pred_ignore_index=0), "sparse_pred_ignore_index"),
])
def test_import_refusals(bad, fragment):
    with pytest.raises(ExportError) as e:
        config_from_hf(_hf_dict(**bad))
    assert fragment in str(e.value)


def test_import_missing_mask_id_is_an_error_with_the_fix(tmp_path):
    d = _hf_dict()
    del d["mask_token_id"]
    with pytest.raises(ExportError, match="mask_token_id"):
        config_from_hf(d)


def test_import_weights_mismatch_listed(tmp_path):
    from safetensors.torch import load_file, save_file

    from flexbert.export import load_hf

    save_hf(random_model(tiny_config()), tmp_path / "hf")
    sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
    sd.pop("head.dense.weight")
    sd["head.surprise"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportError) as e:
        load_hf(tmp_path / "hf")
    assert "head.dense.weight" in str(e.value) and "head.surprise" in str(e.value)


def test_import_unknown_key_in_folder(tmp_path):
    from flexbert.export import load_hf

    save_hf(random_model(tiny_config()), tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    d = json.loads(path.read_text())
    d["use_fancy_rope"] = True
    path.write_text(json.dumps(d))
    with pytest.raises(ExportError, match="use_fancy_rope"):
        load_hf(tmp_path / "hf")
