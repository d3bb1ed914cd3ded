"""Training FLOPs per token and peak FLOP/s, for MFU.

MFU = tokens/s x FLOPs/token / peak FLOP/s, counting real (non-pad) tokens. FLOPs per token of a
training step (forward + backward = 3 x forward, 2 FLOPs per multiply-add):

    6 x N_encoder                                   every token goes through every layer
  + sum over layers of 12 x d x context             attention scores (Q K^T) and mixing (P V):
                                                    2 matmuls x 2 FLOPs x d x context, x3 fwd+bwd;
                                                    context = seq_len for global layers and
                                                    min(seq_len, local_attention + 1) for local ones
  + 6 x N_head x mlm_probability                    the head (dense d x d, norm, decoder d x V +
                                                    bias) runs only on masked tokens with
                                                    sparse_prediction (on all tokens without it)

N_encoder are the parameters of the transformer layers and the final norm; the embedding table
is a lookup (no FLOPs) and is left out, as is the embedding norm. A tied decoder is counted in
the head because there it is a matmul. Attention uses `seq_len` as every token's context: with
packed documents shorter than seq_len (document masking) the real attention work is smaller, so
this is the usual upper bound, and it matches how MFU is reported for padded training.
"""
from __future__ import annotations

from typing import Any

__all__ = ["count_params", "flops_per_token", "peak_flops", "PEAK_FLOPS", "precision_key"]

# ModernBERT's defaults for the optional bias/flag fields, used when the config lacks them.
_FLAG_DEFAULTS = {"norm_bias": False, "attention_bias": False, "mlp_bias": False, "classifier_bias": False,
                  "decoder_bias": True}


def _flag(cfg: Any, name: str) -> bool:
    return bool(getattr(cfg, name, _FLAG_DEFAULTS[name]))


def _is_global(cfg: Any, i: int) -> bool:
    every = cfg.global_attn_every_n_layers
    return every is None or every <= 1 or i % every == 0


def count_params(cfg: Any) -> dict[str, int]:
    """Parameter counts of a FlexBertConfig, from its sizes alone (no model built).

    Returns a dict with ``embeddings`` (token table + embedding norm), ``encoder`` (layers + final
    norm), ``head`` (dense + head norm + decoder bias, plus the decoder weight when untied) and
    ``total``. Layer 0 has no attention norm (identity), as in ModernBERT.
    """
    d, V, I = cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size
    norm = d * (2 if _flag(cfg, "norm_bias") else 1)
    attn = d * 3 * d + d * d + (4 * d if _flag(cfg, "attention_bias") else 0)
    wi_out = 2 * I if cfg.mlp == "glu" else I
    mlp = d * wi_out + I * d + ((wi_out + d) if _flag(cfg, "mlp_bias") else 0)
    layers = cfg.num_hidden_layers * (attn + mlp + norm) + (cfg.num_hidden_layers - 1) * norm
    encoder = layers + norm  # + final norm
    embeddings = V * d + norm
    head = d * d + (d if _flag(cfg, "classifier_bias") else 0) + norm
    head += V if _flag(cfg, "decoder_bias") else 0
    if not getattr(cfg, "tie_word_embeddings", True):
        head += V * d
    return {"embeddings": embeddings, "encoder": encoder, "head": head, "total": embeddings + encoder + head}


def _attention_context(cfg: Any, i: int, seq_len: int) -> int:
    if _is_global(cfg, i):
        return seq_len
    return min(seq_len, cfg.local_attention + 1)  # local_attention is the total width: w/2 each side + self


def flops_per_token(cfg: Any, seq_len: int, mlm_probability: float) -> float:
    """Training FLOPs (forward + backward) per real token; the formula is in the module docstring.

    Args:
        cfg: a FlexBertConfig (sizes, mlp, global_attn_every_n_layers, local_attention, ...).
        seq_len: the phase's max sequence length (1024 in pretraining, 8192 in context extension).
        mlm_probability: the masking rate: the fraction of tokens the head runs on with
            ``sparse_prediction`` (without it the head runs on every token and this is ignored).
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    if not getattr(cfg, "sparse_prediction", True):
        mlm_probability = 1.0  # a dense head runs on every token
    counts = count_params(cfg)
    d = cfg.hidden_size
    # The decoder is a matmul whether or not its weight is shared with the embeddings.
    head = counts["head"] + (d * cfg.vocab_size if getattr(cfg, "tie_word_embeddings", True) else 0)
    attention = sum(12 * d * _attention_context(cfg, i, seq_len) for i in range(cfg.num_hidden_layers))
    return 6.0 * counts["encoder"] + attention + 6.0 * head * mlm_probability


# Dense (no sparsity) peak FLOP/s from vendor data sheets, per precision; None where the GPU has
# no such tensor-core mode. Matched against torch.cuda.get_device_name() in order: more specific
# names first ("H100 PCIe" before "H100", "L40S" before "L4").
PEAK_FLOPS: list[tuple[str, dict[str, float | None]]] = [
    ("h100 pcie", {"bf16": 756e12, "fp16": 756e12, "fp32": 51.2e12}),
    ("h100 nvl", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    ("h200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),  # also GH200
    ("h100", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),  # SXM, "NVIDIA H100 80GB HBM3"
    ("h800", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("b200", {"bf16": 2250e12, "fp16": 2250e12, "fp32": None}),
    ("a100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("a800", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("l40s", {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12}),
    ("l4", {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12}),
    ("a10g", {"bf16": 70e12, "fp16": 70e12, "fp32": 35e12}),
    ("a10", {"bf16": 125e12, "fp16": 125e12, "fp32": 31.2e12}),
    ("v100", {"bf16": None, "fp16": 125e12, "fp32": 15.7e12}),
    ("t4", {"bf16": None, "fp16": 65e12, "fp32": 8.1e12}),
]


def precision_key(precision: Any) -> str:
    """Composer precision ('amp_bf16', Precision.AMP_BF16, 'fp32', ...) -> 'bf16' | 'fp16' | 'fp32'."""
    text = str(getattr(precision, "value", precision)).lower()
    for key in ("bf16", "fp16"):
        if key in text:
            return key
    return "fp32"


def peak_flops(device_name: str | None = None, precision: str = "bf16") -> float | None:
    """Peak dense FLOP/s of a GPU for a precision ('bf16', 'fp16', 'fp32', or a Composer precision).

    Args:
        device_name: e.g. "NVIDIA H100 80GB HBM3"; None asks torch for the current CUDA device
            and returns None when there is none (CPU: MFU is not reported).
        precision: the training precision.

    Returns:
        FLOP/s, or None when the device is unknown or lacks that precision; pass a `peak_flops`
        override in the config for such devices.
    """
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    name = device_name.lower()
    key = precision_key(precision)
    for pattern, table in PEAK_FLOPS:
        if pattern in name:
            return table.get(key)
    return None
