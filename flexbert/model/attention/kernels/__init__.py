"""Attention kernels, chosen by name: how attention runs, not what it computes.

`auto` resolves once when a model is built, to the first kernel that can run:
on CUDA `flash_attn` (the optional flash-attn package), then `torch_flash`
(PyTorch's bundled FlashAttention varlen kernels), then `flex` (FlexAttention
with a document + window block mask), then `sdpa`; on CPU `sdpa`.
A kernel named explicitly that cannot run is an error with its reason.
"""
from __future__ import annotations

import logging

import torch

from flexbert.config.strict import ConfigError
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo
from flexbert.registry import Registry

__all__ = ["KERNELS", "AttentionKernel", "PackedSeqInfo", "resolve_kernel", "AUTO_ORDER"]

log = logging.getLogger(__name__)

KERNELS: Registry[type[AttentionKernel]] = Registry("attention kernel")

# Registration happens on import of each kernel module (they import KERNELS from here).
from flexbert.model.attention.kernels import eager, sdpa  # noqa: E402,F401

for _optional in ("flex", "flash", "torch_flash"):  # written separately; absent modules are skipped
    try:
        __import__(f"flexbert.model.attention.kernels.{_optional}")
    except ModuleNotFoundError as e:
        if e.name != f"flexbert.model.attention.kernels.{_optional}":
            raise

AUTO_ORDER = {"cuda": ("flash_attn", "torch_flash", "flex", "sdpa"), "cpu": ("sdpa",)}


def resolve_kernel(name: str, device: torch.device, dtype: torch.dtype, needs_dropout: bool = False,
                   where: str = "model.attn_backend") -> AttentionKernel:
    """Return the kernel called `name` (or the best one for `auto`), checked for `device`/`dtype`."""
    device = torch.device(device)
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER.get(device.type, ("sdpa",)):
            if candidate not in KERNELS:
                reasons.append(f"{candidate}: not built")
                continue
            kernel = KERNELS.get(candidate)()
            why = kernel.unavailable_reason(device, dtype)
            if why is None and needs_dropout and not kernel.supports_dropout:
                why = "no attention dropout"
            if why is None:
                skipped = f" ({'; '.join(reasons)})" if reasons else ""
                log.info("attention kernel: %s%s", candidate, skipped)
                return kernel
            reasons.append(f"{candidate}: {why}")
        raise ConfigError(f"no attention kernel can run on {device} {dtype}: {'; '.join(reasons)}")
    if name not in KERNELS:
        KERNELS.get(name, where)  # raises with the choices and the closest name
    kernel = KERNELS.get(name, where)()
    why = kernel.unavailable_reason(device, dtype)
    if why is None and needs_dropout and not kernel.supports_dropout:
        why = "it does not support attention dropout (set model.attention_dropout: 0.0)"
    if why is not None:
        raise ConfigError(f"attention kernel '{name}' at {where} cannot run on {device} {dtype}: {why}")
    return kernel
