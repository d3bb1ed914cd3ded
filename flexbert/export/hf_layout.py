"""Global/local layer pattern and RoPE thetas of an HF ModernBERT config.json, in both generations.

transformers 4.x (4.48-4.57) reads `global_attn_every_n_layers`, `global_rope_theta` (alias
`rope_theta`) and `local_rope_theta` (null: the global theta). transformers 5.x reads `layer_types`
(one "full_attention" / "sliding_attention" per layer; `global_attn_every_n_layers` only when
`layer_types` is absent) and `rope_parameters` (per layer type; `global_rope_theta` /
`local_rope_theta` only fill a missing `rope_theta`; the `rope_theta` alias is ignored), and its
`save_pretrained` drops the v4 theta keys.

FlexBERT has one rule: layer i is global iff i % global_attn_every_n_layers == 0, each layer type
with its own plain-RoPE theta. Export writes both generations' keys, consistent with each other,
so 4.x and 5.x load the same model. Import reads either, refuses what the rule cannot express,
and refuses a file whose two generations describe different models (4.x and 5.x would compute
different things from it, so there is no right answer to pick).
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["LAYOUT_KEYS", "layer_pattern", "layout_to_hf", "layout_from_hf"]

FULL, SLIDING = "full_attention", "sliding_attention"
V4_KEYS = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta", "rope_theta")
V5_KEYS = ("layer_types", "rope_parameters")
LAYOUT_KEYS = V4_KEYS + V5_KEYS
# HF ModernBertConfig's defaults (identical in 4.57 and 5.24) for a config.json that omits them.
_DEFAULT_PERIOD, _DEFAULT_THETA = 3, {FULL: 160000.0, SLIDING: 10000.0}
_RULE = "FlexBERT's layer i is global (full_attention) iff i % global_attn_every_n_layers == 0"


def layer_pattern(period: int, num_layers: int) -> list[str]:
    """HF `layer_types` of FlexBERT's rule: full_attention iff i % period == 0."""
    return [FULL if i % period == 0 else SLIDING for i in range(num_layers)]


def layout_to_hf(period: int, num_layers: int, global_theta: float, local_theta: float) -> dict[str, Any]:
    """The layer-pattern and RoPE keys of both generations for one FlexBERT layout."""
    return {
        "global_attn_every_n_layers": period,
        "global_rope_theta": float(global_theta),
        "local_rope_theta": float(local_theta),
        "layer_types": layer_pattern(period, num_layers),
        "rope_parameters": {FULL: {"rope_type": "default", "rope_theta": float(global_theta)},
                            SLIDING: {"rope_type": "default", "rope_theta": float(local_theta)}},
    }


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _v5_thetas(rp: Any, problems: list[str]) -> dict[str, float]:
    """Explicit per-layer-type thetas in `rope_parameters` (types without one are left out)."""
    if rp is None:
        return {}
    if not isinstance(rp, Mapping):
        problems.append(f"rope_parameters is {rp!r}: expected {{'{FULL}': {{...}}, '{SLIDING}': {{...}}}}")
        return {}
    out = {}
    extra = sorted(set(rp) - {FULL, SLIDING})
    if extra:
        problems.append(f"rope_parameters has keys {extra}: FlexBERT reads per-layer-type entries "
                        f"'{FULL}' and '{SLIDING}' only")
    for kind in (FULL, SLIDING):
        sub = rp.get(kind)
        if sub is None:
            continue
        if not isinstance(sub, Mapping):
            problems.append(f"rope_parameters.{kind} is {sub!r}: expected {{'rope_type': 'default', 'rope_theta': ...}}")
            continue
        rope_type = sub.get("rope_type", sub.get("type", "default"))
        if rope_type != "default":
            problems.append(f"rope_parameters.{kind}.rope_type is {rope_type!r}: FlexBERT implements plain RoPE "
                            f"only (rope_type 'default')")
        unknown = sorted(set(sub) - {"rope_type", "type", "rope_theta"})
        if unknown:
            problems.append(f"rope_parameters.{kind} has keys {unknown}: this importer does not know what they change")
        if "rope_theta" in sub:
            if _is_number(sub["rope_theta"]) and sub["rope_theta"] > 0:
                out[kind] = float(sub["rope_theta"])
            else:
                problems.append(f"rope_parameters.{kind}.rope_theta is {sub['rope_theta']!r}: needs a number > 0")
    return out


def _v4_thetas(hf: Mapping[str, Any], problems: list[str]) -> dict[str, tuple[float, str]]:
    """Explicit per-layer-type (theta, where it comes from) in the transformers 4.x keys."""
    g, alias, local = hf.get("global_rope_theta"), hf.get("rope_theta"), hf.get("local_rope_theta")
    for key, value in (("global_rope_theta", g), ("rope_theta", alias), ("local_rope_theta", local)):
        if value is not None and not (_is_number(value) and value > 0):
            problems.append(f"{key} is {value!r}: needs a number > 0")
    if _is_number(g) and _is_number(alias) and float(g) != float(alias):
        problems.append(f"rope_theta {alias} and global_rope_theta {g} disagree (rope_theta is transformers "
                        f"4.x's alias of global_rope_theta); remove one")
    key, g = ("global_rope_theta", g) if g is not None else ("rope_theta", alias)
    out = {FULL: (float(g), f"{key} {float(g)}")} if _is_number(g) else {}
    if "local_rope_theta" in hf and local is not None:
        if _is_number(local):
            out[SLIDING] = (float(local), f"local_rope_theta {float(local)}")
    elif "local_rope_theta" in hf:  # transformers 4.x: null means local layers use the global theta
        g = out.get(FULL, (_DEFAULT_THETA[FULL],))[0]
        out[SLIDING] = (g, f"local_rope_theta null (the global theta {g})")
    return out


def _period(hf: Mapping[str, Any], n: int, problems: list[str]) -> int:
    """FlexBERT's global_attn_every_n_layers from `layer_types` and/or `global_attn_every_n_layers`."""
    p4, types = hf.get("global_attn_every_n_layers"), hf.get("layer_types")
    if p4 is not None and (not isinstance(p4, int) or isinstance(p4, bool) or p4 < 1):
        problems.append(f"global_attn_every_n_layers is {p4!r}: needs an integer >= 1")
        p4 = None
    if types is None:
        return p4 if p4 is not None else _DEFAULT_PERIOD
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        problems.append(f"layer_types is {types!r}: expected a list of '{FULL}' / '{SLIDING}'")
        return _DEFAULT_PERIOD
    bad = [f"layer_types[{i}] is {t!r}" for i, t in enumerate(types) if t not in (FULL, SLIDING)]
    if bad:
        problems.append(f"{', '.join(bad)}: FlexBERT knows '{FULL}' and '{SLIDING}' only")
    if len(types) != n:
        problems.append(f"layer_types has {len(types)} entries but num_hidden_layers is {n}")
    if bad or len(types) != n:
        return p4 or _DEFAULT_PERIOD
    fits = [p for p in range(1, max(n, 1) + 1) if layer_pattern(p, n) == types]
    if not fits:
        problems.append(f"layer_types {types} cannot be expressed: {_RULE} (layer 0 full, then one full "
                        f"layer every n layers)")
    if p4 is not None and layer_pattern(p4, n) != types:
        problems.append(f"global_attn_every_n_layers {p4} (read by transformers 4.x) gives layer_types "
                        f"{layer_pattern(p4, n)} but layer_types (read by transformers 5.x) is {types}; "
                        f"make them agree or remove one")
    # keep a consistent explicit period (a period > n gives the same pattern as n); else the smallest
    return p4 if p4 is not None else (fits[0] if fits else _DEFAULT_PERIOD)


def layout_from_hf(hf: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """FlexBERT's (global_attn_every_n_layers, global_rope_theta, local_rope_theta) from either generation.

    Returns:
        (those three fields, every problem found); precedence is transformers 5.x's (`layer_types`
        and `rope_parameters` first), and a value given in both generations must agree.
    """
    problems: list[str] = []
    n = hf.get("num_hidden_layers", 22)  # HF's default
    v5 = _v5_thetas(hf.get("rope_parameters"), problems)
    v4 = _v4_thetas(hf, problems)
    thetas = {}
    for kind in (FULL, SLIDING):
        if kind in v4 and kind in v5 and v4[kind][0] != v5[kind]:
            problems.append(f"{v4[kind][1]} (read by transformers 4.x) and rope_parameters.{kind}.rope_theta "
                            f"{v5[kind]} (read by transformers 5.x) disagree; make them equal or remove one")
        thetas[kind] = v5.get(kind, v4.get(kind, (_DEFAULT_THETA[kind],))[0])
    fields = {"global_attn_every_n_layers": _period(hf, n, problems),
              "global_rope_theta": thetas[FULL], "local_rope_theta": thetas[SLIDING]}
    return fields, problems
