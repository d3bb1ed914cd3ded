"""FlexBertForMaskedLM: encoder + prediction head + decoder, with a sparse MLM head.

Shape legend: B sequences, S padded length, T packed tokens, M labelled tokens, D hidden, V vocab.

The decoder + cross-entropy runs on the MLM loss kernel of `model.mlm_loss`
(flexbert/model/mlm_loss.py): `dense` materialises the logits, `chunked` never holds them all.
"""
from __future__ import annotations

import logging
from typing import Callable, ClassVar

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.encoder import FlexBertModel
from flexbert.model.heads import FlexBertPredictionHead
from flexbert.model.init import init_weights
from flexbert.model.mlm_loss import (IGNORE_INDEX, DenseMLMLoss, MLMLossKernel, compute_dtype, lazy, masked_lm_loss,
                                     resolve_mlm_loss)
from flexbert.model.packing import pack_inputs, repad

__all__ = ["FlexBertForMaskedLM", "MaskedLMOutput", "IGNORE_INDEX", "masked_lm_loss"]

log = logging.getLogger(__name__)


class MaskedLMOutput:
    """Result of FlexBertForMaskedLM.

    Attributes:
        loss: mean cross-entropy over labels != -100 (0 when there are none); None without labels.
        logits: (M, V) labelled rows when sparse prediction ran; else (B, S, V) padded or (T, V) packed.
            With the `chunked` loss kernel they are computed on first access, without gradients.
        labels: the labels aligned with the rows of logits ((M,), (B, S) or (T,)); None without labels.
        token_loss: fp32 per-row losses aligned with the scored rows ((M,), or (T,) packed without
            sparse prediction; 0 on ignored rows), no gradient; set by the `chunked` kernel, else None.
        predictions: int64 argmax per scored row (same rows as token_loss); `chunked` only, else None.
    """

    def __init__(self, loss: torch.Tensor | None, logits: torch.Tensor | Callable[[], torch.Tensor],
                 labels: torch.Tensor | None = None, token_loss: torch.Tensor | None = None,
                 predictions: torch.Tensor | None = None):
        self.loss = loss
        self._logits = logits
        self.labels = labels
        self.token_loss = token_loss
        self.predictions = predictions

    @property
    def logits(self) -> torch.Tensor:
        if callable(self._logits):  # the chunked kernel's logits, made on demand
            self._logits = self._logits()
        return self._logits

    @logits.setter
    def logits(self, value: torch.Tensor) -> None:
        self._logits = value

    def __repr__(self) -> str:
        shape = "(on demand)" if callable(self._logits) else tuple(self._logits.shape)
        return f"MaskedLMOutput(loss={self.loss}, logits={shape})"


class FlexBertForMaskedLM(nn.Module):
    """Masked language model; weight names match HF ModernBertForMaskedLM (model., head., decoder.)."""

    init_roles: ClassVar[dict[str, str]] = {"decoder": "out"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.config = config
        self.model = FlexBertModel(config, init=False)
        self.head = FlexBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        if config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight
        self._loss_kernels: dict[tuple[str, int | None, torch.dtype], MLMLossKernel] = {}
        init_weights(self, config)

    def mlm_loss_kernel(self, device: torch.device, dtype: torch.dtype) -> MLMLossKernel:
        """Return the MLM loss kernel for `device`/`dtype`, resolving model.mlm_loss on first use there."""
        device = torch.device(device)
        key = (device.type, device.index, dtype)
        kernel = self._loss_kernels.get(key)
        if kernel is None:
            kernel = resolve_mlm_loss(self.config.mlm_loss, device, dtype)
            if self.config.mlm_loss != "auto":  # resolve_mlm_loss logs the auto choice itself
                log.info("mlm loss: %s on %s %s", kernel.name, device, dtype)
            self._loss_kernels[key] = kernel
        return kernel

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, position_ids: torch.Tensor | None = None) -> MaskedLMOutput:
        """Predict tokens; with labels and config.sparse_prediction the head runs only on labelled rows.

        Args:
            input_ids: (B, S) padded or (T,) packed.
            attention_mask: (B, S), padded input only.
            labels: same shape as input_ids; -100 where no loss applies (padding is never scored).
            cu_seqlens: (D+1,) int32 document boundaries, packed input only.
            max_seqlen: longest document (packed input).
            position_ids: same shape as input_ids; default restarts at 0 per document.
        Returns:
            MaskedLMOutput; logits (M, V) in sparse mode, else (B, S, V) padded (zeros at padding,
            where the head never runs) or (T, V) packed.
        """
        packed = pack_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        h_TD = self.model.encode(packed)
        if labels is None:
            return MaskedLMOutput(loss=None, logits=repad(self.decoder(self.head(h_TD)), packed))
        labels_T = packed.flatten_like_input(labels)
        sparse = self.config.sparse_prediction
        if sparse:
            keep_T = labels_T != IGNORE_INDEX
            labels_R, h_RD = labels_T[keep_T], h_TD[keep_T]
        else:
            labels_R, h_RD = labels_T, h_TD
        head_RD = self.head(h_RD)
        # Without gradients the logits are what callers want (eval metrics): the dense kernel makes them.
        kernel = (self.mlm_loss_kernel(head_RD.device, compute_dtype(head_RD)) if torch.is_grad_enabled()
                  else DenseMLMLoss())
        result = kernel(head_RD, self.decoder, labels_R)
        logits = result.logits
        if logits is None:
            head_detached = head_RD.detach()
            logits = lazy(lambda: self.decoder(head_detached))
        if not sparse:
            logits = repad(logits, packed) if not callable(logits) else lazy(lambda f=logits: repad(f(), packed))
        return MaskedLMOutput(loss=result.loss, logits=logits, labels=labels_R if sparse else labels,
                              token_loss=result.loss_M, predictions=result.predictions_M)
