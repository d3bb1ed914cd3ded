"""The tiny three-phase recipe chained with init_from: 1024 tokens -> 8192 with a new RoPE theta -> decay."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _train_support import REPO, make_corpus
from flexbert.config.loading import load_run_config
from flexbert.train.builder import build_trainer, finish_run

pytestmark = pytest.mark.slow


def _attn_thetas(model) -> list[float]:
    return [m.rope_theta for m in model.modules() if hasattr(m, "rope_theta")]


def test_three_tiny_phases_chain_with_a_theta_change(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    corpus = make_corpus(tmp_path / "corpus", n_train=300, n_val=10)
    data = [f"data.local={corpus}", "data.split=train"]
    runs = {}
    prev = None
    for phase in ("1-pretrain", "2-context-extension", "3-decay"):
        over = data + [f"save_folder={tmp_path / phase}"]
        if prev is not None:
            over.append(f"init_from.path={tmp_path / prev / 'latest-rank0.pt'}")
        loaded = load_run_config(str(REPO / "yamls" / "tiny" / f"{phase}.yaml"), over)
        run = build_trainer(loaded)
        if prev is not None:  # weights really come from the previous phase
            before = torch.load(tmp_path / prev / "latest-rank0.pt", map_location="cpu", weights_only=False)
            name = "model.embeddings.tok_embeddings.weight"  # FlexBertForMaskedLM name; Composer adds "model."
            mine = dict(run.composer_model.model.named_parameters())[name].detach()
            assert torch.equal(mine, before["state"]["model"]["model." + name])
            assert int(run.trainer.state.timestamp.batch) == 0  # time reset: a new phase
        run.trainer.fit()
        finish_run(run)
        runs[phase] = run
        prev = phase

    p1, p2, p3 = (runs[k].composer_model.model for k in ("1-pretrain", "2-context-extension", "3-decay"))
    assert set(_attn_thetas(p1)) == {10000.0}
    assert sorted(set(_attn_thetas(p2))) == [10000.0, 160000.0]  # global layers moved to 160k
    assert runs["2-context-extension"].loaded.cfg.data.max_seq_len == 8192
    assert p2.config.max_position_embeddings == 8192
    # phase 2 really saw 8192-token rows
    stats = runs["2-context-extension"].train_loader.stats()
    assert stats["num_tokens"] > 1024
    assert sorted(set(_attn_thetas(p3))) == [10000.0, 160000.0]
    assert (tmp_path / "3-decay" / "config.yaml").is_file()
