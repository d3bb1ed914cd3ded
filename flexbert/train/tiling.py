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
* Structured weights are reshaped first so that each logical axis is tiled on its own:
  - ``attn.Wqkv`` (3*H*d, D) -> (3, H, d, D): q, k and v are tiled separately; heads are
    tiled as whole heads (H axis) and within a head (d axis), so each large head is a
    contiguous copy of a small head (when d is unchanged).
  - ``attn.Wo`` (D, H*d) -> (D, H, d).
  - ``mlp.Wi`` of a GLU (2*I, D) -> (2, I, D): the input half and the gate half separately.
  - ``mlp.Wo`` (D, I); ``head.dense`` (D, D); norms and biases (D,) or (I,): plain tiling.
  - token embeddings / an untied decoder (V, D): only D is tiled; the vocabulary and
    ``decoder.bias`` must be the same size on both sides.
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


def _get(cfg: Any, key: str) -> Any:
    return cfg[key] if isinstance(cfg, Mapping) else getattr(cfg, key)


def _dims(cfg: Any) -> dict[str, int]:
    d = {k: int(_get(cfg, k)) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                        "num_hidden_layers", "num_attention_heads")}
    d["head_dim"] = d["hidden_size"] // d["num_attention_heads"]
    return d


def _tile_param(name: str, t: torch.Tensor, s: dict[str, int], b: dict[str, int], glu: bool) -> torch.Tensor:
    D, I, H, hd, V = b["hidden_size"], b["intermediate_size"], b["num_attention_heads"], b["head_dim"], b["vocab_size"]
    sD, sI, sH, shd = s["hidden_size"], s["intermediate_size"], s["num_attention_heads"], s["head_dim"]
    leaf = name.split(".", 3)[-1] if name.startswith("model.layers.") else name
    if leaf.endswith("attn.Wqkv.weight"):
        return center_tile(t.reshape(3, sH, shd, sD), (3, H, hd, D)).reshape(3 * H * hd, D)
    if leaf.endswith("attn.Wqkv.bias"):
        return center_tile(t.reshape(3, sH, shd), (3, H, hd)).reshape(3 * H * hd)
    if leaf.endswith("attn.Wo.weight"):
        return center_tile(t.reshape(sD, sH, shd), (D, H, hd)).reshape(D, H * hd)
    if leaf.endswith("mlp.Wi.weight"):
        if glu:  # rows are [input half; gate half]: tile each half on its own
            return center_tile(t.reshape(2, sI, sD), (2, I, D)).reshape(2 * I, D)
        return center_tile(t, (I, D))
    if leaf.endswith("mlp.Wi.bias"):
        return center_tile(t.reshape(2, sI), (2, I)).reshape(2 * I) if glu else center_tile(t, (I,))
    if leaf.endswith("mlp.Wo.weight"):
        return center_tile(t, (D, I))
    if name in ("model.embeddings.tok_embeddings.weight", "decoder.weight"):
        if t.shape[0] != V:
            raise ValueError(f"{name}: vocabulary {t.shape[0]} vs {V}; tiling needs the same vocab_size on both sides")
        return center_tile(t, (V, D))
    if name == "decoder.bias":
        if t.shape[0] != V:
            raise ValueError(f"decoder.bias: vocabulary {t.shape[0]} vs {V}; tiling needs the same vocab_size")
        return t.clone()
    if name == "head.dense.weight":
        return center_tile(t, (D, D))
    if t.dim() == 1 and t.shape[0] == sD:  # norms (weight/bias), attn.Wo / mlp.Wo / head biases
        return center_tile(t, (D,))
    raise ValueError(f"tile_weights does not know how to tile {name} {tuple(t.shape)}")


def tile_weights(small_state_dict: Mapping[str, torch.Tensor], small_cfg: Any, large_cfg: Any,
                 large_names: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Tile a small FlexBertForMaskedLM state dict into the large config's sizes.

    Args:
        small_state_dict: FlexBERT / HF ModernBERT names (a tied ``decoder.weight`` may be absent).
        small_cfg, large_cfg: FlexBertConfig (or mappings) with vocab_size, hidden_size,
            intermediate_size, num_hidden_layers, num_attention_heads (and `mlp`).
        large_names: optional name -> shape of the large model; when given, layers 1.. of the
            large model that need an ``attn_norm`` absent from their source layer get ones, and
            every produced shape is checked against it.

    Returns:
        name -> tensor for the large model (same dtype as the source).
    """
    s, b = _dims(small_cfg), _dims(large_cfg)
    if s["vocab_size"] != b["vocab_size"]:
        raise ValueError(f"vocab_size differs ({s['vocab_size']} vs {b['vocab_size']}); tile models that share a tokenizer")
    glu = str(_get(large_cfg, "mlp") if _has(large_cfg, "mlp") else "glu") == "glu"
    n_small, n_large = s["num_hidden_layers"], b["num_hidden_layers"]
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in small_state_dict.items():
        m = _LAYER.match(name)
        if m:
            per_layer.setdefault(int(m.group(1)), {})[m.group(2)] = t
        else:
            out[name] = _tile_param(name, t, s, b, glu)
    if sorted(per_layer) != list(range(n_small)):
        raise ValueError(f"small state dict has layers {sorted(per_layer)}, config says {n_small}")
    # keys a layer > 0 has (layer 0 lacks attn_norm)
    full_keys = set().union(*(per_layer[i].keys() for i in range(n_small)))
    for i in range(n_large):
        src = per_layer[i % n_small]
        for leaf in sorted(full_keys if i > 0 else src.keys()):
            name = f"model.layers.{i}.{leaf}"
            if leaf in src:
                out[name] = _tile_param(f"model.layers.{i % n_small}.{leaf}", src[leaf], s, b, glu)
            elif leaf.startswith("attn_norm."):  # source is layer 0 (identity attn_norm)
                like = next(iter(src.values()))
                fill = 1.0 if leaf.endswith("weight") else 0.0
                out[name] = torch.full((b["hidden_size"],), fill, dtype=like.dtype)
            else:
                raise ValueError(f"small layer {i % n_small} has no {leaf}")
    if large_names is not None:
        bad = [f"{k}: tiled {tuple(out[k].shape)} vs model {tuple(v)}" for k, v in large_names.items()
               if k in out and tuple(out[k].shape) != tuple(v)]
        if bad:
            raise ValueError("tiled shapes do not match the large model: " + "; ".join(bad[:10]))
    return out


def _has(cfg: Any, key: str) -> bool:
    return key in cfg if isinstance(cfg, Mapping) else hasattr(cfg, key)
