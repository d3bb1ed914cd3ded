"""Rotary position embeddings (RoPE), pure PyTorch, as HF ModernBERT computes them.

Shape legend: T packed tokens, N heads, H head dim.

Rotate-half (GPT-NeoX) convention over the full head dim:
inv_freq = 1 / theta ** (arange(0, H, 2) / H); angle(t, f) = position_t * inv_freq_f;
x_rot = x * cos + rotate_half(x) * sin, with cos/sin = cat(angle, angle).cos()/sin().
Angles are computed in fp32 from the positions (which restart at 0 for every
document), so bf16 training does not lose precision in the angles.
"""
from __future__ import annotations

import torch

from flexbert.model.attention.kernels.base import PackedSeqInfo

__all__ = ["inv_frequencies", "rope_cos_sin", "rope_cos_signed_sin", "rotate_half", "apply_rope"]


def inv_frequencies(head_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Return the (H/2,) fp32 inverse frequencies 1 / theta ** (2i / H)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta ** exponent)


def rope_cos_sin(seqs: PackedSeqInfo, position_ids_T: torch.Tensor, head_dim: int,
                 theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return fp32 (cos_TH, sin_TH) for the batch, computed once per theta and reused by every layer.

    Args:
        seqs: the batch's PackedSeqInfo; its cache keeps the result for this forward.
        position_ids_T: (T,) position of each token inside its document.
        head_dim: H.
        theta: RoPE base of the layer.
    """
    key = f"rope:{head_dim}:{theta!r}"
    cached = seqs.cache.get(key)
    if cached is None:
        inv_freq = inv_frequencies(head_dim, theta, device=position_ids_T.device)
        angles_TF = position_ids_T.float()[:, None] * inv_freq[None, :]
        angles_TH = torch.cat((angles_TF, angles_TF), dim=-1)
        cached = (angles_TH.cos(), angles_TH.sin())
        seqs.cache[key] = cached
    return cached


def rope_cos_signed_sin(seqs: PackedSeqInfo, position_ids_T: torch.Tensor, head_dim: int,
                        theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return fp32 (cos_TH, ssin_TH) with ssin = cat(-sin_half, sin_half), cached like rope_cos_sin.

    x * cos + rotate_half(x) * sin == x * cos + swap_halves(x) * ssin exactly ((-a) * b == a * (-b)
    in IEEE arithmetic), which saves the negation pass over q and k in every layer.
    """
    key = f"rope-ssin:{head_dim}:{theta!r}"
    cached = seqs.cache.get(key)
    if cached is None:
        cos_TH, sin_TH = rope_cos_sin(seqs, position_ids_T, head_dim, theta)
        half = head_dim // 2
        cached = (cos_TH, torch.cat((-sin_TH[:, :half], sin_TH[:, half:]), dim=-1))
        seqs.cache[key] = cached
    return cached


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class _RopeFp32(torch.autograd.Function):
    """x * cos + swap_halves(x) * ssin for fp32 x in two passes, with a two-pass backward.

    Forward: one multiply into the output, then one multiply-add per half (`addcmul_`; on CPU it
    fuses the multiply and the add, so results may differ from `_rope_plain` by one rounding:
    at most 1 ulp of fp32, and closer to the exact rotation).
    Backward (swap_halves is its own transpose): grad_x = g * cos + swap_halves(g * ssin),
    i.e. gx1 = g1 * c1 + g2 * s2 and gx2 = g2 * c2 + g1 * s1.
    """

    @staticmethod
    def forward(ctx, x, cos_b, ssin_b):
        half = x.shape[-1] // 2
        out = torch.mul(x, cos_b)
        out[..., :half].addcmul_(x[..., half:], ssin_b[..., :half])
        out[..., half:].addcmul_(x[..., :half], ssin_b[..., half:])
        ctx.save_for_backward(cos_b, ssin_b)
        return out

    @staticmethod
    def backward(ctx, g):
        cos_b, ssin_b = ctx.saved_tensors
        half = g.shape[-1] // 2
        gx = torch.mul(g, cos_b)
        gx[..., :half].addcmul_(g[..., half:], ssin_b[..., half:])
        gx[..., half:].addcmul_(g[..., :half], ssin_b[..., :half])
        return gx, None, None


def apply_rope(x_TH: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor,
               signed_sin: bool = False) -> torch.Tensor:
    """Rotate queries and/or keys; computed in fp32, returned in x's dtype.

    Args:
        x_TH: (T, ..., H), e.g. (T, N, H) queries or keys, or (T, 2, N, H) both at once
            (a strided view of the fused qkv projection is fine; no copy is made of it).
        cos_TH, sin_TH: (T, H) fp32 from rope_cos_sin, or (cos_TH, ssin_TH) from
            rope_cos_signed_sin with signed_sin=True (same result, one pass less).
    fp32 on CPU (eager) takes a fused two-pass path (`_RopeFp32`, same numbers); elsewhere
    (bf16, CUDA, torch.compile, which fuses on its own) the plain expression below runs.
    """
    bshape = (x_TH.shape[0],) + (1,) * (x_TH.dim() - 2) + (x_TH.shape[-1],)
    if not signed_sin:
        half = x_TH.shape[-1] // 2
        sin_TH = torch.cat((-sin_TH[:, :half], sin_TH[:, half:]), dim=-1)
    if x_TH.dtype == torch.float32 and x_TH.device.type == "cpu" and not torch.compiler.is_compiling():
        return _RopeFp32.apply(x_TH, cos_TH.view(bshape), sin_TH.view(bshape))
    return _rope_plain(x_TH, cos_TH.view(bshape), sin_TH.view(bshape))


def _rope_plain(x_TH: torch.Tensor, cos_b: torch.Tensor, ssin_b: torch.Tensor) -> torch.Tensor:
    """x * cos + swap_halves(x) * ssin in fp32 by plain tensor ops (autograd, any device and dtype)."""
    x = x_TH.float()
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat((x2, x1), dim=-1)
    rot.mul_(ssin_b)
    out = x * cos_b
    out.add_(rot)
    return out.to(x_TH.dtype)
