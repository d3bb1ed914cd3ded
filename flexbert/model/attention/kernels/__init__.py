"""Attention kernels, chosen by name: how attention runs, not what it computes.

`auto` resolves once when a model is built, to the first kernel that can run:
on CUDA `flash_attn` (the optional flash-attn package), then `torch_flash`
(PyTorch's bundled FlashAttention varlen kernels), then `flex` (FlexAttention
with a document + window block mask), then `sdpa`; on CPU `sdpa`.
A kernel named explicitly that cannot run is an error with its reason.

Training also needs gradients: a kernel may run forward somewhere it cannot run
backward (`AttentionKernel.backward_unavailable_reason`; FlexAttention on CPU in
recent torch), so the trainer resolves with `needs_backward=True` before it builds
anything, while inference (eval, export checks) only needs forward.
"""
from __future__ import annotations

import logging

import torch

from flexbert.errors import ConfigError
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo
from flexbert.model.registries import KERNELS

__all__ = ["KERNELS", "AttentionKernel", "PackedSeqInfo", "resolve_kernel", "AUTO_ORDER"]

log = logging.getLogger(__name__)

# Registration happens on import of each kernel module (they import KERNELS from flexbert.model.registries);
# each imports its optional package (flash_attn, triton) only when it runs, so all of them import here.
from flexbert.model.attention.kernels import eager, flash, flex, sdpa, torch_flash  # noqa: E402,F401

AUTO_ORDER = {"cuda": ("flash_attn", "torch_flash", "flex", "sdpa"), "cpu": ("sdpa",)}


def _why_not(kernel: AttentionKernel, device: torch.device, dtype: torch.dtype, head_dim: int | None,
             needs_dropout: bool, needs_backward: bool, named: bool) -> tuple[str, str] | None:
    """(what cannot be done: "run" or "train", why) when `kernel` does not fit the request, else None."""
    why = kernel.unavailable_reason(device, dtype, head_dim)
    if why is not None:
        return "run", why
    if needs_dropout and not kernel.supports_dropout:
        return "run", ("it does not support attention dropout (set model.attention_dropout: 0.0)" if named
                       else "no attention dropout")
    if needs_backward:
        why = kernel.backward_unavailable_reason(device, dtype)
        if why is not None:
            return "train", why
    return None


def resolve_kernel(name: str, device: torch.device, dtype: torch.dtype, needs_dropout: bool = False,
                   where: str = "model.attn_backend", needs_backward: bool = False,
                   head_dim: int | None = None) -> AttentionKernel:
    """Return the kernel called `name` (or the best one for `auto`), checked for `device`/`dtype`.

    Args:
        name: a registered kernel name or `auto`.
        device, dtype: where and in which compute dtype attention runs.
        needs_dropout: attention dropout > 0 will be used.
        where: the config key naming the kernel (for messages).
        needs_backward: gradients are needed (training); a forward-only kernel is refused.
        head_dim: the model's head dim (a kernel's limits on it are in its unavailable_reason).
    Raises:
        ConfigError: with the kernel's own reason, when it cannot serve the request.
    """
    device = torch.device(device)
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER.get(device.type, ("sdpa",)):
            if candidate not in KERNELS:
                reasons.append(f"{candidate}: not built")
                continue
            kernel = KERNELS.get(candidate)()
            refusal = _why_not(kernel, device, dtype, head_dim, needs_dropout, needs_backward, named=False)
            if refusal is None:
                skipped = f" ({'; '.join(reasons)})" if reasons else ""
                log.info("attention kernel: %s%s", candidate, skipped)
                return kernel
            reasons.append(f"{candidate}: {refusal[1]}")
        what = "train" if needs_backward else "run"
        raise ConfigError(f"no attention kernel can {what} on {device} {dtype}: {'; '.join(reasons)}")
    if name not in KERNELS:
        KERNELS.get(name, where)  # raises with the choices and the closest name
    kernel = KERNELS.get(name, where)()
    refusal = _why_not(kernel, device, dtype, head_dim, needs_dropout, needs_backward, named=True)
    if refusal is not None:
        what, why = refusal
        raise ConfigError(f"attention kernel '{name}' at {where} cannot {what} on {device} {dtype}: {why}")
    return kernel
