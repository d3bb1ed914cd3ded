"""A block owns its facts: parameter counts, FLOPs, init and tiling come from the built blocks.

Each contract below runs for every registered MLP, norm and attention variant, and for a
throwaway MLP and norm registered here, in this file only: adding a block needs no edit of the
counting, FLOPs, init, tiling or optimizer code.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from flexbert.model import FlexBertForMaskedLM
from flexbert.model.norms import is_norm
from flexbert.model.registries import ATTENTIONS, MLPS, NORMS
from flexbert.train.flops import count_params, flops_per_token
from flexbert.train.optim import param_roles
from flexbert.train.tiling import tile_weights

sys.path.insert(0, str(Path(__file__).parent))
from test_model_blocks import check_variant_contract  # noqa: E402

T, MASK_EVERY = 40, 4  # one document of 40 tokens, every 4th token labelled


# --- two throwaway blocks, registered only for the tests that ask for them --------------------------------
class Relu2MLP(nn.Module):
    """Squared-ReLU feed-forward: Wo(relu(Wi x)^2)."""

    init_roles = {"Wi": "in", "Wo": "out"}

    def __init__(self, config):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x):
        return self.Wo(torch.relu(self.Wi(x)).square())


class RootMeanNorm(nn.Module):
    """An RMS norm written by hand, with its own init rule (weight = 1) in reset_parameters."""

    def __init__(self, config):
        super().__init__()
        self.eps = config.norm_eps
        self.weight = nn.Parameter(torch.empty(config.hidden_size))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.ones_(self.weight)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


@pytest.fixture
def throwaway_blocks(monkeypatch):
    monkeypatch.setitem(MLPS._items, "relu2", Relu2MLP)
    monkeypatch.setitem(NORMS._items, "root_mean", RootMeanNorm)


VARIANTS = ([{"mlp": m} for m in MLPS.names()] + [{"norm": n} for n in NORMS.names()]
            + [{"attention": a} for a in ATTENTIONS.names()])
THROWAWAY = [{"mlp": "relu2"}, {"norm": "root_mean"}, {"mlp": "relu2", "norm": "root_mean"}]


def _config(make_config, **block):
    # All layers global, so that every token's attention context is the whole document (what the
    # FLOPs formula counts) and the eager kernel computes exactly that.
    return make_config(**block, global_attn_every_n_layers=1, attn_backend="eager", mlm_loss="dense")


# --- the contracts --------------------------------------------------------------------------------------
def check_param_counts(cfg):
    model = FlexBertForMaskedLM(cfg)
    counts = count_params(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embeddings"] == sum(p.numel() for p in model.model.embeddings.parameters())


def check_flops_against_a_measured_count(cfg):
    """torch's FLOP counter over one training step equals our FLOPs per token, less what it does not count.

    The counter sees matrix products only; the formula also counts 2 FLOPs per token for every norm
    weight and bias (a multiply-add each), so those are taken off: found from the blocks' own roles.
    """
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(cfg).train()
    ids = torch.randint(5, cfg.vocab_size, (T,))
    labels = torch.full((T,), -100)
    labels[::MASK_EVERY] = ids[::MASK_EVERY]
    with FlopCounterMode(display=False) as counter:
        out = model(ids, labels=labels, cu_seqlens=torch.tensor([0, T], dtype=torch.int32), max_seqlen=T)
        out.loss.backward()
    masked = int((labels != -100).sum())
    not_matmul = {"encoder": 0, "head": 0}
    for info in param_roles(model):
        if info.roles & {"norm", "bias"} and not info.name.startswith("model.embeddings."):
            not_matmul["encoder" if info.name.startswith("model.") else "head"] += info.param.numel()
    expected = (flops_per_token(cfg, T, masked / T) * T
                - 6 * (not_matmul["encoder"] * T + not_matmul["head"] * masked))
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def check_init(cfg):
    """Every matrix is initialised by a declared role, every norm by its own reset: none keeps torch's default."""
    model = FlexBertForMaskedLM(cfg)
    covered = set()
    for module in model.modules():
        for child_name in getattr(module, "init_roles", {}):
            child = getattr(module, child_name, None)
            if child is not None:
                covered.add(id(child.weight))
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            assert id(module.weight) in covered, f"{name} ({type(module).__name__}) has no init role"
        if is_norm(module) and getattr(module, "weight", None) is not None:
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name


def check_tiling(cfg, make_config, block):
    """A small model of the block tiles into a larger one that loads strictly and keeps the source at its centre."""
    small = FlexBertForMaskedLM(cfg)
    large_cfg = _config(make_config, **block, hidden_size=48, intermediate_size=96, num_attention_heads=6,
                        num_hidden_layers=4)
    large = FlexBertForMaskedLM(large_cfg)
    shapes = {k: tuple(v.shape) for k, v in large.state_dict().items()}
    tiled = tile_weights(small.state_dict(), cfg, large_cfg, large_names=shapes)
    if large_cfg.tie_word_embeddings:
        tiled.pop("decoder.weight", None)
    large.load_state_dict(tiled, strict=False)
    missing = set(shapes) - set(tiled) - {"decoder.weight"}
    assert not missing, missing
    for name, t in small.state_dict().items():
        if t.dim() == 1 and t.shape[0] == cfg.hidden_size and "Wqkv" not in name:
            lo = (large_cfg.hidden_size - cfg.hidden_size) // 2
            assert torch.equal(tiled[name][lo:lo + cfg.hidden_size], t), name


@pytest.mark.parametrize("block", VARIANTS, ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_registered_blocks_give_their_own_facts(block, make_config, make_docs):
    cfg = _config(make_config, **block)
    check_param_counts(cfg)
    check_flops_against_a_measured_count(cfg)
    check_init(cfg)
    check_tiling(cfg, make_config, block)


@pytest.mark.parametrize("block", THROWAWAY, ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_a_new_block_registered_in_one_place_gets_every_fact(block, make_config, make_docs, throwaway_blocks):
    cfg = _config(make_config, **block)
    check_param_counts(cfg)
    check_flops_against_a_measured_count(cfg)
    check_init(cfg)
    check_tiling(cfg, make_config, block)
    check_variant_contract(make_config(**block, attn_backend="sdpa", max_position_embeddings=64), make_docs)


def test_a_new_norm_is_a_norm_for_the_optimizer(make_config, throwaway_blocks):
    model = FlexBertForMaskedLM(make_config(norm="root_mean"))
    roles = {info.name: info.roles for info in param_roles(model)}
    assert "norm" in roles["model.final_norm.weight"]
    assert "norm" not in roles["model.layers.0.mlp.Wi.weight"]
