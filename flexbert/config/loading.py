"""Load a run: dataclass defaults <- RUN.yaml <- command-line `key=value` overrides.

Every layer is checked for unknown keys on its own, so an error says where the bad key
was written: ``unknown key 'optimizer.lrr' in yamls/demo.yaml; did you mean 'lr'?`` or
``... in command line; did you mean ...``. Then the merged data is decoded strictly into
`RunConfig`, the model section is resolved (preset + overrides) into a `FlexBertConfig`,
and cross-section checks run. Nothing heavy (no data, no model) is touched here.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Iterable, Mapping

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flexbert.config.overrides import apply_list_item_overrides, split_list_item_overrides
from flexbert.config.strict import ConfigError, decode, unknown_key
from flexbert.config.yaml_file import read_yaml_mapping

__all__ = ["LoadedRun", "load_run_config", "parse_overrides", "check_keys", "resolved_dict"]

COMMAND_LINE = "command line"


@dataclasses.dataclass
class LoadedRun:
    """A validated run: the typed config, the model config, and where it came from."""

    cfg: Any  # RunConfig
    model_cfg: Any  # FlexBertConfig
    source: str

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config as plain data (what config.yaml beside checkpoints holds)."""
        return resolved_dict(self.cfg, self.model_cfg)

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.create(self.resolved()))


def _unwrap_dataclass(tp: Any) -> Any:
    """The dataclass inside `tp` (also inside Optional[...]), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def check_keys(cls: type, data: Any, source: str, path: str = "") -> None:
    """Reject keys of `data` that `cls` (recursively) does not have; values are checked later.

    The `model` section of a run is checked against `FlexBertConfig` plus `preset`.
    """
    if not isinstance(data, Mapping):
        return
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise unknown_key(key_path, fields, source)
        if not path and key == "model":
            _check_model_keys(value, source)
            continue
        sub = _unwrap_dataclass(hints[key])
        if sub is not None:
            check_keys(sub, value, source, key_path)


def _check_model_keys(data: Any, source: str) -> None:
    from flexbert.config.model import FlexBertConfig

    if not isinstance(data, Mapping):
        return
    valid = {f.name for f in dataclasses.fields(FlexBertConfig) if f.init} | {"preset"}
    for key in data:
        if key not in valid:
            raise unknown_key(f"model.{key}", valid, source)


def parse_overrides(overrides: Iterable[str]) -> Any:
    """`["optimizer.lr=1e-3", ...]` -> an OmegaConf node; a malformed item is named."""
    items = list(overrides)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command-line override {item!r} is not of the form dotted.key=value (e.g. optimizer.lr=1e-3)")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse command-line overrides {items}: {e}") from None


def load_run_config(path: str, overrides: Iterable[str] = ()) -> LoadedRun:
    """Load, merge and validate a run; raises ConfigError naming the key, file and fix."""
    from flexbert.config.model import load_model_config
    from flexbert.config.run import RunConfig

    file_node = read_yaml_mapping(path, "run config")
    check_keys(RunConfig, OmegaConf.to_container(file_node, resolve=False), path)
    plain, list_items = split_list_item_overrides(overrides, file_node, parse_overrides)  # data.streams.0.local=...
    cli_node = parse_overrides(plain)
    check_keys(RunConfig, OmegaConf.to_container(cli_node, resolve=False), COMMAND_LINE)
    merged = OmegaConf.merge(file_node, cli_node)
    apply_list_item_overrides(merged, list_items, parse_overrides)  # their keys are checked by the decoder
    try:
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:  # a broken ${interpolation}
        raise ConfigError(f"cannot resolve {path}: {e}") from None
    source = f"{path} (with command-line overrides)" if len(cli_node) or list_items else path

    model_section = data.pop("model", None) or {}
    cfg = decode(RunConfig, data, source=source)
    try:
        init = cfg.init_from
        if init is not None and init.hf and not init.tile and os.path.isfile(os.path.join(init.hf, "config.json")):
            # continued pretraining: the model config comes from the HF folder's config.json
            # (a folder not there yet is refused by the trainer's preflight, like init_from.path)
            from flexbert.train.hf_init import hf_model_config

            model_cfg = hf_model_config(init.hf, model_section, cfg.tokenizer)
        else:
            model_cfg = load_model_config(model_section)
    except ConfigError as e:
        raise ConfigError(f"model section of {source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model section of {source}: {e}") from None
    cfg.model = dict(model_section)
    check_run_against_model(cfg, model_cfg, source)
    return LoadedRun(cfg=cfg, model_cfg=model_cfg, source=source)


def check_run_against_model(cfg: Any, model_cfg: Any, source: str) -> None:
    """Cross-section checks between the data/batch settings and the model."""
    limit = model_cfg.max_position_embeddings
    for key in ("data", "eval_data"):
        data = getattr(cfg, key)
        if data is not None and data.max_seq_len > limit:
            raise ConfigError(
                f"{key}.max_seq_len ({data.max_seq_len}) in {source} is longer than model.max_position_embeddings "
                f"({limit}); raise model.max_position_embeddings or lower {key}.max_seq_len"
            )


def resolved_dict(cfg: Any, model_cfg: Any) -> dict[str, Any]:
    """Run config as plain data with the model section fully expanded (no preset)."""
    out = dataclasses.asdict(cfg)
    out["model"] = {k: v for k, v in dataclasses.asdict(model_cfg).items()}
    return _plain(out)


def _plain(x: Any) -> Any:
    """Tuples -> lists so OmegaConf/YAML write plain lists."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
