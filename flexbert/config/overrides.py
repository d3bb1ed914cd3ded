"""Command-line overrides that index an existing list: `data.streams.0.local=/data/a`.

OmegaConf's dotlist turns `streams.0.local=x` into a mapping `{"0": {"local": x}}`, which then
replaces the list. Here such an override is applied to the list item itself, when the run file
(with the other overrides) already has a list at that place; an index past its end is an error
that names the override and the list's length. Where there is no list, the override is left to
the dotlist (a list cannot be created item by item; the decoder's error says to give it whole).
"""
from __future__ import annotations

from typing import Any, Iterable

from omegaconf import OmegaConf

from flexbert.config.strict import ConfigError

__all__ = ["split_list_item_overrides", "apply_list_item_overrides"]


def _key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def _list_prefix(key: str, data: Any, item: str) -> bool:
    """True when `key` indexes a list of `data` (checking the index); False when it does not."""
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(data, list):
            if not part.isdigit():
                return False
            prefix, size = ".".join(parts[:depth]), len(data)
            if int(part) >= size:
                have = f"{size} item(s) (indices 0..{size - 1})" if size else "no items"
                raise ConfigError(f"command-line override {item!r}: {prefix} has {have}; index one of them, or give "
                                  f"the whole list ('{prefix}=[{{KEY: VALUE}}, ...]')")
            return True
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return False


def split_list_item_overrides(items: Iterable[str], base: Any, parse) -> tuple[list[str], list[str]]:
    """(plain overrides, overrides indexing a list of `base` merged with the plain ones).

    `parse` turns plain `key=value` items into an OmegaConf node (the loader's parse_overrides).
    """
    items = list(items)
    numeric = [i for i in items if "=" in i and any(p.isdigit() for p in _key(i).split("."))]
    others = [i for i in items if i not in numeric]
    probe = OmegaConf.to_container(OmegaConf.merge(base, parse(others)), resolve=False)
    indexed = [i for i in numeric if _list_prefix(_key(i), probe, i)]
    return [i for i in items if i not in indexed], indexed


def apply_list_item_overrides(node: Any, items: Iterable[str], parse) -> None:
    """Set each `a.list.N.key=value` of `items` inside the list item of `node` (in order)."""
    for item in items:
        value = OmegaConf.to_container(parse([f"value={item.split('=', 1)[1]}"]), resolve=False)["value"]
        OmegaConf.update(node, _key(item), value, merge=True)
