"""Optimizer: weight-decay groups by parameter role, and one hand-computed step per optimizer."""
import pytest
import torch
from torch import nn

from flexbert.config.optim import OptimizerConfig
from flexbert.config.strict import ConfigError, decode
from flexbert.train.optim import build_optimizer, describe_param_groups, param_groups, param_roles


class MyRMSNorm(nn.Module):
    """A custom norm: recognised as a norm because the norm registry builds it, not by its name."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


@pytest.fixture(autouse=True)
def my_rmsnorm_registered(monkeypatch):
    from flexbert.model.registries import NORMS

    monkeypatch.setitem(NORMS._items, "my_rmsnorm", lambda config: MyRMSNorm(config.hidden_size))


def built_norm(d):
    from types import SimpleNamespace

    from flexbert.model.norms import build_norm

    return build_norm(SimpleNamespace(norm="my_rmsnorm", hidden_size=d))


class Tiny(nn.Module):
    def __init__(self, vocab=11, d=4):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, d)
        self.norm = nn.LayerNorm(d)  # weight + bias
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.Wo = nn.Linear(d, d, bias=True)
        self.final_norm = built_norm(d)
        self.decoder = nn.Linear(d, vocab, bias=True)
        self.decoder.weight = self.tok_embeddings.weight  # tied
        self.frozen = nn.Parameter(torch.zeros(3), requires_grad=False)


def names(groups, model):
    by_id = {id(i.param): i.name for i in param_roles(model)}
    return {g["group_name"]: sorted(by_id[id(p)] for p in g["params"]) for g in groups}


def test_no_decay_groups_hold_exactly_norms_biases_embeddings():
    model = Tiny()
    got = names(param_groups(model, OptimizerConfig()), model)
    assert got == {
        "decay": ["Wo.weight", "Wqkv.weight"],
        "no_decay": ["Wo.bias", "decoder.bias", "final_norm.weight", "norm.bias", "norm.weight", "tok_embeddings.weight"],
    }
    # the tied decoder weight is the embedding tensor: listed once, frozen params never
    all_params = [p for g in param_groups(model, OptimizerConfig()) for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == 8


def test_a_norm_class_not_built_by_the_norm_registry_is_not_guessed_from_its_name():
    model = Tiny()
    model.final_norm = MyRMSNorm(4)  # same class, built directly: not a registered norm
    got = names(param_groups(model, OptimizerConfig()), model)
    assert "final_norm.weight" in got["decay"]


def test_embeddings_decay_when_not_exempt():
    model = Tiny()
    got = names(param_groups(model, OptimizerConfig(no_decay_for=["norm", "bias"])), model)
    assert got["decay"] == ["Wo.weight", "Wqkv.weight", "tok_embeddings.weight"]


def test_flexbert_model_groups(make_config):
    from flexbert.model import FlexBertForMaskedLM

    model = FlexBertForMaskedLM(make_config())
    groups = names(param_groups(model, OptimizerConfig()), model)
    for name in groups["no_decay"]:
        assert "norm" in name or name.endswith("bias") or name.endswith("tok_embeddings.weight"), name
    for name in groups["decay"]:
        assert "norm" not in name and not name.endswith("bias") and "embeddings" not in name, name
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    assert "decoder.bias" in groups["no_decay"]
    text = describe_param_groups(model, OptimizerConfig())
    assert "no_decay" in text and "decay" in text


def _one_step(cfg, lr_now=None, p0=(1.0, -2.0, 3.0), g=(0.1, 0.2, -0.3)):
    p = nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    model = nn.Module()
    model.w = p
    opt = build_optimizer(model, cfg)
    if lr_now is not None:  # what a scheduler does: overwrite the group lr
        for group in opt.param_groups:
            group["lr"] = lr_now
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    return opt, p.detach().clone()


P0, G = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64), torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:You are using weight_decay")  # optimi's hint; 1e-3 makes the decay visible
@pytest.mark.parametrize("name", ["stable_adamw", "adamw"])
@pytest.mark.parametrize("lr_now", [1e-1, 5e-2])
def test_first_step_decoupled_weight_decay(name, lr_now):
    # Step 1 of Adam: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps). StableAdamW's
    # RMS(g / sqrt(v)) is 1: no clipping. Decoupled decay: w *= 1 - wd * lr_now / lr_peak.
    wd, eps, peak = 1e-3, 1e-6, 1e-1
    cfg = OptimizerConfig(name=name, lr=peak, weight_decay=wd, eps=eps, no_decay_for=[])
    opt, p1 = _one_step(cfg, lr_now)
    expected = P0 * (1 - wd * lr_now / peak) - lr_now * G / (G.abs() + eps)
    torch.testing.assert_close(p1, expected, rtol=1e-12, atol=1e-12)
    if name == "stable_adamw":
        assert opt.param_groups[0]["triton"] is False  # CPU params: never optimi's Triton kernels


def test_coupled_weight_decay_scales_with_lr():
    wd, eps, lr = 1e-2, 1e-6, 1e-1
    cfg = OptimizerConfig(lr=lr, weight_decay=wd, eps=eps, decoupled_weight_decay=False, no_decay_for=[])
    _, p1 = _one_step(cfg)
    torch.testing.assert_close(p1, P0 * (1 - lr * wd) - lr * G / (G.abs() + eps), rtol=1e-12, atol=1e-12)


def test_stable_adamw_clips_a_spiking_update():
    # Step 2 with a gradient 100x larger: v_hat = b2h * g1^2 + (1 - b2h) * g2^2 with the debiased
    # b2h = b2 / (1 + b2); RMS(g2 / sqrt(v_hat)) > 1, so the step's lr is divided by it.
    b1, b2, eps, lr = 0.9, 0.98, 1e-6, 1e-2
    cfg = OptimizerConfig(lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.0, no_decay_for=[])
    opt, p1 = _one_step(cfg)
    w = opt.param_groups[0]["params"][0]
    g2 = 100 * G
    w.grad = g2.clone()
    opt.step()
    b1h, b2h = b1 / (1 + b1), b2 / (1 + b2)
    m = b1h * G + (1 - b1h) * g2
    v = b2h * G**2 + (1 - b2h) * g2**2
    rms = torch.sqrt((g2**2 / v).mean())
    assert rms > 1
    torch.testing.assert_close(w.detach(), p1 - (lr / rms) * m / (v.sqrt() + eps), rtol=1e-10, atol=1e-12)


def test_config_validation():
    with pytest.raises(ConfigError, match="gradient_clipping.*stable_adamw"):
        decode(OptimizerConfig, {"gradient_clipping": 1.0})
    assert decode(OptimizerConfig, {"name": "adamw", "gradient_clipping": 1.0}).gradient_clipping == 1.0
    with pytest.raises(ConfigError, match="no_decay_for has unknown role"):
        decode(OptimizerConfig, {"no_decay_for": ["norms"]})
    with pytest.raises(ConfigError, match="decoupled_weight_decay"):
        decode(OptimizerConfig, {"weight_decay": 0.1})
    with pytest.raises(ConfigError, match="betas"):
        decode(OptimizerConfig, {"betas": [0.9, 1.0]})
    assert decode(OptimizerConfig, {"weight_decay": 0.1, "decoupled_weight_decay": False}).weight_decay == 0.1
