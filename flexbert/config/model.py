"""The model config: one typed dataclass, HF ModernBERT names, ModernBERT-base defaults.

`load_model_config` turns a YAML file (a run file with a `model:` section, or a
model-only file), a dict or a `FlexBertConfig` into a checked `FlexBertConfig`.
A model section may name a `preset:` (a file in `yamls/models/` or a path) whose
keys are the base; the other keys of the section override it.
Every key is documented in `yamls/models/README.md`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

from flexbert.config.strict import decode, to_plain
from flexbert.config.yaml_file import read_yaml_mapping
from flexbert.errors import ConfigError, closest
from flexbert.resources import yamls_dir

__all__ = ["FlexBertConfig", "LayerSpec", "load_model_config", "PRESET_DIR", "preset_names"]

# yamls/models/ of a checkout, or the copy inside an installed wheel (flexbert.resources).
PRESET_DIR = yamls_dir() / "models"

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What differs between layers, as data.

    Attributes:
        kind: "global" or "local".
        window: sliding-window half-width (|i - j| <= window) for local layers, None for global.
        rope_theta: RoPE base for this layer (used by `attention: rope` only).
    """

    kind: str
    window: int | None
    rope_theta: float


@dataclasses.dataclass
class FlexBertConfig:
    """Architecture of a FlexBERT encoder; field names follow HF ModernBertConfig where one exists."""

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152  # glu: width of one half (Wi outputs 2x); mlp: the hidden width
    num_hidden_layers: int = 22
    num_attention_heads: int = 12

    embedding: str = "modernbert"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    mlp: str = "glu"
    hidden_activation: str = "gelu"
    mlp_bias: bool = False
    attention_bias: bool = False
    attention: str = "rope"
    attn_backend: str = "auto"
    global_attn_every_n_layers: int = 3
    local_attention: int = 128
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    layer_layout: str = "prenorm"

    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    attn_out_dropout: float = 0.1
    mlp_dropout: float = 0.0
    max_position_embeddings: int = 8192

    classifier_activation: str = "gelu"
    classifier_bias: bool = False
    decoder_bias: bool = True
    tie_word_embeddings: bool = True
    sparse_prediction: bool = True
    mlm_loss: str = "auto"

    init: str = "modernbert"
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0

    pad_token_id: int = 50283
    cls_token_id: int = 50281
    sep_token_id: int = 50282
    mask_token_id: int = 50284

    num_labels: int = 2
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    problem_type: str | None = None

    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "max_position_embeddings", "num_labels"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; pick sizes where hidden_size / num_attention_heads is a whole head dim")
        if self.attention == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {self.head_dim} (hidden_size / num_attention_heads); "
                             "change num_attention_heads or hidden_size")
        if self.global_attn_every_n_layers < 1:
            raise ValueError(f"global_attn_every_n_layers must be >= 1 (1 = every layer global), "
                             f"got {self.global_attn_every_n_layers}")
        if self.local_attention < 2 or self.local_attention % 2:
            raise ValueError(f"local_attention is the total window width and must be even and >= 2 "
                             f"(128 means 64 keys each side), got {self.local_attention}")
        for key in ("embedding_dropout", "attention_dropout", "attn_out_dropout", "mlp_dropout", "classifier_dropout"):
            p = getattr(self, key)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{key} is a probability in [0, 1), got {p}")
        for key in ("norm_eps", "initializer_range", "initializer_cutoff_factor", "global_rope_theta", "local_rope_theta"):
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{key} must be a positive number, got {v}")
        for key in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            tid = getattr(self, key)
            if not 0 <= tid < self.vocab_size:
                raise ValueError(f"{key} {tid} is outside the vocabulary [0, {self.vocab_size}); "
                                 "set it to the tokenizer's id or raise vocab_size")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            guess = closest(self.problem_type, PROBLEM_TYPES)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise ValueError(f"problem_type '{self.problem_type}' is unknown; choices: null, {', '.join(PROBLEM_TYPES)}{hint}")
        if self.norm == "rmsnorm" and self.norm_bias:
            raise ValueError("rmsnorm has no bias; set norm_bias: false or norm: layernorm")
        # Block names (norm, mlp, attn_backend, ...) are checked against the model's registries
        # where a model is built (flexbert.model.registries.check_block_names): config sits
        # below the model and does not import it.

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def window(self) -> int:
        """Half-width of local attention: a query sees keys with |i - j| <= window."""
        return self.local_attention // 2

    def layer_types(self) -> list[LayerSpec]:
        """Per layer: global iff i % global_attn_every_n_layers == 0 (HF ModernBERT's rule)."""
        specs = []
        for i in range(self.num_hidden_layers):
            if i % self.global_attn_every_n_layers == 0:
                specs.append(LayerSpec("global", None, self.global_rope_theta))
            else:
                specs.append(LayerSpec("local", self.window, self.local_rope_theta))
        return specs

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key, e.g. to save beside a checkpoint."""
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    """Names of the shipped presets in yamls/models/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    return to_plain(read_yaml_mapping(path, "model config"))


def _model_section(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], str]:
    """Return (model keys, key path): a run file's `model:` section, or the whole model-only file."""
    if "model" in data:
        section = data["model"]
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"'model' in {source} must be a mapping of model keys")
        return dict(section), "model"
    return dict(data), ""


def _resolve_preset(name: str, relative_to: Path | None) -> Path:
    """A preset is a name in yamls/models/ or a path (relative to the file naming it, then the cwd)."""
    if not str(name).endswith((".yaml", ".yml")) and "/" not in str(name):
        path = PRESET_DIR / f"{name}.yaml"
        if path.is_file():
            return path
        names = preset_names()
        guess = closest(str(name), names)
        hint = f"; did you mean '{guess}'?" if guess else ""
        raise ConfigError(f"unknown model preset '{name}'; choices: {', '.join(names)} (files in {PRESET_DIR}){hint}")
    candidates = [Path(name)]
    if relative_to is not None and not Path(name).is_absolute():
        candidates.insert(0, relative_to / name)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ConfigError(f"model preset file '{name}' not found (looked at {', '.join(map(str, candidates))})")


def _expand(section: dict[str, Any], source: str | None, path: str, base_dir: Path | None,
            seen: tuple[Path, ...]) -> dict[str, Any]:
    """Merge a section over its preset chain; every file's keys are checked against its own name."""
    section = dict(section)
    preset = section.pop("preset", None)
    if preset is None:
        decode(FlexBertConfig, section, source=source, path=path)  # reject bad keys here, naming this file
        return section
    preset_path = _resolve_preset(str(preset), base_dir)
    if preset_path in seen:
        raise ConfigError(f"model preset cycle: {' -> '.join(map(str, seen + (preset_path,)))}")
    base_data, base_path = _model_section(_read_yaml(preset_path), str(preset_path))
    base = _expand(base_data, str(preset_path), base_path, preset_path.parent, seen + (preset_path,))
    # An unknown key must be reported against this file, not the merged result: decoding it
    # alone raises strict's usual "unknown key ... in FILE; did you mean" error.
    known = {f.name for f in dataclasses.fields(FlexBertConfig)}
    for key in section:
        if key not in known:
            decode(FlexBertConfig, {key: section[key]}, source=source, path=path)
    return {**base, **section}


def load_model_config(source: FlexBertConfig | Mapping[str, Any] | str | Path) -> FlexBertConfig:
    """Build a checked FlexBertConfig.

    Args:
        source: a FlexBertConfig (returned as is); a dict or OmegaConf node of model keys
            (may hold `preset:`); or a YAML path: a run file with a `model:` section or a
            model-only file.
    """
    if isinstance(source, FlexBertConfig):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        section, key_path = _model_section(_read_yaml(path), str(path))
        merged = _expand(section, str(path), key_path, path.resolve().parent, (path.resolve(),))
        return decode(FlexBertConfig, merged, source=str(path), path=key_path)
    data = to_plain(source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"load_model_config needs a FlexBertConfig, a mapping or a YAML path, got {type(source).__name__}")
    merged = _expand(dict(data), None, "model", None, ())
    return decode(FlexBertConfig, merged, path="model")
