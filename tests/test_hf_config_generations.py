"""Both HF ModernBERT config generations: transformers 4.x keys and 5.x `layer_types` / `rope_parameters`.

transformers 4.x reads `global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`;
5.x reads `layer_types` and per-layer-type `rope_parameters` (and its save_pretrained drops the
4.x thetas). Import must read either, export must write both saying the same thing, and a file
whose two generations disagree (or a pattern FlexBERT's rule cannot express) is refused by name.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from packaging.version import Version  # noqa: E402
from test_export_helpers import (  # noqa: E402
    CLS, MASK, PAD, SEP, TOL, flex_logits, max_diff_real, padded_batch, perturb_, random_model, tiny_config,
)

from flexbert.export import ExportError, config_from_hf, config_to_hf, load_hf, save_hf  # noqa: E402
from flexbert.export.hf_layout import layer_pattern  # noqa: E402

F, S = "full_attention", "sliding_attention"
V5 = Version(transformers.__version__).major >= 5
needs_v5 = pytest.mark.skipif(not V5, reason="checks what transformers 5.x reads and writes")
LENGTHS = [70, 53, 9, 38]  # longer than every window below: local layers and their theta matter


def _rope(full: float, sliding: float) -> dict:
    return {F: {"rope_type": "default", "rope_theta": full}, S: {"rope_type": "default", "rope_theta": sliding}}


def _layout(cfg) -> tuple:
    return cfg.num_hidden_layers, cfg.global_attn_every_n_layers, cfg.global_rope_theta, cfg.local_rope_theta


def _base(n: int = 4, **kw) -> dict:
    """A hand-written config.json without any layer-pattern / theta key of either generation."""
    d = dict(model_type="modernbert", vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=n,
             num_attention_heads=2, local_attention=8, pad_token_id=PAD, cls_token_id=CLS, sep_token_id=SEP,
             mask_token_id=MASK)
    d.update(kw)
    return d


# ---------------------------------------------------------------- import: same model from v4 and v5 dicts

# (name, v4-style dict, v5-style dict) describing the same model
EQUIVALENT = [
    ("p2_thetas", _base(4, global_attn_every_n_layers=2, global_rope_theta=20000.0, local_rope_theta=3000.0),
     _base(4, layer_types=[F, S, F, S], rope_parameters=_rope(20000.0, 3000.0))),
    ("p3_default_thetas_5_layers", _base(5, global_attn_every_n_layers=3, global_rope_theta=160000.0,
                                         local_rope_theta=10000.0),
     _base(5, layer_types=[F, S, S, F, S], rope_parameters=_rope(160000.0, 10000.0))),
    ("p1_all_global", _base(3, global_attn_every_n_layers=1, global_rope_theta=500.0, local_rope_theta=50.0),
     _base(3, layer_types=[F, F, F], rope_parameters=_rope(500.0, 50.0))),
    ("only_layer0_global", _base(3, global_attn_every_n_layers=3, global_rope_theta=1e4, local_rope_theta=1e4),
     _base(3, layer_types=[F, S, S], rope_parameters=_rope(1e4, 1e4))),
    ("rope_theta_alias", _base(2, global_attn_every_n_layers=2, rope_theta=7000.0, local_rope_theta=70.0),
     _base(2, layer_types=[F, S], rope_parameters=_rope(7000.0, 70.0))),
    ("null_local_is_global", _base(4, global_attn_every_n_layers=2, global_rope_theta=5e4, local_rope_theta=None),
     _base(4, layer_types=[F, S, F, S], rope_parameters=_rope(5e4, 5e4))),
]


@pytest.mark.parametrize("name,v4,v5", EQUIVALENT, ids=[e[0] for e in EQUIVALENT])
def test_v4_and_v5_dicts_import_to_the_same_config(name, v4, v5):
    a, b = config_from_hf(v4), config_from_hf(v5)
    assert a == b
    assert config_from_hf({**v4, **v5}) == a  # both generations, agreeing (what FlexBERT's export writes)


def test_per_layer_type_theta_is_honoured():
    cfg = config_from_hf(_base(4, layer_types=[F, S, F, S], rope_parameters=_rope(123.0, 45.0)))
    assert (cfg.global_attn_every_n_layers, cfg.global_rope_theta, cfg.local_rope_theta) == (2, 123.0, 45.0)
    assert [(s.kind, s.rope_theta) for s in cfg.layer_types()] == [("global", 123.0), ("local", 45.0)] * 2


# dicts transformers 5.x accepts: our import must read the same layer types and thetas as it does
V5_READS = [
    ("v4_keys_only", _base(4, global_attn_every_n_layers=2, global_rope_theta=2e4, local_rope_theta=3e3)),
    ("v5_keys_only", _base(5, layer_types=[F, S, S, F, S], rope_parameters=_rope(2e4, 3e3))),
    ("no_layout_keys", _base(4)),
    ("layer_types_only", _base(4, layer_types=[F, S, S, S])),
    ("full_only_in_rope_parameters", _base(4, rope_parameters={F: {"rope_type": "default", "rope_theta": 99.0}},
                                           local_rope_theta=11.0)),
    ("theta_missing_in_entry", _base(4, rope_parameters={F: {"rope_type": "default"}, S: {"rope_type": "default"}},
                                     global_rope_theta=300.0, local_rope_theta=30.0)),
    ("both_generations_agree", _base(4, global_attn_every_n_layers=2, global_rope_theta=2e4, local_rope_theta=3e3,
                                     layer_types=[F, S, F, S], rope_parameters=_rope(2e4, 3e3))),
]


@needs_v5
@pytest.mark.parametrize("name,d", V5_READS, ids=[r[0] for r in V5_READS])
def test_import_reads_what_transformers_5_reads(name, d):
    cfg = config_from_hf(d)
    hf = transformers.ModernBertConfig(**{k: v for k, v in copy.deepcopy(d).items() if k != "model_type"})
    assert layer_pattern(cfg.global_attn_every_n_layers, cfg.num_hidden_layers) == hf.layer_types
    assert cfg.global_rope_theta == hf.rope_parameters[F]["rope_theta"]
    assert cfg.local_rope_theta == hf.rope_parameters[S]["rope_theta"]


# ---------------------------------------------------------------- import: refusals

RULE = "i % global_attn_every_n_layers == 0"
REFUSED = [
    ("sliding_first", _base(2, layer_types=[S, F]), ["['sliding_attention', 'full_attention']", RULE]),
    ("irregular", _base(4, layer_types=[F, S, F, F]), [repr([F, S, F, F]), RULE, "cannot be expressed"]),
    ("length", _base(3, layer_types=[F, S]), ["layer_types has 2 entries but num_hidden_layers is 3"]),
    ("unknown_type", _base(2, layer_types=[F, "chunked_attention"]),
     ["layer_types[1] is 'chunked_attention'", "'full_attention' and 'sliding_attention'"]),
    ("rope_type", _base(2, rope_parameters={F: {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0},
                                            S: {"rope_type": "default", "rope_theta": 1e4}}),
     ["rope_parameters.full_attention.rope_type is 'yarn'", "plain RoPE", "['factor']"]),
    ("flat_rope_parameters", _base(2, rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
     ["rope_parameters has keys ['rope_theta', 'rope_type']"]),
    ("global_theta_disagrees", _base(2, global_rope_theta=10000.0, rope_parameters=_rope(160000.0, 10000.0)),
     ["global_rope_theta 10000.0", "rope_parameters.full_attention.rope_theta 160000.0", "disagree"]),
    ("local_theta_disagrees", _base(2, local_rope_theta=10000.0, rope_parameters=_rope(160000.0, 160000.0)),
     ["local_rope_theta 10000.0", "rope_parameters.sliding_attention.rope_theta 160000.0", "disagree"]),
    ("alias_disagrees", _base(2, rope_theta=5.0, rope_parameters=_rope(160000.0, 10000.0)),
     ["rope_theta 5.0", "rope_parameters.full_attention.rope_theta 160000.0"]),
    ("period_disagrees", _base(4, global_attn_every_n_layers=3, layer_types=[F, S, F, S]),
     ["global_attn_every_n_layers 3", repr([F, S, S, F]), repr([F, S, F, S])]),
    ("bad_theta", _base(2, rope_parameters=_rope(None, 10000.0)),
     ["rope_parameters.full_attention.rope_theta is None"]),
]


@pytest.mark.parametrize("name,d,fragments", REFUSED, ids=[r[0] for r in REFUSED])
def test_import_refusals_name_the_problem_and_the_file(name, d, fragments):
    with pytest.raises(ExportError) as e:
        config_from_hf(d, source="some/dir/config.json")
    msg = str(e.value)
    assert "some/dir/config.json" in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_every_layout_problem_is_listed_together():
    d = _base(3, global_attn_every_n_layers=2, global_rope_theta=1.0, layer_types=[S, F, "x"],
              rope_parameters={F: {"rope_type": "linear", "rope_theta": 2.0}}, my_new_switch=1)
    with pytest.raises(ExportError) as e:
        config_from_hf(d)
    msg = str(e.value)
    for fragment in ("layer_types[2] is 'x'", "rope_type is 'linear'", "global_rope_theta 1.0", "my_new_switch"):
        assert fragment in msg, fragment


def test_folder_with_disagreeing_generations_is_refused(tmp_path):
    save_hf(random_model(tiny_config()), tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    d = json.loads(path.read_text())
    d["rope_parameters"]["sliding_attention"]["rope_theta"] = 1234.0
    path.write_text(json.dumps(d))
    with pytest.raises(ExportError) as e:
        load_hf(tmp_path / "hf")
    assert str(path) in str(e.value) and "rope_parameters.sliding_attention.rope_theta 1234.0" in str(e.value)


# ---------------------------------------------------------------- a folder saved by transformers 5.x

# (name, ModernBertConfig kwargs): 4.x-style kwargs and native 5.x kwargs, global != local theta
SAVED = [
    ("v4_kwargs_p2", dict(num_hidden_layers=3, global_attn_every_n_layers=2, global_rope_theta=20000.0,
                          local_rope_theta=300.0, local_attention=10)),
    ("v5_kwargs_p3", dict(num_hidden_layers=4, layer_types=[F, S, S, F], rope_parameters=_rope(900.0, 50000.0),
                          local_attention=8)),
    ("v5_kwargs_one_global_untied", dict(num_hidden_layers=3, layer_types=[F, S, S], local_attention=16,
                                         rope_parameters=_rope(160000.0, 10000.0), tie_word_embeddings=False)),
]


@needs_v5
@pytest.mark.parametrize("name,kw", SAVED, ids=[s[0] for s in SAVED])
def test_v5_saved_folder_imports_with_hf_logits(tmp_path, name, kw):
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(
        vocab_size=211, hidden_size=48, intermediate_size=64, num_attention_heads=3, pad_token_id=PAD,
        bos_token_id=CLS, cls_token_id=CLS, eos_token_id=SEP, sep_token_id=SEP, max_position_embeddings=256,
        attn_implementation="eager", **copy.deepcopy(kw))
    hf = perturb_(transformers.ModernBertForMaskedLM(config), seed=7).eval()
    hf.save_pretrained(str(tmp_path / "hf"))
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "layer_types" in written and "rope_parameters" in written and "global_rope_theta" not in written

    model = load_hf(tmp_path / "hf", mask_token_id=MASK).eval()
    want = {F: config.rope_parameters[F]["rope_theta"], S: config.rope_parameters[S]["rope_theta"]}
    assert layer_pattern(model.config.global_attn_every_n_layers, model.config.num_hidden_layers) == config.layer_types
    assert (model.config.global_rope_theta, model.config.local_rope_theta) == (want[F], want[S])
    ids, mask = padded_batch(211, LENGTHS, seed=2)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    assert max_diff_real(flex_logits(model, ids, mask), theirs, mask) <= TOL


# ---------------------------------------------------------------- export: both generations, read back by 5.x

EXPORTED = [
    ("p2_thetas_differ", dict(num_hidden_layers=3, global_attn_every_n_layers=2, global_rope_theta=20000.0,
                              local_rope_theta=300.0)),
    ("p3_local_160k", dict(num_hidden_layers=4, global_attn_every_n_layers=3, local_rope_theta=160000.0)),
    ("p1_all_global", dict(num_hidden_layers=2, global_attn_every_n_layers=1, global_rope_theta=1000.0)),
    ("p5_only_layer0_global", dict(num_hidden_layers=3, global_attn_every_n_layers=5, local_rope_theta=77.0)),
]


@pytest.mark.parametrize("name,overrides", EXPORTED, ids=[e[0] for e in EXPORTED])
def test_export_writes_both_generations_consistently(name, overrides):
    cfg = tiny_config(**overrides)
    d = config_to_hf(cfg)
    pattern = layer_pattern(cfg.global_attn_every_n_layers, cfg.num_hidden_layers)
    assert d["layer_types"] == pattern and d["global_attn_every_n_layers"] == cfg.global_attn_every_n_layers
    assert d["rope_parameters"] == _rope(cfg.global_rope_theta, cfg.local_rope_theta)
    assert (d["global_rope_theta"], d["local_rope_theta"]) == (cfg.global_rope_theta, cfg.local_rope_theta)
    assert _layout(config_from_hf(d)) == _layout(cfg)  # every key read, nothing refused


@needs_v5
@pytest.mark.parametrize("name,overrides", EXPORTED, ids=[e[0] for e in EXPORTED])
def test_transformers_5_reads_our_export_as_meant(tmp_path, name, overrides):
    cfg = tiny_config(**overrides)
    save_hf(random_model(cfg), tmp_path / "hf")
    hf = transformers.ModernBertConfig.from_pretrained(str(tmp_path / "hf"))
    assert hf.layer_types == [F if i % cfg.global_attn_every_n_layers == 0 else S for i in range(cfg.num_hidden_layers)]
    assert hf.rope_parameters[F] == {"rope_type": "default", "rope_theta": cfg.global_rope_theta}
    assert hf.rope_parameters[S] == {"rope_type": "default", "rope_theta": cfg.local_rope_theta}


@needs_v5
@pytest.mark.parametrize("name,overrides", EXPORTED, ids=[e[0] for e in EXPORTED])
def test_export_then_transformers_5_resave_round_trip(tmp_path, name, overrides):
    """FlexBERT -> save_hf -> transformers 5 load -> save_pretrained (config rewritten) -> load_hf: same logits."""
    cfg = tiny_config(**overrides)
    model = random_model(cfg, seed=len(name))
    save_hf(model, tmp_path / "ours")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "ours"), attn_implementation="eager")
    hf.save_pretrained(str(tmp_path / "resaved"))
    rewritten = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert "global_rope_theta" not in rewritten and "local_rope_theta" not in rewritten  # 5.x dropped them
    back = load_hf(tmp_path / "resaved").eval()
    assert _layout(back.config) == _layout(cfg)
    ids, mask = padded_batch(cfg.vocab_size, LENGTHS, seed=3)
    assert max_diff_real(flex_logits(model, ids, mask), flex_logits(back, ids, mask), mask) <= TOL
