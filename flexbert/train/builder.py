"""Build a Composer Trainer from a validated run config (`LoadedRun`).

Order matters: everything that can fail cheaply (world size arithmetic, whether the named
attention kernel can train on this device, tokenizer vs model, data paths, save folder,
init_from path) is checked by `preflight` before a model or loader is built. Then:
seed, model (+ previous phase's weights), loaders, optimizer, scheduler, callbacks,
loggers, Trainer; the resolved config is written to
`save_folder/config.yaml` (atomically) so every checkpoint has its config beside it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any, Optional

import torch
from composer import Evaluator, Trainer
from composer.algorithms import GradientClipping
from composer.callbacks import LRMonitor
from composer.loggers import LoggerDestination
from composer.utils import dist, reproducibility

from flexbert.config.loading import LoadedRun
from flexbert.data.loader import build_eval_loader, build_train_loader
from flexbert.data.tokenizer import TokenizerError, load_tokenizer
from flexbert.errors import ConfigError
from flexbert.export import save_hf
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.attention.kernels import resolve_kernel
from flexbert.model.registries import check_block_names
from flexbert.outputs import atomic_write_text
from flexbert.train.callbacks import build_callback
from flexbert.train.checkpoint_hygiene import set_aside_unconfirmed_checkpoints
from flexbert.train.composer_model import FlexBertComposerModel, packed_data_spec
from flexbert.train.data_state import LoaderState
from flexbert.train.flops import flops_per_token
from flexbert.train.jsonl_logger import JsonlLogger
from flexbert.train.optim import build_optimizer
from flexbert.train.phases import initial_weights, load_phase_optimizer, load_phase_weights
from flexbert.train.resume import (
    check_same_architecture, check_save_folder_architecture, optimizer_hyperparameters,
    reapply_hyperparameters, resume_point,
)
from flexbert.train.run_checks import check_run
from flexbert.train.schedulers import build_scheduler

__all__ = ["BuiltRun", "preflight", "check_attention_kernel", "build_trainer", "finish_run", "write_config_atomically", "DEFAULT_CALLBACKS"]

log = logging.getLogger(__name__)

#: Callbacks every run gets unless the run's `callbacks:` section sets them to false.
DEFAULT_CALLBACKS = ("throughput", "batch_stats", "grad_norm", "memory", "nan_guard", "release_grads", "progress")


@dataclasses.dataclass
class BuiltRun:
    """What `build_trainer` made; `finish_run` uses it after `fit`."""

    loaded: LoadedRun
    trainer: Any
    composer_model: Any
    train_loader: Any
    token_ids: dict[str, int]


# ---------------------------------------------------------------------------------------------
# checks before heavy work
# ---------------------------------------------------------------------------------------------
def _world_size() -> int:
    return dist.get_world_size()  # reads WORLD_SIZE before the process group exists


def _check_tokenizer(cfg: Any, mcfg: Any) -> dict[str, int]:
    """Token ids for the loader; the tokenizer (when set) must agree with the model config."""
    ids = {"pad": mcfg.pad_token_id, "cls": mcfg.cls_token_id, "sep": mcfg.sep_token_id, "mask": mcfg.mask_token_id}
    if not cfg.tokenizer:
        return dict(ids, unk=mcfg.pad_token_id)

    if not os.path.exists(cfg.tokenizer):
        raise ConfigError(f"tokenizer folder {cfg.tokenizer} does not exist (key 'tokenizer')")
    try:
        info = load_tokenizer(cfg.tokenizer)
    except TokenizerError as e:
        raise ConfigError(f"tokenizer {cfg.tokenizer}: {e}") from None
    if info.vocab_size > mcfg.vocab_size:
        raise ConfigError(
            f"tokenizer {cfg.tokenizer} has {info.vocab_size} tokens but model.vocab_size is {mcfg.vocab_size}; "
            f"set model.vocab_size to at least {info.vocab_size} (a multiple of 64 is faster)"
        )
    theirs = {"pad": info.pad_id, "cls": info.cls_id, "sep": info.sep_id, "mask": info.mask_id}
    wrong = [
        f"model.{role}_token_id is {ids[role]} but the tokenizer's {role} id is {theirs[role]}: set model.{role}_token_id: {theirs[role]}"
        for role in ids
        if ids[role] != theirs[role]
    ]
    if wrong:
        raise ConfigError(f"tokenizer {cfg.tokenizer} and the model disagree on special tokens; " + "; ".join(wrong))
    return dict(theirs, unk=info.unk_id)


def _check_data_paths(cfg: Any) -> None:
    sections = [("data", cfg.data, cfg.data.train_streams())]
    if cfg.eval_data is not None:
        sections.append(("eval_data", cfg.eval_data, cfg.eval_data.train_streams()))
    elif cfg.data.validation_streams():
        sections.append(("data (validation)", cfg.data, cfg.data.validation_streams()))
    for key, _, streams in sections:
        for s in streams:
            if s.remote:
                continue  # streamed from remote: nothing local to check yet
            folder = os.path.join(s.local, s.split) if s.split else s.local
            if not os.path.isfile(os.path.join(folder, "index.json")):
                what = "does not exist" if not os.path.exists(folder) else "has no index.json (not an MDS dataset)"
                raise ConfigError(f"{key}: data path {folder} {what}; build it with data_prep/ or fix the path")


def _check_save_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"save_folder {folder} is not writable ({e.strerror}); choose another save_folder") from None


_COMPUTE_DTYPES = {"fp32": torch.float32, "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}


def check_attention_kernel(cfg: Any, mcfg: Any, device: str) -> str:
    """Resolve model.attn_backend for this run before any data is read; log it in one line.

    The request is the run's: device, compute dtype (precision), head dim, attention dropout,
    and gradients (training needs the kernel's backward; FlexAttention has none on CPU in recent
    torch). A named kernel that cannot serve it, or `auto` with no kernel that can, is a config
    error with each kernel's reason, instead of a traceback at the first forward inside fit().

    Args:
        cfg: the run config (precision gives the compute dtype).
        mcfg: the model config.
        device: "cpu" or "gpu", as the Trainer gets it.
    Returns:
        the name of the kernel the model will use.
    Raises:
        ConfigError: naming the kernel and its reason.
    """
    torch_device, dtype = torch.device("cuda" if device == "gpu" else "cpu"), _COMPUTE_DTYPES[cfg.precision]
    kernel = resolve_kernel(mcfg.attn_backend, torch_device, dtype, needs_dropout=mcfg.attention_dropout > 0.0,
                            needs_backward=True, head_dim=mcfg.head_dim)
    spans = sorted({"global" if spec.window is None else f"window {spec.window}" for spec in mcfg.layer_types()})
    log.info("attention: %s (model.attn_backend %s) on %s %s, head dim %d, %s layers, dropout %g",
             kernel.name, mcfg.attn_backend, torch_device.type, str(dtype).replace("torch.", ""), mcfg.head_dim,
             " + ".join(spans), mcfg.attention_dropout)
    return kernel.name


def preflight(loaded: LoadedRun, world_size: Optional[int] = None) -> dict[str, int]:
    """Every cheap check of the environment; returns the special token ids to use."""
    cfg, mcfg = loaded.cfg, loaded.model_cfg
    world_size = world_size or _world_size()
    try:
        cfg.world_batch_checks(world_size)
    except ValueError as e:
        raise ConfigError(f"{loaded.source}: {e}") from None
    check_block_names(mcfg, loaded.source)  # before the kernel check: a misspelt attn_backend names the file
    check_attention_kernel(cfg, mcfg, _device(cfg))
    check_run(cfg, mcfg, loaded.source)  # block names, schedule vs max_duration, callback names, export_hf
    ids = _check_tokenizer(cfg, mcfg)
    _check_data_paths(cfg)
    if cfg.save_folder:
        _check_save_folder(cfg.save_folder)
    init = cfg.init_from
    if init is not None and init.path and not os.path.isfile(init.path):
        raise ConfigError(f"init_from.path {init.path} does not exist; point it at the previous phase's checkpoint file")
    if init is not None and init.hf and not os.path.isfile(os.path.join(init.hf, "config.json")):
        raise ConfigError(f"init_from.hf {init.hf} has no config.json; point it at a Hugging Face ModernBERT folder")
    if cfg.load_path and "://" not in cfg.load_path and not os.path.isfile(cfg.load_path):
        raise ConfigError(f"load_path {cfg.load_path} does not exist")
    if cfg.export_hf and not cfg.save_folder:
        raise ConfigError("export_hf needs save_folder (the export reads the final checkpoint and its config.yaml)")
    return ids


def write_config_atomically(text: str, folder: str, name: str = "config.yaml") -> str:
    """Write `text` to folder/name via a temporary file and a rename (never a half-written file).

    The file gets 0o666 less the umask, like every output (flexbert.outputs), not mkstemp's 0o600.
    """
    atomic_write_text(os.path.join(folder, name), text)
    return os.path.join(folder, name)


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def _device(cfg: Any) -> str:
    if cfg.device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if cfg.device == "gpu" and not torch.cuda.is_available():
        raise ConfigError("device: gpu, but torch sees no CUDA device; use device: cpu or auto")
    return cfg.device


def _loaders(cfg: Any, mcfg: Any, ids: dict[str, int], world_size: int) -> tuple[Any, Any]:
    special = [ids["pad"], ids["cls"], ids["sep"], ids["mask"], ids["unk"]]
    common = dict(special_ids=special, mask_token_id=ids["mask"], vocab_size=mcfg.vocab_size, pad_token_id=ids["pad"])
    mb = cfg.device_train_microbatch_size
    warm = cfg.batch_size_warmup
    train = build_train_loader(
        cfg.data,
        device_batch_rows=cfg.global_train_batch_size // world_size,
        batch_size_warmup_min_rows=(warm.min_batch_size // world_size) if warm.min_batch_size else None,
        batch_size_warmup_tokens=warm.num_tokens,
        # during warmup rows stay a multiple of the microbatch, so accumulation splits evenly
        batch_size_warmup_granularity=mb if isinstance(mb, int) and mb < cfg.global_train_batch_size // world_size else 1,
        **common,
    )
    eval_cfg = cfg.eval_data
    if eval_cfg is not None:  # its own streams are the evaluation data
        eval_cfg = dataclasses.replace(eval_cfg, eval_streams=eval_cfg.train_streams())
    elif cfg.data.validation_streams():
        eval_cfg = cfg.data
    evaluation = None
    if eval_cfg is not None:
        evaluation = build_eval_loader(eval_cfg, device_batch_rows=cfg.device_eval_batch_size, **common)
    return train, evaluation


def _callbacks(cfg: Any, mcfg: Any, train_loader: Any) -> list[Any]:
    wanted: dict[str, dict[str, Any]] = {name: {} for name in DEFAULT_CALLBACKS}
    # Defaults that depend on the run; a run's own options for a callback override them.
    wanted["nan_guard"] = {"on_nan": cfg.on_nan}
    wanted["throughput"] = {"flops_per_token": flops_per_token(mcfg, cfg.data.max_seq_len, cfg.data.mlm_probability)}
    wanted["batch_stats"] = {"max_seq_len": cfg.data.max_seq_len}
    wanted["progress"] = {"bar": cfg.progress_bar, "interval": cfg.console_log_interval, "metrics_file": _jsonl_path(cfg)}
    if not cfg.log_to_console or cfg.console_metrics == "all":
        del wanted["progress"]  # a silent console, or Composer's full dump instead
    for name, options in cfg.callbacks.items():
        if options is False:
            wanted.pop(name, None)
        else:
            wanted[name] = {**wanted.get(name, {}), **(options if isinstance(options, dict) else {})}
    try:
        out = [build_callback(name, options, where=f"callbacks.{name}") for name, options in wanted.items()]
    except ValueError as e:  # unknown name or option: ConfigError already names callbacks.<name>
        raise ConfigError(str(e)) from None
    out.append(LoaderState(train_loader))  # exact resume; not optional
    out.append(LRMonitor())  # lr-<Optimizer>/group<i> every batch: the schedule actually applied
    return out


def _jsonl_path(cfg: Any) -> Optional[str]:
    """Where `loggers.jsonl` writes (a relative path lies inside save_folder), or None."""
    path = cfg.loggers.jsonl
    if path and cfg.save_folder and not os.path.isabs(path):
        path = os.path.join(cfg.save_folder, path)
    return path or None


def _loggers(cfg: Any) -> list[Any]:
    out = []
    if cfg.loggers.wandb is not None:
        import wandb.sdk.wandb_run  # optional: wandb
        from composer.loggers import WandBLogger  # optional: wandb (imported by this logger)

        run_cls = wandb.sdk.wandb_run.Run
        if not hasattr(run_cls, "get_url"):  # Composer 0.32 calls run.get_url(), removed in wandb 0.31
            run_cls.get_url = lambda self: self.url
        w = cfg.loggers.wandb
        out.append(WandBLogger(project=w.project, entity=w.entity, group=w.group, tags=w.tags or None,
                               init_kwargs={"mode": w.mode, "name": cfg.run_name}))
    if cfg.loggers.jsonl:
        out.append(JsonlLogger(_jsonl_path(cfg)))
    return out


def build_trainer(loaded: LoadedRun) -> BuiltRun:
    """Preflight, then build model, data, optimizer and the Composer Trainer."""
    cfg, mcfg = loaded.cfg, loaded.model_cfg
    world_size = _world_size()
    ids = preflight(loaded, world_size)
    device = _device(cfg)

    # The model is built before the Trainer seeds, so seed here: same weights on every rank.
    reproducibility.seed_all(cfg.seed)
    if cfg.deterministic_mode:
        reproducibility.configure_deterministic_mode()
    model = FlexBertForMaskedLM(mcfg)
    ckpt = None
    if cfg.init_from is not None:
        try:  # a previous phase's checkpoint, an HF folder (hf:), or a smaller model tiled (tile: true)
            weights, ckpt, source = initial_weights(cfg.init_from, model)
            load_phase_weights(model, weights, source)
            del weights
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if device == "gpu":
        model = model.cuda()  # the optimizer picks its kernels from where the parameters live
    composer_model = FlexBertComposerModel(model)
    optimizer = build_optimizer(model, cfg.optimizer)

    train_loader, eval_loader = _loaders(cfg, mcfg, ids, world_size)
    evaluators = []
    if eval_loader is not None:
        evaluators.append(Evaluator(label="eval", dataloader=packed_data_spec(eval_loader),
                                    metric_names=list(composer_model.eval_metrics),
                                    subset_num_batches=cfg.eval_subset_num_batches,
                                    device_eval_microbatch_size=cfg.device_eval_batch_size))
    algorithms = []
    if cfg.optimizer.gradient_clipping is not None:
        algorithms.append(GradientClipping(clipping_type="norm", clipping_threshold=cfg.optimizer.gradient_clipping))

    if cfg.save_folder and cfg.autoresume:  # a crash while saving must not block the resume
        set_aside_unconfirmed_checkpoints(cfg.save_folder, dist.get_global_rank())
    load_path = cfg.load_path
    if dist.get_global_rank() == 0:
        # Before Composer unpickles anything, and before config.yaml is (re)written: the checkpoint
        # is read as data, completely, and must hold this run's architecture.
        resume = resume_point(cfg)
        if resume is not None:
            check_same_architecture(resume, mcfg, model)
            if resume.from_load_path:
                load_path = resume.path  # a remote load_path, downloaded and checked
            del resume
        else:
            check_save_folder_architecture(cfg, mcfg)
        if cfg.save_folder:
            write_config_atomically(loaded.to_yaml(), cfg.save_folder)

    run_hyperparameters = optimizer_hyperparameters([optimizer])
    callbacks = _callbacks(cfg, mcfg, train_loader)
    # A callback that is also a logger destination (progress) must be a logger to receive the metrics.
    destinations = [c for c in callbacks if isinstance(c, LoggerDestination)]
    trainer = Trainer(
        model=composer_model,
        train_dataloader=packed_data_spec(train_loader),
        spin_dataloaders=False,  # the loader restores its own position (flexbert.train.data_state)
        eval_dataloader=evaluators or None,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=cfg.max_duration,
        optimizers=optimizer,
        schedulers=build_scheduler(cfg.scheduler),
        step_schedulers_every_batch=True,
        algorithms=algorithms,
        callbacks=[c for c in callbacks if c not in destinations],
        loggers=_loggers(cfg) + destinations,
        run_name=cfg.run_name,
        progress_bar=False,  # the progress callback draws the only bar
        log_to_console=cfg.log_to_console and cfg.console_metrics == "all",
        console_log_interval=cfg.console_log_interval,
        save_folder=cfg.save_folder,
        save_interval=cfg.save_interval,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        save_overwrite=cfg.save_overwrite,
        autoresume=cfg.autoresume,
        load_path=load_path,
        device=device,
        precision=cfg.precision,
        device_train_microbatch_size=cfg.device_train_microbatch_size,
        # weight microbatches by masked tokens: accumulation == one big batch
        accumulate_train_batch_on_tokens=True,
        parallelism_config={"fsdp": cfg.fsdp_config} if cfg.fsdp_config else None,
        compile_config={} if cfg.compile else None,
        seed=cfg.seed,
        deterministic_mode=cfg.deterministic_mode,
    )
    resumed = int(trainer.state.timestamp.batch) > 0
    if resumed and (cfg.load_path or cfg.autoresume):
        changed = reapply_hyperparameters(trainer.state, run_hyperparameters)
        if changed and dist.get_global_rank() == 0:
            print(f"resumed at batch {int(trainer.state.timestamp.batch)} with this run's optimizer settings: "
                  + "; ".join(changed))
    if ckpt is not None and cfg.init_from.load_optimizer and not resumed:
        load_phase_optimizer(trainer.state, ckpt)
    del ckpt
    return BuiltRun(loaded=loaded, trainer=trainer, composer_model=composer_model, train_loader=train_loader, token_ids=ids)


def finish_run(run: BuiltRun) -> Optional[str]:
    """After `fit`: export to Hugging Face format when `export_hf` is set (rank 0). Returns the folder."""
    cfg = run.loaded.cfg
    run.trainer.close()
    if not cfg.export_hf or dist.get_global_rank() != 0:
        return None

    model = run.composer_model.model
    save_hf(model.cpu().float(), cfg.export_hf, tokenizer=cfg.tokenizer, overwrite=True)
    log.info("exported Hugging Face model to %s", cfg.export_hf)
    print(f"exported Hugging Face model to {cfg.export_hf}")
    return cfg.export_hf
