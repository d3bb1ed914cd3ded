"""Kernels are resolved at build time: each kernel's limits (device, dtype, head dim) live in its
`unavailable_reason`; preflight resolves model.attn_backend for the run (device, precision, head dim,
dropout, gradients), logs one line, and refuses a kernel that cannot run before any data is read."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from flexbert.config.strict import ConfigError
from flexbert.model.attention import kernels as kernels_pkg
from flexbert.model.attention.kernels import KERNELS, resolve_kernel
from flexbert.model.attention.kernels.base import FLASH_MAX_HEAD_DIM, AttentionKernel
from flexbert.model.attention.kernels.sdpa import SdpaKernel

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
DEMO = str(Path(__file__).resolve().parent.parent / "yamls" / "demo.yaml")


@pytest.mark.parametrize("name", ["torch_flash", "flash_attn"])
def test_flash_kernels_refuse_a_head_dim_above_256_in_their_reason(name):
    if name not in KERNELS:
        pytest.skip(f"{name} not built")
    kernel = KERNELS.get(name)()
    why = kernel.unavailable_reason(CUDA, torch.bfloat16, head_dim=FLASH_MAX_HEAD_DIM + 64)
    assert why is not None
    if name == "torch_flash":  # flash_attn says first that the package is missing, where it is
        assert why == f"head dim {FLASH_MAX_HEAD_DIM + 64} is above FlashAttention's {FLASH_MAX_HEAD_DIM}"


@pytest.mark.parametrize("name", sorted(KERNELS.names()))
def test_every_kernel_takes_the_head_dim_in_its_reason(name):
    """One signature for every kernel (the resolver passes head_dim to each)."""
    kernel = KERNELS.get(name)()
    for device in (CPU, CUDA):
        why = kernel.unavailable_reason(device, torch.bfloat16, head_dim=64)
        assert why is None or isinstance(why, str)


class _SmallHeadsOnly(SdpaKernel):
    """A throwaway kernel: sdpa's computation, limited to head dims <= 16."""

    name = "small_heads_only"

    def unavailable_reason(self, device, dtype, head_dim=None):
        return f"head dim {head_dim} is above 16" if head_dim is not None and head_dim > 16 else None


@pytest.fixture
def small_heads_kernel(monkeypatch):
    monkeypatch.setitem(KERNELS._items, _SmallHeadsOnly.name, _SmallHeadsOnly)
    monkeypatch.setitem(kernels_pkg.AUTO_ORDER, "cpu", (_SmallHeadsOnly.name, "sdpa"))
    return _SmallHeadsOnly.name


def test_auto_skips_a_kernel_that_cannot_take_the_head_dim(small_heads_kernel):
    assert resolve_kernel("auto", CPU, torch.float32, head_dim=16).name == small_heads_kernel
    assert resolve_kernel("auto", CPU, torch.float32, head_dim=64).name == "sdpa"


def test_a_named_kernel_that_cannot_take_the_head_dim_is_a_config_error(small_heads_kernel):
    with pytest.raises(ConfigError, match=r"attention kernel 'small_heads_only' at model.attn_backend cannot run on "
                                          r"cpu torch.float32: head dim 64 is above 16"):
        resolve_kernel(small_heads_kernel, CPU, torch.float32, head_dim=64)


def test_the_model_resolves_with_its_head_dim(small_heads_kernel, make_config):
    from flexbert.model.encoder import FlexBertModel

    wide = FlexBertModel(make_config(attn_backend="auto", hidden_size=64, num_attention_heads=1))
    assert wide.attention_kernel(CPU, torch.float32).name == "sdpa"  # head dim 64: skipped
    narrow = FlexBertModel(make_config(attn_backend="auto", hidden_size=64, num_attention_heads=4))
    assert narrow.attention_kernel(CPU, torch.float32).name == small_heads_kernel  # head dim 16


def test_preflight_resolves_the_kernel_and_says_so_in_one_line(caplog, small_heads_kernel):
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import check_attention_kernel

    loaded = load_run_config(DEMO, ["model.attn_backend=auto"])
    with caplog.at_level(logging.INFO, logger="flexbert.train.builder"):
        name = check_attention_kernel(loaded.cfg, loaded.model_cfg, "cpu")
    mcfg = loaded.model_cfg
    assert name == (small_heads_kernel if mcfg.head_dim <= 16 else "sdpa")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention: ")]
    assert lines == [f"attention: {name} (model.attn_backend auto) on cpu float32, head dim {mcfg.head_dim}, "
                     f"global + window {mcfg.window} layers, dropout 0"]


def test_preflight_refuses_a_named_kernel_that_cannot_run_before_any_data_is_read(tmp_path, small_heads_kernel):
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import preflight

    # data.local points nowhere: the kernel refusal must come first, so no data was looked at
    loaded = load_run_config(DEMO, [f"model.attn_backend={small_heads_kernel}",
                                                 f"data.local={tmp_path / 'no-such-data'}"])
    with pytest.raises(ConfigError, match=r"attention kernel 'small_heads_only' at model.attn_backend cannot run on cpu"):
        preflight(loaded, world_size=1)


def test_dry_run_names_the_kernel_of_this_machine(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", Path(__file__).resolve().parent.parent / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([DEMO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    expected = "sdpa" if not torch.cuda.is_available() else None
    line = next(line for line in out.splitlines() if line.startswith("attention kernel on this machine: "))
    if expected:
        assert line == f"attention kernel on this machine: {expected} (model.attn_backend auto)"


def test_attention_kernel_base_reason_takes_a_head_dim():
    assert AttentionKernel().unavailable_reason(CPU, torch.float32, head_dim=4096) is None
