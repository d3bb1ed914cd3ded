"""Optimizer construction: StableAdamW (optimi) or AdamW (torch), with weight-decay groups.

Weight decay semantics (see OptimizerConfig): with ``decoupled_weight_decay: true`` each step
multiplies a decayed weight by ``1 - weight_decay * lr_t / lr_peak`` -- the paper's "decoupled
weight decay 1e-5" is a per-step fraction at peak LR, not multiplied by the LR value.
  * StableAdamW: optimi's ``decouple_lr=True`` (``max_lr`` = ``optimizer.lr``, the peak the
    schedule multiplies). optimi scales the decay with the *clipped* LR of each tensor, so a
    tensor whose update is clipped is also decayed less, as in the StableAdamW paper.
  * AdamW: torch multiplies weight decay by the current LR, so ``weight_decay / lr_peak`` is
    passed to reach the same per-step decay.
With ``decoupled_weight_decay: false`` both use the AdamW form ``1 - lr_t * weight_decay``.

Groups: a parameter is exempt from decay when one of its roles is in ``no_decay_for``. Roles
come from the module that owns the parameter, not from name patterns alone: ``norm`` (a module
built by the norm registry, `flexbert.model.norms.is_norm`, or one of torch's norm layers), ``bias`` (parameters named ``bias``), ``embeddings`` (``nn.Embedding``
tables). A decoder weight tied to the embeddings is the same tensor: it appears once, with the
``embeddings`` role.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from flexbert.config.optim import OptimizerConfig
from flexbert.model.norms import is_norm

__all__ = ["build_optimizer", "param_groups", "param_roles", "describe_param_groups", "ParamInfo"]

@dataclasses.dataclass
class ParamInfo:
    """One trainable tensor: its first qualified name, the tensor, and its roles."""

    name: str
    param: nn.Parameter
    roles: set[str]


def param_roles(model: nn.Module) -> list[ParamInfo]:
    """Every trainable tensor of `model` once (tied tensors merged), in registration order, with its roles."""
    found: dict[int, ParamInfo] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module._parameters.items():  # noqa: SLF001 -- also sees tied duplicates
            if p is None or not p.requires_grad:
                continue
            info = found.get(id(p))
            if info is None:
                info = found[id(p)] = ParamInfo(f"{mod_name}.{p_name}" if mod_name else p_name, p, set())
            if is_norm(module):  # built by the norm registry (or one of torch's norms)
                info.roles.add("norm")
            if p_name.endswith("bias"):
                info.roles.add("bias")
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                info.roles.add("embeddings")
    return list(found.values())


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Torch parameter groups ``decay`` and ``no_decay`` (empty ones left out).

    Each group has ``params``, ``weight_decay`` (the config value; build_optimizer rescales it for
    torch AdamW) and ``group_name``.
    """
    exempt = set(cfg.no_decay_for)
    decay, no_decay = [], []
    for info in param_roles(model):
        (no_decay if info.roles & exempt else decay).append(info.param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "group_name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group_name": "no_decay"},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer for `model` (call after the model is on its device, before FSDP wrapping
    when FSDP flattens parameters)."""
    groups = param_groups(model, cfg)
    if cfg.name == "stable_adamw":
        from optimi import StableAdamW

        params = [p for g in groups for p in g["params"]]
        # optimi picks its Triton kernels whenever triton is importable, even for CPU tensors,
        # and then fails; only let it choose when every parameter is on CUDA.
        all_cuda = all(p.is_cuda for p in params)
        return StableAdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                           decouple_lr=cfg.decoupled_weight_decay, triton=None if all_cuda else False)
    if cfg.name == "adamw":
        if cfg.decoupled_weight_decay:
            for g in groups:  # torch multiplies by the current LR: divide by the peak to decouple
                g["weight_decay"] = g["weight_decay"] / cfg.lr
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    raise ValueError(f"unknown optimizer.name '{cfg.name}'; choices: stable_adamw, adamw")


def describe_param_groups(model: nn.Module, cfg: OptimizerConfig) -> str:
    """A few lines for the dry run: per group, tensors, elements, weight decay and roles present."""
    exempt = set(cfg.no_decay_for)
    rows: dict[str, list[ParamInfo]] = {"decay": [], "no_decay": []}
    for info in param_roles(model):
        rows["no_decay" if info.roles & exempt else "decay"].append(info)
    lines = [f"optimizer {cfg.name}: lr {cfg.lr:g}, betas {tuple(cfg.betas)}, eps {cfg.eps:g}, weight decay "
             f"{cfg.weight_decay:g} ({'decoupled: x lr_t/lr' if cfg.decoupled_weight_decay else 'x lr_t'})"]
    for name, infos in rows.items():
        if not infos:
            continue
        numel = sum(i.param.numel() for i in infos)
        roles = sorted({r for i in infos for r in i.roles}) or ["matrices"]
        wd = 0.0 if name == "no_decay" else cfg.weight_decay
        lines.append(f"  {name:<8} {len(infos):>4} tensors {numel:>13,} params  wd {wd:g}  ({', '.join(roles)})")
    return "\n".join(lines)
