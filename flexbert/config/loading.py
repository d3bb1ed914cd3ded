"""Load a run: dataclass defaults <- RUN.yaml <- command-line `key=value` overrides.

Every layer is checked for unknown keys on its own, so an error says where the bad key
was written: ``unknown key 'optimizer.lrr' in yamls/demo.yaml; did you mean 'lr'?`` or
``... in command line; did you mean ...``. Then the merged data is decoded strictly into
`RunConfig`, the model section is resolved (preset + overrides) into a `FlexBertConfig`,
and cross-section checks run. Nothing heavy (no data, no model) is touched here.

A run continuing from a Hugging Face folder (`init_from: {hf: DIR}`) takes its model config
from that folder's config.json, which the export layer translates; config sits below export,
so such a run is loaded by `flexbert.train.loading.load_run` (train.py, the sweeps and the
quickstart load every run that way). `read_run` gives the run sections alone, for callers that
need no model config.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flexbert.config.model import FlexBertConfig, load_model_config
from flexbert.config.overrides import apply_list_item_overrides, split_list_item_overrides
from flexbert.config.run import RunConfig
from flexbert.config.strict import decode, unknown_key
from flexbert.config.yaml_file import read_yaml_mapping
from flexbert.errors import ConfigError

__all__ = ["LoadedRun", "RunSections", "load_run_config", "read_run", "assemble_run", "hf_init_folder",
           "parse_overrides", "check_keys", "resolved_dict", "MODEL_KEY"]

COMMAND_LINE = "command line"

#: The run file's model section: checked against FlexBertConfig (+ `preset`), resolved into
#: `LoadedRun.model_cfg`; RunConfig itself has no such field, so the section has one home.
MODEL_KEY = "model"


@dataclasses.dataclass
class LoadedRun:
    """A validated run: the typed config, the model config, and where it came from."""

    cfg: RunConfig
    model_cfg: FlexBertConfig
    source: str

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config as plain data (what config.yaml beside checkpoints holds)."""
        return resolved_dict(self.cfg, self.model_cfg)

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.create(self.resolved()))


@dataclasses.dataclass
class RunSections:
    """A run read and checked, before its model config is resolved."""

    cfg: RunConfig
    model_section: dict[str, Any]  # as written: may hold `preset:`
    source: str  # the file, "(with command-line overrides)" when there were any


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
    top_of_run = not path and cls is RunConfig
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if top_of_run and key == MODEL_KEY:
            _check_model_keys(value, source)
            continue
        if key not in fields:
            raise unknown_key(key_path, [*fields, MODEL_KEY] if top_of_run else fields, source)
        sub = _unwrap_dataclass(hints[key])
        if sub is not None:
            check_keys(sub, value, source, key_path)


def _check_model_keys(data: Any, source: str) -> None:
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


def read_run(path: str, overrides: Iterable[str] = ()) -> RunSections:
    """Read, merge and decode a run's sections; the model section is checked for unknown keys only."""
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
    model_section = data.pop(MODEL_KEY, None) or {}
    if not isinstance(model_section, Mapping):
        raise ConfigError(f"'{MODEL_KEY}' in {source} must be a mapping of model keys, got {model_section!r}")
    return RunSections(cfg=decode(RunConfig, data, source=source), model_section=dict(model_section), source=source)


def hf_init_folder(cfg: RunConfig) -> str | None:
    """The Hugging Face folder whose config.json gives this run's model config, or None.

    That is continued pretraining (`init_from.hf` without `tile`) from a folder that exists; a
    folder not there yet is refused by the trainer's preflight, like a missing init_from.path.
    """
    init = cfg.init_from
    if init is not None and init.hf and not init.tile and os.path.isfile(os.path.join(init.hf, "config.json")):
        return init.hf
    return None


def assemble_run(sections: RunSections, model_config: Callable[[], FlexBertConfig]) -> LoadedRun:
    """The LoadedRun of `sections` with the model config `model_config()` builds, checked against the run."""
    try:
        model_cfg = model_config()
    except (TypeError, ValueError) as e:  # ConfigError included: say it is this run's model section
        raise ConfigError(f"model section of {sections.source}: {e}") from None
    check_run_against_model(sections.cfg, model_cfg, sections.source)
    return LoadedRun(cfg=sections.cfg, model_cfg=model_cfg, source=sections.source)


def load_run_config(path: str, overrides: Iterable[str] = ()) -> LoadedRun:
    """Load, merge and validate a run whose model comes from its model section (presets + keys).

    Raises ConfigError naming the key, file and fix; also for a run continuing from a Hugging Face
    folder, whose model config only `flexbert.train.loading.load_run` can read.
    """
    sections = read_run(path, overrides)
    folder = hf_init_folder(sections.cfg)
    if folder is not None:
        raise ConfigError(
            f"{sections.source} continues from the Hugging Face folder init_from.hf {folder}, whose config.json "
            "gives the model config: load it with flexbert.train.loading.load_run (train.py does)")
    return assemble_run(sections, lambda: load_model_config(sections.model_section))


def check_run_against_model(cfg: RunConfig, model_cfg: FlexBertConfig, source: str) -> None:
    """Cross-section checks between the data/batch settings and the model."""
    limit = model_cfg.max_position_embeddings
    for key in ("data", "eval_data"):
        data = getattr(cfg, key)
        if data is not None and data.max_seq_len > limit:
            raise ConfigError(
                f"{key}.max_seq_len ({data.max_seq_len}) in {source} is longer than model.max_position_embeddings "
                f"({limit}); raise model.max_position_embeddings or lower {key}.max_seq_len"
            )


def resolved_dict(cfg: RunConfig, model_cfg: FlexBertConfig) -> dict[str, Any]:
    """Run config as plain data with the model section fully expanded (no preset), after `tokenizer`."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(cfg).items():
        out[key] = value
        if key == "tokenizer":
            out[MODEL_KEY] = dataclasses.asdict(model_cfg)
    return _plain(out)


def _plain(x: Any) -> Any:
    """Tuples -> lists so OmegaConf/YAML write plain lists."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
