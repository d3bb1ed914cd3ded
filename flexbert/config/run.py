"""The run config: everything `train.py RUN.yaml` needs, as typed dataclasses.

Top-level keys use Composer Trainer argument names where one exists (`max_duration`,
`save_folder`, `device_train_microbatch_size`, ...) so Composer users read them at
sight. Defaults live only here. Sections owned by other parts of FlexBERT are typed
with their own dataclasses (`DataConfig`, `OptimizerConfig`, `SchedulerConfig`); the
`model` section is not a field here: `flexbert.config.loading` resolves it (`preset:` first)
into `LoadedRun.model_cfg`, a `FlexBertConfig`, its one home.

Durations and intervals are Composer time strings: an integer with a unit,
`tok` (tokens), `ba` (batches / optimizer steps), `sp` (samples = packed rows),
e.g. `1719000000000tok`, `500ba`; underscores and scientific notation are allowed
(`1_719_000_000_000tok`, `1.719e12tok`). Epochs are not offered: with packing an epoch
is not a fixed number of steps or tokens.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Union

from flexbert.config.data import DataConfig
from flexbert.config.optim import OptimizerConfig, SchedulerConfig, parse_time

__all__ = [
    "RunConfig",
    "WandbConfig",
    "LoggersConfig",
    "BatchSizeWarmupConfig",
    "InitFromConfig",
    "composer_time",
]

def composer_time(value: str, key: str, units: tuple[str, ...] = ("tok", "ba", "sp")) -> str:
    """Check a time string and return Composer's spelling (`3e9tok` -> `3000000000tok`)."""
    amount, unit = parse_time(value, key)
    if unit not in units:
        raise ValueError(f"{key} is {value!r}; its unit must be one of {', '.join(units)}")
    return f"{amount:g}dur" if unit == "dur" else f"{int(amount)}{unit}"


@dataclasses.dataclass
class WandbConfig:
    """Weights & Biases logger (`mode: offline` works without network)."""

    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Literal["online", "offline", "disabled"] = "online"
    group: Optional[str] = None
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LoggersConfig:
    """Extra logger destinations (the console is controlled by `log_to_console` and `console_metrics`).

    `jsonl`: a file receiving every metric at full precision, one JSON line per step
    (a relative path is taken inside `save_folder` when one is set).
    """

    wandb: Optional[WandbConfig] = None
    jsonl: Optional[str] = None


@dataclasses.dataclass
class BatchSizeWarmupConfig:
    """Linear batch-size warmup, in rows of the global batch, over a number of tokens.

    `min_batch_size: 0` (the default) turns it off. The global batch grows linearly from
    `min_batch_size` to `global_train_batch_size` over the first `tokens` tokens.
    """

    min_batch_size: int = 0
    tokens: str = "0tok"

    def __post_init__(self):
        if self.min_batch_size < 0:
            raise ValueError(f"batch_size_warmup.min_batch_size is {self.min_batch_size}; use 0 (off) or a positive row count")
        self.tokens = composer_time(self.tokens, "batch_size_warmup.tokens", ("tok",))
        if self.min_batch_size > 0 and self.num_tokens == 0:
            raise ValueError("batch_size_warmup.min_batch_size is set but batch_size_warmup.tokens is 0; set the warmup length in tokens")

    @property
    def num_tokens(self) -> int:
        return int(parse_time(self.tokens, "batch_size_warmup.tokens")[0])


@dataclasses.dataclass
class InitFromConfig:
    """Start a new phase from a previous phase's checkpoint, or from a Hugging Face folder.

    `path`: a Composer checkpoint file. The model is rebuilt from *this* run's `model` section
    (new RoPE thetas, new `max_position_embeddings`), then the checkpoint's weights are copied
    in; RoPE frequency buffers are never copied, they come from the new config.
    `hf`: a Hugging Face ModernBERT folder (config.json + weights) for continued pretraining;
    the model config then comes from its config.json, and the run's `model` section may only
    set keys that fit the weights (flexbert/train/hf_init.py, docs/continued_pretraining.md).
    Set exactly one of `path` and `hf`.
    `tile: true`: the source is a *smaller* model (e.g. ModernBERT-base for large); its weights
    are center-tiled into the model built from this run's `model` section
    (flexbert/train/tiling.py). With `path`, the small model's config is read from
    `config.yaml` beside the checkpoint (train.py writes it into save_folder).
    Training time (step, tokens) and the LR schedule always start again from zero
    (`reset_time` must stay true: a phase is a new run). `load_optimizer: true` also restores
    the optimizer's moments (not its LR, which the new phase's scheduler sets); only with
    `path` and without `tile`.
    """

    path: str = ""
    hf: Optional[str] = None
    tile: bool = False
    load_optimizer: bool = False
    reset_time: bool = True

    def __post_init__(self):
        if self.path and self.hf:
            raise ValueError("init_from.path and init_from.hf are both set; set one (a Composer checkpoint file "
                             "or a Hugging Face ModernBERT folder)")
        if not self.path and not self.hf:
            raise ValueError("init_from.path is empty; set it to the previous phase's checkpoint, e.g. runs/phase1/latest-rank0.pt "
                             "(or set init_from.hf to a Hugging Face ModernBERT folder)")
        if self.load_optimizer and (self.hf or self.tile):
            raise ValueError("init_from.load_optimizer: true needs a same-shaped checkpoint (init_from.path without tile); "
                             "set load_optimizer: false")
        if not self.reset_time:
            raise ValueError(
                "init_from.reset_time: false is not supported; to continue the same run use `load_path` "
                "(or `autoresume: true`), which restores time and schedule"
            )


@dataclasses.dataclass
class RunConfig:
    """One training run. See yamls/README.md for every key with an example."""

    # --- identity and reproducibility
    run_name: str = "flexbert"
    seed: int = 17
    deterministic_mode: bool = False

    # --- what to train on / with
    tokenizer: Optional[str] = None
    # `model:` (the model section) is read by flexbert.config.loading into LoadedRun.model_cfg
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    eval_data: Optional[DataConfig] = None

    # --- how long and how big
    max_duration: str = "1000ba"
    global_train_batch_size: int = 32
    device_train_microbatch_size: Union[int, Literal["auto"]] = 32
    device_eval_batch_size: int = 32
    batch_size_warmup: BatchSizeWarmupConfig = dataclasses.field(default_factory=BatchSizeWarmupConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)

    # --- numerics and hardware
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "fp32"
    device: Literal["auto", "cpu", "gpu"] = "auto"
    compile: bool = False
    fsdp_config: Optional[dict[str, Any]] = None

    # --- evaluation
    # a time string, or Composer's integer form: N epochs, 0 for no periodic evaluation
    eval_interval: Union[str, int] = "1000ba"
    eval_subset_num_batches: int = -1

    # --- checkpoints
    save_folder: Optional[str] = None
    save_interval: str = "1000ba"
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    autoresume: bool = False
    load_path: Optional[str] = None
    init_from: Optional[InitFromConfig] = None
    export_hf: Optional[str] = None

    # --- logging and callbacks
    # The console shows the `progress` callback's output (a bar on a terminal, else one compact line
    # per console_log_interval); `console_metrics: all` prints Composer's dump of every metric instead.
    console_log_interval: str = "10ba"
    console_metrics: Literal["progress", "all"] = "progress"
    progress_bar: Union[bool, Literal["auto"]] = "auto"
    log_to_console: bool = True
    loggers: LoggersConfig = dataclasses.field(default_factory=LoggersConfig)
    # name -> options (a mapping), `true`/null for default options, `false` to turn off a default one
    callbacks: dict[str, Union[bool, dict[str, Any], None]] = dataclasses.field(default_factory=dict)
    on_nan: Literal["stop", "skip"] = "stop"

    def __post_init__(self):
        if isinstance(self.eval_interval, int) and not isinstance(self.eval_interval, bool):
            if self.eval_interval < 0:
                raise ValueError(f"eval_interval is {self.eval_interval}; an integer is a number of epochs "
                                 "(Composer's form), 0 turns periodic evaluation off")
        else:
            self.eval_interval = composer_time(self.eval_interval, "eval_interval")
        for key in ("max_duration", "save_interval", "console_log_interval"):
            setattr(self, key, composer_time(getattr(self, key), key))
        if self.global_train_batch_size <= 0:
            raise ValueError(f"global_train_batch_size is {self.global_train_batch_size}; it must be a positive number of rows")
        mb = self.device_train_microbatch_size
        if mb != "auto" and mb <= 0:
            raise ValueError(f"device_train_microbatch_size is {mb}; use a positive row count or 'auto'")
        if self.device_eval_batch_size <= 0:
            raise ValueError(f"device_eval_batch_size is {self.device_eval_batch_size}; it must be positive")
        warm = self.batch_size_warmup.min_batch_size
        if warm > self.global_train_batch_size:
            raise ValueError(
                f"batch_size_warmup.min_batch_size ({warm}) is larger than global_train_batch_size "
                f"({self.global_train_batch_size}); the warmup grows the batch, lower min_batch_size"
            )
        if self.autoresume and not self.save_folder:
            raise ValueError("autoresume: true needs save_folder (where the checkpoints to resume from live)")
        if self.autoresume and self.save_overwrite:
            raise ValueError("autoresume: true with save_overwrite: true would overwrite the checkpoints it resumes from; set save_overwrite: false")
        if self.init_from is not None and self.load_path:
            raise ValueError("set either init_from (start a new phase from weights) or load_path (continue a run), not both")
        if self.fsdp_config is not None and self.device == "cpu":
            raise ValueError("fsdp_config needs GPUs; remove fsdp_config for CPU runs (DDP over gloo is used instead)")

    def world_batch_checks(self, world_size: int) -> None:
        """Batch sizes that must divide evenly over `world_size` ranks and microbatches."""
        gb = self.global_train_batch_size
        if gb % world_size:
            raise ValueError(
                f"global_train_batch_size ({gb}) is not divisible by the world size ({world_size}); "
                f"use a multiple of {world_size}, e.g. {gb - gb % world_size or world_size}"
            )
        per_rank = gb // world_size
        mb = self.device_train_microbatch_size
        # A microbatch at least as large as the rank's batch means one microbatch (as in Composer).
        if mb != "auto" and mb < per_rank and per_rank % mb:
            raise ValueError(
                f"global_train_batch_size ({gb}) / world size ({world_size}) = {per_rank} rows per rank is not "
                f"divisible by device_train_microbatch_size ({mb}); choose a microbatch size dividing {per_rank}"
            )
        warm = self.batch_size_warmup.min_batch_size
        if warm and warm % world_size:
            raise ValueError(
                f"batch_size_warmup.min_batch_size ({warm}) is not divisible by the world size ({world_size})"
            )
