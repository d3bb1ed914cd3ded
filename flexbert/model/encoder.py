"""FlexBertModel: embeddings -> layers -> final norm over packed tokens.

Shape legend: B sequences, S padded length, T packed tokens, D hidden size.

Padded callers are unpadded once at the entry and re-padded at the exit; every layer
sees (T, D) plus one PackedSeqInfo built per forward. The attention kernel is resolved
lazily, once per (device, compute dtype), on the first forward there, and cached: a
model built on CPU and moved to CUDA picks the CUDA kernel on its first CUDA forward.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.attention.kernels import AttentionKernel, resolve_kernel
from flexbert.model.embeddings import build_embeddings
from flexbert.model.init import init_weights
from flexbert.model.layers import build_layer, layout_has_final_norm
from flexbert.model.norms import build_norm
from flexbert.model.packing import PackedInputs, pack_inputs, repad
from flexbert.model.registries import check_block_names

__all__ = ["FlexBertModel"]

log = logging.getLogger(__name__)


class FlexBertModel(nn.Module):
    """The bare encoder; weight names match HF ModernBertModel (embeddings., layers.{i}., final_norm.)."""

    def __init__(self, config: FlexBertConfig, *, init: bool = True):
        """Build the encoder.

        Args:
            config: the model config (kept as `self.config`, never mutated).
            init: initialise weights with config.init; wrappers that init the whole model pass False.
        """
        super().__init__()
        check_block_names(config)  # every block name, the kernel's too, before anything is built
        self.config = config
        self.embeddings = build_embeddings(config)
        self.layers = nn.ModuleList(build_layer(config, i, spec) for i, spec in enumerate(config.layer_types()))
        self.final_norm = build_norm(config) if layout_has_final_norm(config) else nn.Identity()
        self._kernels: dict[tuple[str, int | None, torch.dtype], AttentionKernel] = {}
        if init:
            init_weights(self, config)

    def attention_kernel(self, device: torch.device, dtype: torch.dtype) -> AttentionKernel:
        """Return the kernel for `device`/`dtype`, resolving model.attn_backend on first use there."""
        device = torch.device(device)
        key = (device.type, device.index, dtype)
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = resolve_kernel(self.config.attn_backend, device, dtype,
                                    needs_dropout=self.config.attention_dropout > 0.0, head_dim=self.config.head_dim)
            if self.config.attn_backend != "auto":  # resolve_kernel logs the auto choice itself
                log.info("attention kernel: %s on %s %s", kernel.name, device, dtype)
            self._kernels[key] = kernel
        return kernel

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.embeddings.tok_embeddings.weight.dtype

    def encode(self, packed: PackedInputs) -> torch.Tensor:
        """Run the encoder on packed inputs.

        Args:
            packed: from `flexbert.model.packing.pack_inputs`.
        Returns:
            (T, D) last hidden state.
        """
        device = packed.input_ids_T.device
        kernel = self.attention_kernel(device, self._compute_dtype(device))
        check = getattr(self.embeddings, "check_max_seqlen", None)
        if check is not None:
            check(packed.seqs.max_seqlen)
        x_TD = self.embeddings(packed.input_ids_T, packed.position_ids_T)
        checkpointing = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing:
            # Imported here: torch.utils.checkpoint pulls in sympy (~1 s), which `import flexbert` avoids.
            from torch.utils.checkpoint import checkpoint
        for layer in self.layers:
            if checkpointing:
                # Non-reentrant checkpointing keeps the RNG state, so dropout masks match on recompute.
                x_TD = checkpoint(
                    layer, x_TD, packed.seqs, packed.position_ids_T, kernel, use_reentrant=False)
            else:
                x_TD = layer(x_TD, packed.seqs, packed.position_ids_T, kernel)
        return self.final_norm(x_TD)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Encode padded or packed documents.

        Args:
            input_ids: (B, S) padded, or (T,) packed documents.
            attention_mask: (B, S) 1 for real tokens (padded input only).
            cu_seqlens: (D+1,) int32 document boundaries (packed input only).
            max_seqlen: longest document (packed input; computed when None).
            position_ids: (B, S) or (T,); default restarts at 0 per document.
        Returns:
            (B, S, D) with zeros at padding for padded input, (T, D) for packed input.
        """
        packed = pack_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        return repad(self.encode(packed), packed)
