"""Training FLOPs per token and peak FLOP/s, for MFU; parameter counts.

Both come from the model itself, built on the meta device (shapes only, no memory, no init), so a
new block is counted by being built; nothing here knows which blocks exist.

MFU = tokens/s x FLOPs/token / peak FLOP/s, counting real (non-pad) tokens. FLOPs per token of a
training step (forward + backward = 3 x forward, 2 FLOPs per multiply-add):

    6 x N_encoder                                   every parameter of the transformer layers and
                                                    the final norm is one multiply-add per token
  + 3 x sum over blocks of `extra_forward_flops`    work a block does that is not a multiply by a
                                                    parameter, declared by the block itself: the
                                                    attention scores (Q K^T) and mixing (P V),
                                                    4 x d x context forward, context = seq_len for
                                                    global layers, min(seq_len, 2 x window + 1)
                                                    for local ones
  + 6 x N_head x mlm_probability                    the head (dense, norm, decoder weight and
                                                    bias) runs only on masked tokens with
                                                    sparse_prediction (on all tokens without it)

N_encoder leaves out the embedding table (a lookup) and the embedding norm. A tied decoder is
counted in the head because there it is a matmul. Attention uses `seq_len` as every token's
context: with packed documents shorter than seq_len (document masking) the real attention work is
smaller, so this is the usual upper bound, and it matches how MFU is reported for padded training.

A block declares its extra work with a method ``extra_forward_flops(seq_len) -> float`` (forward
FLOPs per token); blocks without one do only parameter multiplies.
"""
from __future__ import annotations

from typing import Any

from flexbert.model.build import meta_model

__all__ = ["count_params", "flops_per_token", "peak_flops", "PEAK_FLOPS", "precision_key"]


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def count_params(cfg: Any) -> dict[str, int]:
    """Parameter counts of a FlexBertConfig, from the model built on the meta device.

    Returns a dict with ``embeddings`` (token table + embedding norm), ``encoder`` (layers + final
    norm), ``head`` (dense + head norm + decoder bias, plus the decoder weight when untied) and
    ``total``. A decoder tied to the embeddings is one tensor, counted once (in ``embeddings``).
    """
    model = meta_model(cfg)
    seen = {id(p) for p in model.model.embeddings.parameters()}
    embeddings = _numel(model.model.embeddings.parameters())
    encoder = _numel(p for name, p in model.model.named_parameters() if not name.startswith("embeddings."))
    head = _numel(p for name, p in model.named_parameters() if not name.startswith("model.") and id(p) not in seen)
    return {"embeddings": embeddings, "encoder": encoder, "head": head, "total": embeddings + encoder + head}


def _extra_forward_flops(module: Any, seq_len: int) -> float:
    return sum(m.extra_forward_flops(seq_len) for m in module.modules() if hasattr(m, "extra_forward_flops"))


def flops_per_token(cfg: Any, seq_len: int, mlm_probability: float) -> float:
    """Training FLOPs (forward + backward) per real token; the formula is in the module docstring.

    Args:
        cfg: a FlexBertConfig.
        seq_len: the phase's max sequence length (1024 in pretraining, 8192 in context extension).
        mlm_probability: the masking rate: the fraction of tokens the head runs on with
            ``sparse_prediction`` (without it the head runs on every token and this is ignored).
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    if not getattr(cfg, "sparse_prediction", True):
        mlm_probability = 1.0  # a dense head runs on every token
    model = meta_model(cfg)
    counts = count_params(cfg)
    # The decoder is a matmul whether or not its weight is shared with the embeddings.
    head = _numel(p for name, p in model.named_parameters(remove_duplicate=False) if not name.startswith("model."))
    encoder = 2.0 * counts["encoder"] + _extra_forward_flops(model.model, seq_len)
    head_flops = 2.0 * head + _extra_forward_flops(model.head, seq_len)
    return 3.0 * (encoder + head_flops * mlm_probability)


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
