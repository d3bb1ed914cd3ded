"""Attention: variants (what is computed) and kernels (how it runs)."""
from flexbert.model.attention.kernels import KERNELS, AttentionKernel, PackedSeqInfo, resolve_kernel
from flexbert.model.attention.module import PlainAttention, RopeAttention, build_attention
from flexbert.model.attention.rope import apply_rope, inv_frequencies, rope_cos_signed_sin, rope_cos_sin, rotate_half

__all__ = ["KERNELS", "AttentionKernel", "PackedSeqInfo", "resolve_kernel", "PlainAttention", "RopeAttention",
           "build_attention", "apply_rope", "inv_frequencies", "rope_cos_sin", "rope_cos_signed_sin", "rotate_half"]
