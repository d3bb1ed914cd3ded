"""Callbacks driven by a real Composer Trainer on a tiny model, on CPU, for a few batches."""
import copy
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from composer import Trainer
from composer.core import Callback, DataSpec
from composer.loggers import InMemoryLogger
from composer.models import ComposerModel
from torch import nn
from torch.utils.data import DataLoader

from flexbert.config.optim import OptimizerConfig
from flexbert.config.strict import ConfigError
from flexbert.train.builder import DEFAULT_CALLBACKS
from flexbert.train.callbacks import (CALLBACKS, BatchStats, GradNorm, HFExport, Memory, NaNGuard, NonFiniteLossError,
                                      ReleaseGrads, ThroughputMFU, build_callback)
from flexbert.train.optim import build_optimizer

ROWS, SEQ = 4, 8  # 4 packing rows of 8 token slots per batch


class PackedModel(ComposerModel):
    """Embeds a packed batch and regresses each token's embedding onto a fixed target.

    `nan_at` lists training batch indices whose loss is multiplied by NaN.
    """

    def __init__(self, nan_at=()):
        super().__init__()
        self.inner = nn.Sequential(nn.Embedding(32, 6), nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 1))
        self.nan_at = set(nan_at)
        self.batch_index = -1

    def forward(self, batch):
        return self.inner(batch["input_ids"]).squeeze(-1)

    def loss(self, outputs, batch):
        loss = F.mse_loss(outputs, batch["target"])
        return loss * float("nan") if self.batch_index in self.nan_at else loss


class CountBatches(Callback):
    """Tell the model which batch runs, and keep a copy of the weights after every batch."""

    def __init__(self):
        self.weights = []

    def batch_start(self, state, logger):
        state.model.batch_index = state.timestamp.batch.value

    def batch_end(self, state, logger):
        self.weights.append(copy.deepcopy(state.model.inner.state_dict()))


class StatsLoader(DataLoader):
    """A train loader exposing stats(), as FlexBERT's packed loader does."""

    def stats(self):
        return {"max_seq_len": SEQ, "mlm_probability": 0.3, "note": "not a number: ignored"}


def packed_batches(n=6):
    """Batches of 4 rows; row r of batch b holds (b + r) % 3 + 1 documents of 2 tokens each."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in range(n):
        lengths = [2] * sum((b + r) % 3 + 1 for r in range(ROWS))
        T = sum(lengths)
        docs_per_row = [(b + r) % 3 + 1 for r in range(ROWS)]
        row_offsets = torch.tensor([0] + [2 * sum(docs_per_row[:r + 1]) for r in range(ROWS)])
        out.append({
            "input_ids": torch.randint(0, 32, (T,), generator=gen),
            "target": torch.randn(T, generator=gen),
            "cu_seqlens": torch.arange(0, T + 1, 2, dtype=torch.int32),
            "max_seqlen": 2,
            "row_offsets": row_offsets,
            "num_tokens": T,
        })
    return out


def data_spec(batches):
    loader = StatsLoader(batches, batch_size=None)
    return DataSpec(loader, get_num_samples_in_batch=lambda b: len(b["row_offsets"]) - 1,
                    get_num_tokens_in_batch=lambda b: b["num_tokens"], split_batch=lambda b, n: [b])


def fit(callbacks, n_batches=4, model=None, optimizer_cfg=None, **trainer_kw):
    model = model or PackedModel()
    torch.manual_seed(0)
    logger = InMemoryLogger()
    counter = CountBatches()
    trainer = Trainer(model=model, train_dataloader=data_spec(packed_batches()), max_duration=f"{n_batches}ba",
                      optimizers=build_optimizer(model, optimizer_cfg or OptimizerConfig(lr=1e-2)),
                      callbacks=[counter, *callbacks], loggers=[logger], device="cpu", progress_bar=False,
                      log_to_console=False, device_train_microbatch_size=ROWS, **trainer_kw)
    return trainer, logger, counter


def values(logger, key):
    return [v for _, v in logger.data.get(key, [])]


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# --- NaNGuard -------------------------------------------------------------------------------------------


def test_nan_guard_stop_raises_before_step_and_checkpoint(tmp_path):
    model = PackedModel(nan_at={2})
    trainer, _, counter = fit([NaNGuard(on_nan="stop")], model=model, save_folder=str(tmp_path),
                              save_interval="1ba", save_filename="ba{batch}.pt", save_latest_filename=None)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss or gradient at batch 2 .*before the optimizer step"):
        trainer.fit()
    # batches 0 and 1 ran and were checkpointed; batch 2 (NaN) never stepped nor was saved
    assert sorted(p.name for p in tmp_path.glob("ba*.pt")) == ["ba1.pt", "ba2.pt"]
    assert len(counter.weights) == 2 and same(model.inner.state_dict(), counter.weights[1])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_guard_skip_leaves_weights_and_moments_unchanged():
    model = PackedModel(nan_at={1})
    guard = NaNGuard(on_nan="skip")
    trainer, logger, counter = fit([guard], model=model)
    trainer.fit()
    w = counter.weights
    assert len(w) == 4
    assert same(w[1], w[0])  # the NaN batch changed nothing (no Adam momentum, no weight decay)
    assert not same(w[2], w[1]) and not same(w[3], w[2])  # training went on
    assert guard.skipped_steps == 1 and guard.consecutive == 0
    assert values(logger, "nan_guard/skipped_steps") == [1]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_guard_skip_gives_up_after_consecutive_bad_batches():
    trainer, _, counter = fit([NaNGuard(on_nan="skip", max_consecutive_skips=2)], model=PackedModel(nan_at={1, 2, 3}))
    with pytest.raises(NonFiniteLossError, match="2 consecutive batches"):
        trainer.fit()
    assert same(counter.weights[-1], counter.weights[0])


def test_nan_guard_rejects_unknown_mode():
    with pytest.raises(ValueError, match="choices: stop, skip"):
        NaNGuard(on_nan="ignore")


# --- GradNorm -------------------------------------------------------------------------------------------


def test_grad_norm_equals_hand_computed_full_batch_norm():
    model = PackedModel()
    initial = copy.deepcopy(model.inner)
    trainer, logger, _ = fit([GradNorm()], model=model, n_batches=3)
    trainer.fit()
    logged = values(logger, "grad_norm")
    assert len(logged) == 3
    # batch 0 with the initial weights, by hand: the L2 norm over all parameters' gradients
    batch = packed_batches()[0]
    loss = F.mse_loss(initial(batch["input_ids"]).squeeze(-1), batch["target"])
    grads = torch.autograd.grad(loss, list(initial.parameters()))
    expected = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    assert logged[0] == pytest.approx(expected, rel=1e-5)


def test_grad_norm_interval():
    trainer, logger, _ = fit([GradNorm(interval=2)], n_batches=4)
    trainer.fit()
    assert [ts.batch.value for ts, _ in logger.data["grad_norm"]] == [0, 2]


# --- ThroughputMFU --------------------------------------------------------------------------------------


def test_throughput_and_mfu_from_tokens():
    fpt, peak = 1000.0, 1e9
    trainer, logger, _ = fit([ThroughputMFU(window_size=2, flops_per_token=fpt, peak_flops=peak)], n_batches=4)
    trainer.fit()
    tok, sp = values(logger, "throughput/tokens_per_sec"), values(logger, "throughput/samples_per_sec")
    mfu = values(logger, "throughput/mfu")
    assert len(tok) == len(sp) == len(mfu) == 4 and all(v > 0 for v in tok + sp + mfu)
    tokens = [b["num_tokens"] for b in packed_batches()]
    # same window, same seconds: the ratio of tokens/s to samples/s is tokens per row in the window
    assert tok[0] / sp[0] == pytest.approx(tokens[0] / ROWS)
    assert tok[3] / sp[3] == pytest.approx(sum(tokens[2:4]) / (2 * ROWS))  # window of 2 batches
    for t, m in zip(tok, mfu):
        assert m == pytest.approx(t * fpt / peak)
    assert values(logger, "throughput/device/tokens_per_sec") == tok  # one rank


def test_throughput_without_peak_on_cpu_logs_no_mfu():
    trainer, logger, _ = fit([ThroughputMFU(flops_per_token=1000.0)], n_batches=2)
    trainer.fit()
    assert values(logger, "throughput/tokens_per_sec") and "throughput/mfu" not in logger.data


# --- BatchStats, Memory ---------------------------------------------------------------------------------


def test_batch_stats_reads_packed_batch_and_loader_stats():
    trainer, logger, _ = fit([BatchStats()], n_batches=3)
    trainer.fit()
    batches = packed_batches()
    assert values(logger, "batch/rows") == [4.0] * 3
    assert values(logger, "batch/num_tokens") == [float(b["num_tokens"]) for b in batches[:3]]
    assert values(logger, "batch/num_docs") == [b["num_tokens"] / 2 for b in batches[:3]]
    assert values(logger, "batch/max_doc_len") == [2.0] * 3
    assert values(logger, "batch/max_seq_len") == [float(SEQ)] * 3
    assert values(logger, "batch/mlm_probability") == [0.3] * 3
    assert values(logger, "batch/packing_efficiency") == [b["num_tokens"] / (ROWS * SEQ) for b in batches[:3]]
    assert "batch/note" not in logger.data


def test_memory_logs_rss_on_cpu():
    trainer, logger, _ = fit([Memory(interval=1)], n_batches=2)
    trainer.fit()
    rss, peak = values(logger, "memory/rss_gib"), values(logger, "memory/peak_rss_gib")
    assert len(rss) == 2 and all(0 < r <= p for r, p in zip(rss, peak))


# --- HFExport -------------------------------------------------------------------------------------------


@pytest.fixture
def fake_export(monkeypatch):
    calls = []
    module = types.ModuleType("flexbert.export")
    module.save_hf = lambda model, out_dir, tokenizer=None: calls.append((model, out_dir, tokenizer))
    monkeypatch.setitem(sys.modules, "flexbert.export", module)
    return calls


def test_hf_export_at_fit_end_under_checkpoint_folder(tmp_path, fake_export):
    model = PackedModel()
    trainer, _, _ = fit([HFExport(tokenizer="tok", every_n_batches=2)], model=model, n_batches=4,
                        save_folder=str(tmp_path / "ckpt"), save_interval="100ba")
    trainer.fit()
    assert [c[1] for c in fake_export] == [str(tmp_path / "ckpt" / "hf" / d) for d in ("ba2", "ba4", "final")]
    assert all(c[0] is model and c[2] == "tok" for c in fake_export)


# --- registry -------------------------------------------------------------------------------------------


def test_registry_builds_by_name_with_clear_errors():
    assert CALLBACKS.names() == ["batch_stats", "grad_norm", "hf_export", "long_context", "memory", "nan_guard",
                                 "progress", "release_grads", "throughput"]
    assert build_callback("grad_norm", {"interval": 5}).interval == 5
    with pytest.raises(ConfigError, match="did you mean 'grad_norm'"):
        build_callback("grad_nrom")
    with pytest.raises(ValueError, match="callbacks.memory: .*unexpected keyword"):
        build_callback("memory", {"every": 3})


# --- release_grads ----------------------------------------------------------------------------------------


def test_release_grads_drops_the_last_steps_gradients_when_evaluation_starts():
    """Evaluation after a step must not carry that step's gradients (memory; compile + FSDP re-trace)."""
    model = PackedModel()
    optimizer = build_optimizer(model, OptimizerConfig(lr=1e-2))
    batch = packed_batches(1)[0]
    model.loss(model(batch), batch).backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())  # what Composer leaves until the next batch
    ReleaseGrads().eval_start(types.SimpleNamespace(optimizers=[optimizer]), logger=None)
    assert all(p.grad is None for p in model.parameters())
    assert "release_grads" in DEFAULT_CALLBACKS
