"""Initialise a larger FlexBERT/ModernBERT model from a smaller one by weight tiling.

ModernBERT-large was initialised from ModernBERT-base this way (Warner et al. 2024, following
the Phi-2 width expansion): every larger tensor is filled by repeating the smaller one along
each grown dimension, with the repetition *centred* so the original tensor sits in the middle.

What this module does, precisely
--------------------------------
* One dimension, source size ``n`` -> target size ``N >= n``: offset ``o = (N - n) // 2``;
  target index ``j`` takes source index ``(j - o) mod n``. So ``target[o:o+n] == source``
  exactly, and the borders wrap around (``target[o-1] == source[n-1]``, ``target[o+n] ==
  source[0]``). A tensor is tiled along every dimension at once (the "center block" of a
  matrix is the source matrix). ``N < n`` is refused: tiling only grows.
* Structured weights are reshaped first so that each logical axis is tiled on its own. The block
  that owns a weight declares its axes (a ``tile_axes`` class attribute, leaf name -> axes, each
  a size name or a fixed int); nothing here knows the blocks:
  - attention ``Wqkv`` (3, heads, head_dim, hidden): q, k and v are tiled separately; heads are
    tiled as whole heads and within a head, so each large head is a contiguous copy of a small
    head (when head_dim is unchanged); ``Wo`` (hidden, heads, head_dim).
  - a GLU's ``Wi`` (2, intermediate, hidden): the input half and the gate half separately.
  - every other tensor (plain MLP weights, ``head.dense``, norms, biases): plain tiling to the
    large model's shape (the model built on the meta device).
  - token embeddings / an untied decoder (V, D): only D grows; the vocabulary and
    ``decoder.bias`` must be the same size on both sides (checked up front).
* Depth: large layer ``i`` is copied from small layer ``i % n_small`` (the stack of small
  layers repeated, then cut at ``n_large``). The weights of a layer do not depend on it
  being global or local (window and theta are config, not weights), so the mapping needs
  no alignment with ``global_attn_every_n_layers``.
* Layer 0 has no ``attn_norm`` (identity, as in HF ModernBERT). A large layer ``i > 0`` whose
  source is small layer 0 gets an ``attn_norm`` of ones (and zero bias): LayerNorm's
  default initialisation, i.e. normalisation without a learned rescale.
* Values are copied unscaled (no 1/k correction for duplicated input features): the tiled
  model is a warm start to be trained, not a function-preserving expansion. RoPE buffers
  are not part of the state dict: they come from the large config.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from flexbert.model.build import meta_model

__all__ = ["tile_weights", "center_tile", "source_index"]

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def source_index(n_small: int, n_large: int) -> torch.Tensor:
    """Target index j -> source index (j - (N - n) // 2) mod n along one dimension."""
    if n_large < n_small:
        raise ValueError(f"cannot tile a dimension of size {n_small} down to {n_large}; tiling only grows")
    offset = (n_large - n_small) // 2
    return (torch.arange(n_large) - offset) % n_small


def center_tile(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Tile `t` to `shape` along every dimension, the original in the center block."""
    if t.dim() != len(shape):
        raise ValueError(f"cannot tile a {t.dim()}-d tensor {tuple(t.shape)} to {tuple(shape)}")
    out = t
    for dim, (n, big) in enumerate(zip(t.shape, shape)):
        if n != big:
            out = out.index_select(dim, source_index(n, big))
    return out.clone()


def _sizes(cfg: Any) -> dict[str, int]:
    """The size names a block's ``tile_axes`` may use."""
    return {"hidden": cfg.hidden_size, "intermediate": cfg.intermediate_size, "heads": cfg.num_attention_heads,
            "head_dim": cfg.head_dim, "vocab": cfg.vocab_size}


def _declared_axes(model: Any) -> dict[str, tuple[str | int, ...]]:
    """Full parameter name -> logical axes, from every block's ``tile_axes``."""
    axes = {}
    for mod_name, module in model.named_modules():
        for leaf, spec in getattr(module, "tile_axes", {}).items():
            axes[f"{mod_name}.{leaf}" if mod_name else leaf] = spec
    return axes


def _tile_param(name: str, t: torch.Tensor, large_shape: tuple[int, ...], axes: tuple[str | int, ...] | None,
                small: dict[str, int], large: dict[str, int]) -> torch.Tensor:
    if axes is None:
        return center_tile(t, large_shape)
    src = tuple(a if isinstance(a, int) else small[a] for a in axes)
    dst = tuple(a if isinstance(a, int) else large[a] for a in axes)
    if t.numel() != _prod(src):
        raise ValueError(f"{name} {tuple(t.shape)} does not hold its declared axes {axes} = {src}")
    return center_tile(t.reshape(src), dst).reshape(large_shape)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def tile_weights(small_state_dict: Mapping[str, torch.Tensor], small_cfg: Any, large_cfg: Any,
                 large_names: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Tile a small FlexBertForMaskedLM state dict into the large config's sizes.

    Args:
        small_state_dict: FlexBERT / HF ModernBERT names (a tied ``decoder.weight`` may be absent).
        small_cfg, large_cfg: FlexBertConfig of each side (the large model's shapes and its blocks'
            ``tile_axes`` come from building it on the meta device).
        large_names: optional name -> shape of the model the result is loaded into; every
            produced shape is checked against it.

    Returns:
        name -> tensor for the large model (same dtype as the source).
    """
    if small_cfg.vocab_size != large_cfg.vocab_size:
        raise ValueError(f"vocab_size differs ({small_cfg.vocab_size} vs {large_cfg.vocab_size}); tile models that "
                         "share a tokenizer")
    large_model = meta_model(large_cfg)
    shapes = {k: tuple(v.shape) for k, v in large_model.state_dict().items()}
    axes = _declared_axes(large_model)
    s, b = _sizes(small_cfg), _sizes(large_cfg)
    n_small, n_large = small_cfg.num_hidden_layers, large_cfg.num_hidden_layers

    def tile(name: str, large_name: str, t: torch.Tensor) -> torch.Tensor:
        if large_name not in shapes:
            raise ValueError(f"tile_weights: the large model has no {large_name} (from {name} {tuple(t.shape)})")
        return _tile_param(name, t, shapes[large_name], axes.get(large_name), s, b)

    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in small_state_dict.items():
        m = _LAYER.match(name)
        if m:
            per_layer.setdefault(int(m.group(1)), {})[m.group(2)] = t
        else:
            out[name] = tile(name, name, t)
    if sorted(per_layer) != list(range(n_small)):
        raise ValueError(f"small state dict has layers {sorted(per_layer)}, config says {n_small}")
    # keys a layer > 0 has (layer 0 lacks attn_norm)
    full_keys = set().union(*(per_layer[i].keys() for i in range(n_small)))
    for i in range(n_large):
        src = per_layer[i % n_small]
        for leaf in sorted(full_keys if i > 0 else src.keys()):
            name = f"model.layers.{i}.{leaf}"
            if leaf in src:
                out[name] = tile(f"model.layers.{i % n_small}.{leaf}", name, src[leaf])
            elif leaf.startswith("attn_norm."):  # source is layer 0 (identity attn_norm)
                like = next(iter(src.values()))
                fill = 1.0 if leaf.endswith("weight") else 0.0
                out[name] = torch.full(shapes[name], fill, dtype=like.dtype)
            else:
                raise ValueError(f"small layer {i % n_small} has no {leaf}")
    if large_names is not None:
        bad = [f"{k}: tiled {tuple(out[k].shape)} vs model {tuple(v)}" for k, v in large_names.items()
               if k in out and tuple(out[k].shape) != tuple(v)]
        if bad:
            raise ValueError("tiled shapes do not match the large model: " + "; ".join(bad[:10]))
    return out


