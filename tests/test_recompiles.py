"""torch.compile of the model settles after warm-up: batches of a fixed token budget (pad_to_budget)
with different document counts and lengths add no compiled graph once a few have been seen.

On CUDA with the shipped training kernel (torch_flash, bf16 autocast) this is what "fast by default"
relies on (bench/gpu_session.sh runs it: ONLY=issue15). On CPU the `sdpa` kernel plans its layout per
batch on the host (document count and lengths), so dynamo recompiles for new batch shapes there
(measured 2026-12-08 with this file's helper on CPU: 18, 28, 31 graphs after steps 1-3); CPU compile is
checked for correctness, not for settling, in tests/test_compile_cpu.py.
"""
from __future__ import annotations

import pytest
import torch

from flexbert.config.model import FlexBertConfig
from flexbert.model.masked_lm import FlexBertForMaskedLM

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            global_attn_every_n_layers=2, local_attention=16, pad_token_id=0, cls_token_id=1, sep_token_id=2,
            mask_token_id=3)
BUDGET = 256  # tokens per batch, as pad_to_budget makes them


def _batches(n: int, device: str, seed: int = 0):
    """n packed batches of BUDGET tokens, 2-6 documents of random lengths each (what the packer gives)."""
    g = torch.Generator().manual_seed(seed)
    for step in range(n):
        cuts = sorted((torch.randperm(BUDGET - 1, generator=g)[: 1 + step % 5] + 1).tolist())
        cu = torch.tensor([0] + cuts + [BUDGET], dtype=torch.int32)
        ids = torch.randint(5, 256, (BUDGET,), generator=g)
        labels = torch.where(torch.rand(BUDGET, generator=g) < 0.3, ids, -100)
        pos = torch.cat([torch.arange(b - a) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])
        yield dict(input_ids=ids.to(device), labels=labels.to(device), cu_seqlens=cu.to(device),
                   max_seqlen=int((cu[1:] - cu[:-1]).max()), position_ids=pos.to(device))


def _graphs_per_step(device: str, kernel: str, steps: int, dtype: torch.dtype | None) -> list[int]:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.compile(FlexBertForMaskedLM(FlexBertConfig(**TINY, attn_backend=kernel)).to(device).train())
    seen = []
    for batch in _batches(steps, device):
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            out = model(**batch)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        seen.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    return seen


@pytest.mark.gpu
def test_compiled_model_settles_after_warmup_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    seen = _graphs_per_step("cuda", "torch_flash", steps=12, dtype=torch.bfloat16)
    print("compiled graphs after each step:", seen)
    assert seen[-1] == seen[5], f"recompiled after warm-up: graphs after each step {seen}"
