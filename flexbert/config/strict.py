"""Strict decoding of YAML / dict data into typed dataclasses.

Every FlexBERT config (model, data, run) is a dataclass. Defaults live only in
the dataclasses; this module turns plain data (from OmegaConf, YAML or a dict)
into instances and rejects anything it does not understand with a message that
names the key path, the file, and the closest valid key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from flexbert.errors import ConfigError, closest  # defined at the bottom layer; re-exported here

__all__ = ["ConfigError", "decode", "closest", "to_plain", "unknown_key"]


def _where(path: str, source: str | None) -> str:
    loc = f"'{path}'" if path else "the top level"
    return f"{loc} in {source}" if source else loc


def unknown_key(key_path: str, valid: typing.Iterable[str], source: str | None) -> ConfigError:
    """The error for a key that is not one of `valid`: where it is, and the closest valid key."""
    valid = list(valid)
    guess = closest(key_path.rsplit(".", 1)[-1], valid)
    hint = f"; did you mean '{guess}'?" if guess else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown key {_where(key_path, source)}{hint}")


def to_plain(data: Any) -> Any:
    """OmegaConf nodes -> plain Python containers (interpolations resolved)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf  # import cost: only when a config is read

    if isinstance(data, (DictConfig, ListConfig)):
        return OmegaConf.to_container(data, resolve=True)
    return data


def decode(cls: type, data: Any, *, source: str | None = None, path: str = "") -> Any:
    """Build dataclass `cls` from `data`, checking keys and types recursively.

    Args:
        cls: the dataclass type to build.
        data: a mapping (dict or OmegaConf DictConfig), or an instance of `cls`.
        source: the file the data came from, used in error messages.
        path: dotted key path of `data` inside the file, used in error messages.
    """
    data = to_plain(data)
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(path, source)} must be a mapping of keys for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise unknown_key(key_path, fields, source)
        kwargs[key] = _decode_value(hints[key], value, source, key_path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # __post_init__ checks raise ValueError with what to change
        raise ConfigError(f"{_where(path, source)}: {e}") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _decode_value(tp: Any, value: Any, source: str | None, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode_value(arg, value, source, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{_where(path, source)}: {value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        guess = closest(str(value), [str(a) for a in args])
        hint = f"; did you mean '{guess}'?" if guess else ""
        raise ConfigError(f"{_where(path, source)} is {value!r}; choices: {', '.join(map(str, args))}{hint}")
    if dataclasses.is_dataclass(tp):
        return decode(tp, value, source=source, path=path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            hint = ""
            if isinstance(value, Mapping) and value and all(str(k).isdigit() for k in value):
                hint = (f"; a dotted override such as '{path}.0.KEY=VALUE' cannot create list items: "
                        f"give the whole list ('{path}=[{{KEY: VALUE}}]') or a key outside the list")
            raise ConfigError(f"{_where(path, source)} must be a list, got {value!r}{hint}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{_where(path, source)} must have {len(args)} items, got {len(value)}")
            return tuple(_decode_value(a, v, source, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_decode_value(item, v, source, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path, source)} must be a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _decode_value(vt, v, source, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(path, source)} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e5 in YAML is a float
        raise ConfigError(f"{_where(path, source)} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{_where(path, source)} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{_where(path, source)} must be a string, got {value!r}")
    return value
