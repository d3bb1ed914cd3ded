"""The reference attention kernel: per-document dense attention with an explicit window mask.

Shape legend: T packed tokens, N heads, H head dim, L length of one document.

Slow (a Python loop over documents) and obviously right: every fast kernel is
tested against it. Scores and softmax are computed in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flexbert.model.registries import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo

__all__ = ["EagerKernel", "host_cu_seqlens"]


def host_cu_seqlens(seqs: PackedSeqInfo) -> list[int]:
    """Document boundaries as a Python list, read from the device once per forward."""
    bounds = seqs.cache.get("cu_seqlens_host")
    if bounds is None:
        bounds = seqs.cu_seqlens.tolist()
        seqs.cache["cu_seqlens_host"] = bounds
    return bounds


@KERNELS.register("eager")
class EagerKernel(AttentionKernel):
    """softmax(q k^T * scale) v per document; local layers mask keys with |i - j| > window."""

    name = "eager"
    supports_dropout = True

    def __call__(self, q_TNH: torch.Tensor, k_TNH: torch.Tensor, v_TNH: torch.Tensor, seqs: PackedSeqInfo,
                 window: int | None, dropout_p: float, scale: float) -> torch.Tensor:
        bounds = host_cu_seqlens(seqs)
        outs = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            q_NLH = q_TNH[start:end].transpose(0, 1).float()
            k_NLH = k_TNH[start:end].transpose(0, 1).float()
            v_NLH = v_TNH[start:end].transpose(0, 1).float()
            scores_NLL = (q_NLH @ k_NLH.transpose(-1, -2)) * scale
            if window is not None:
                idx = torch.arange(end - start, device=q_TNH.device)
                too_far_LL = (idx[:, None] - idx[None, :]).abs() > window
                scores_NLL = scores_NLL.masked_fill(too_far_LL, float("-inf"))
            probs_NLL = scores_NLL.softmax(dim=-1)
            if dropout_p > 0.0:
                probs_NLL = F.dropout(probs_NLL, p=dropout_p, training=True)
            outs.append((probs_NLL @ v_NLH).transpose(0, 1))
        return torch.cat(outs, dim=0).to(q_TNH.dtype)
