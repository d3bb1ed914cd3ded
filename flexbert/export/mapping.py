"""FlexBertConfig <-> Hugging Face ModernBertConfig (config.json) translation.

HF ModernBERT computes exactly one architecture: token embeddings + LayerNorm, pre-norm
layers (layer 0 without attn_norm), RoPE attention with alternating global / sliding-window
layers, a GLU MLP, a dense+act+norm head and a linear decoder. A FlexBERT config is exported
only when it describes that architecture; anything else is refused here with the option and
its value, so an export never silently computes something different from the trained model.

Weight names are identical on both sides (see docs/ARCHITECTURE.md), so weights need no
renaming; `hf.py` only checks the key sets and handles the tied decoder. The global/local layer
pattern and the RoPE thetas are written and read in both config generations (transformers 4.x
keys and 5.x `layer_types` / `rope_parameters`) by `hf_layout.py`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from flexbert.config.model import FlexBertConfig
from flexbert.export.hf_layout import LAYOUT_KEYS, layout_from_hf, layout_to_hf

__all__ = [
    "ExportError",
    "ACT_TO_HF",
    "ACT_FROM_HF",
    "config_to_hf",
    "config_from_hf",
    "hf_refusals",
]


class ExportError(ValueError):
    """A model or folder cannot be converted; the message names the option and what to change."""


# FlexBERT activation name -> HF ACT2FN name computing the *same* function (bit-for-bit in
# PyTorch: "gelu" is exact erf GELU, "gelu_pytorch_tanh" is F.gelu(approximate="tanh")).
ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu", "relu": "relu"}
# HF names accepted on import. "swish" is HF's alias of SiLU. Near-equivalents such as
# "gelu_new" (a hand-written tanh formula) are refused: they differ in the last bits.
ACT_FROM_HF = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu", "relu": "relu"}

# Fixed architecture choices HF ModernBERT has no switch for: FlexBERT option -> the only
# value HF can compute, and why the others cannot be exported.
_FIXED = {
    "embedding": ("modernbert", "HF ModernBERT has no position embeddings (it uses RoPE in attention)"),
    "norm": ("layernorm", "HF ModernBERT only has LayerNorm"),
    "layer_layout": ("prenorm", "HF ModernBERT layers are pre-norm (x + attn(norm(x)), then x + mlp(norm(x)))"),
    "attention": ("rope", "HF ModernBERT always applies RoPE"),
    "mlp": ("glu", "HF ModernBERT's MLP is always a GLU (Wi -> input, gate)"),
}

# HF config keys that ModernBERT's modeling code never reads, or that only affect training /
# kernels / generation, so they are accepted and dropped on import. Legacy keys of the released
# answerdotai checkpoints (layer_norm_eps, position_embedding_type, gradient_checkpointing) too.
_HF_IGNORED = {
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "_name_or_path",
    "bos_token_id", "eos_token_id", "deterministic_flash_attn", "reference_compile",
    "repad_logits_with_grad", "gradient_checkpointing", "layer_norm_eps", "position_embedding_type",
    "id2label", "label2id", "num_labels", "finetuning_task", "tokenizer_class", "prefix",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
    "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "task_specific_params",
    "decoder_start_token_id", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "num_beam_groups", "diversity_penalty", "attn_implementation",
    "_attn_implementation_autoset",
}

# HF key -> FlexBERT field with the same meaning and the same name.
_SAME_NAME = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings", "initializer_range", "initializer_cutoff_factor", "norm_eps",
    "norm_bias", "pad_token_id", "cls_token_id", "sep_token_id", "attention_bias",
    "local_attention", "embedding_dropout", "mlp_bias", "mlp_dropout",
    "decoder_bias", "classifier_pooling", "classifier_dropout", "classifier_bias", "sparse_prediction",
    "tie_word_embeddings", "problem_type", "mask_token_id",
)


def _cfg_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def hf_refusals(cfg: Any) -> list[str]:
    """Every reason `cfg` (a FlexBertConfig) cannot be written as HF ModernBERT; [] if it can."""
    c = _cfg_dict(cfg)
    out = []
    for key, (ok, why) in _FIXED.items():
        if key in c and c[key] != ok:
            out.append(f"model.{key} is {c[key]!r}: {why} (export needs model.{key}: {ok})")
    for key in ("hidden_activation", "classifier_activation"):
        if c.get(key) not in ACT_TO_HF:
            out.append(f"model.{key} is {c.get(key)!r}: HF has no exact equivalent; exportable: {', '.join(ACT_TO_HF)}")
    if c.get("classifier_pooling") not in ("cls", "mean"):  # ModernBertConfig rejects other values
        out.append(f"model.classifier_pooling is {c.get('classifier_pooling')!r}: HF ModernBERT supports cls, mean")
    if c["hidden_size"] % c["num_attention_heads"]:
        out.append(f"model.hidden_size {c['hidden_size']} is not a multiple of num_attention_heads {c['num_attention_heads']}")
    period = c.get("global_attn_every_n_layers")
    if not isinstance(period, int) or period < 1:
        out.append(f"model.global_attn_every_n_layers is {period!r}: HF needs an integer >= 1")
    else:
        window = c.get("local_attention")
        has_local = any(i % period for i in range(c["num_hidden_layers"]))
        if has_local and (not isinstance(window, int) or window < 2 or window % 2):
            # HF uses local_attention // 2 keys on each side: an odd width would lose one key.
            out.append(f"model.local_attention is {window!r}: HF needs an even total width >= 2")
    return out


def config_to_hf(cfg: Any, *, transformers_version: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Translate a FlexBertConfig into an explicit HF ModernBERT config.json dict.

    Every field HF reads is written, so the folder never depends on HF's defaults (which have
    changed between recipes, e.g. rope thetas). All dropouts are written as 0.0: HF applies its
    single `attention_dropout` both to attention probabilities and after Wo, which FlexBERT keeps
    separate, so no non-zero value reproduces FlexBERT's training; inference needs none.

    Raises:
        ExportError: listing every option HF ModernBERT cannot represent.
    """
    reasons = hf_refusals(cfg)
    if reasons:
        raise ExportError("cannot export to Hugging Face ModernBERT:\n  - " + "\n  - ".join(reasons)
                          + "\nKeep this model in FlexBERT format, or train with HF-compatible options.")
    c = _cfg_dict(cfg)
    out: dict[str, Any] = {
        "architectures": ["ModernBertForMaskedLM"],
        "model_type": "modernbert",
        "vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "hidden_activation": ACT_TO_HF[c["hidden_activation"]],
        "max_position_embeddings": c["max_position_embeddings"],
        "initializer_range": c["initializer_range"],
        "initializer_cutoff_factor": c["initializer_cutoff_factor"],
        "norm_eps": c["norm_eps"],
        "norm_bias": c["norm_bias"],
        "pad_token_id": c["pad_token_id"],
        # FlexBERT wraps documents as [CLS] ... [SEP]: bos/eos are the same tokens.
        "bos_token_id": c["cls_token_id"],
        "eos_token_id": c["sep_token_id"],
        "cls_token_id": c["cls_token_id"],
        "sep_token_id": c["sep_token_id"],
        # Not an HF field (HF keeps it in the tokenizer); stored so import restores it.
        "mask_token_id": c["mask_token_id"],
        # both generations: 4.x keys, and 5.x layer_types / rope_parameters saying the same
        **layout_to_hf(c["global_attn_every_n_layers"], c["num_hidden_layers"],
                       c["global_rope_theta"], c["local_rope_theta"]),
        "local_attention": c["local_attention"],
        "attention_bias": c["attention_bias"],
        "mlp_bias": c["mlp_bias"],
        "classifier_bias": c["classifier_bias"],
        "decoder_bias": c["decoder_bias"],
        "classifier_activation": ACT_TO_HF[c["classifier_activation"]],
        "classifier_pooling": c["classifier_pooling"],
        "tie_word_embeddings": c["tie_word_embeddings"],
        # FlexBERT's sparse head is a training-speed option; HF users expect full logits.
        "sparse_prediction": False,
        "sparse_pred_ignore_index": -100,
        "attention_dropout": 0.0,
        "embedding_dropout": 0.0,
        "mlp_dropout": 0.0,
        "classifier_dropout": 0.0,
        "deterministic_flash_attn": False,
        "repad_logits_with_grad": False,
    }
    if c.get("problem_type") is not None:
        out["problem_type"] = c["problem_type"]
    if c.get("num_labels") is not None:  # HF derives num_labels from id2label
        n = int(c["num_labels"])
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    if dtype is not None:
        out["dtype"] = dtype
    if transformers_version is not None:
        out["transformers_version"] = transformers_version
    return out


def config_from_hf(hf: Mapping[str, Any], *, mask_token_id: int | None = None,
                   source: str | None = None) -> FlexBertConfig:
    """Translate an HF ModernBERT config.json dict into a FlexBertConfig.

    Args:
        hf: the parsed config.json (or `ModernBertConfig.to_dict()`).
        mask_token_id: taken from the folder's tokenizer when known (HF's config has none).
        source: file name for error messages.

    Raises:
        ExportError: the config is not ModernBERT, has keys this mapping does not know, or
            settings FlexBERT cannot reproduce (listed together).
    """
    where = f" in {source}" if source else ""
    hf = dict(hf)
    if hf.get("model_type") != "modernbert":
        raise ExportError(f"model_type is {hf.get('model_type')!r}{where}; only 'modernbert' folders can be imported")
    layout, problems = layout_from_hf(hf)  # layer pattern and thetas, from either generation
    known = set(_SAME_NAME) | _HF_IGNORED | set(LAYOUT_KEYS) | {
        "hidden_activation", "classifier_activation", "attention_dropout",
        "sparse_pred_ignore_index", "rope_scaling", "pruned_heads",
    }
    unknown = sorted(set(hf) - known)
    if unknown:
        problems.append(f"unknown HF config keys {unknown}: this importer does not know what they change")
    if hf.get("rope_scaling") not in (None, {}):
        problems.append(f"rope_scaling is {hf['rope_scaling']!r}: FlexBERT implements plain RoPE only")
    if hf.get("pruned_heads") not in (None, {}):
        problems.append(f"pruned_heads is {hf['pruned_heads']!r}: pruned attention heads are not supported")
    if hf.get("sparse_pred_ignore_index", -100) != -100:
        problems.append(f"sparse_pred_ignore_index is {hf['sparse_pred_ignore_index']!r}: FlexBERT ignores label -100")
    acts = {}
    for key in ("hidden_activation", "classifier_activation"):
        name = hf.get(key, "gelu")
        if name not in ACT_FROM_HF:
            problems.append(f"{key} is {name!r}: FlexBERT supports {', '.join(ACT_FROM_HF)}")
        acts[key] = ACT_FROM_HF.get(name)
    if problems:
        raise ExportError(f"cannot import HF ModernBERT config{where}:\n  - " + "\n  - ".join(problems))

    fields = {f.name for f in dataclasses.fields(FlexBertConfig)}
    kw: dict[str, Any] = {k: hf[k] for k in _SAME_NAME if k in hf and hf[k] is not None}
    kw.update(acts)
    kw.update(layout)
    kw.update(embedding="modernbert", norm="layernorm", layer_layout="prenorm", attention="rope", mlp="glu")
    # HF applies one attention_dropout to probabilities and after Wo; FlexBERT has both knobs.
    p = float(hf.get("attention_dropout", 0.0) or 0.0)
    kw["attention_dropout"] = p
    kw["attn_out_dropout"] = p
    if "id2label" in hf or "num_labels" in hf:
        kw["num_labels"] = int(hf["num_labels"]) if "num_labels" in hf else len(hf["id2label"])
    if mask_token_id is not None:  # the caller's (or the tokenizer's) id wins over config.json
        kw["mask_token_id"] = int(mask_token_id)
    default_mask = next(f.default for f in dataclasses.fields(FlexBertConfig) if f.name == "mask_token_id")
    if "mask_token_id" not in kw and not 0 <= default_mask < kw.get("vocab_size", 50368):
        raise ExportError(f"HF config{where} has no mask_token_id and the folder has no tokenizer to read it "
                          f"from; pass mask_token_id=... (CLI: --mask-token-id)")
    # HF ModernBertConfig defaults for keys a minimal config.json may omit; written out here so
    # the FlexBERT config never inherits FlexBERT defaults that differ from what HF computed.
    hf_defaults = {"norm_eps": 1e-5, "norm_bias": False, "attention_bias": False, "mlp_bias": False,
                   "classifier_bias": False, "decoder_bias": True, "tie_word_embeddings": True,
                   "local_attention": 128, "hidden_activation": "gelu", "classifier_activation": "gelu"}
    for k, v in hf_defaults.items():
        kw.setdefault(k, v)
    missing_fields = sorted(k for k in kw if k not in fields and k not in ("num_labels", "problem_type"))
    if missing_fields:  # contract drift between this module and flexbert.config.model
        raise ExportError(f"FlexBertConfig has no fields {missing_fields}; update flexbert/export/mapping.py")
    kw = {k: v for k, v in kw.items() if k in fields}
    try:
        return FlexBertConfig(**kw)
    except (TypeError, ValueError) as e:
        raise ExportError(f"HF config{where} gives an invalid FlexBERT config: {e}") from None
