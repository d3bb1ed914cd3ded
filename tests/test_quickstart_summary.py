"""The quickstart's closing summary, on a tiny exported model (the whole quickstart trains for minutes).

The export is a random tiny FlexBERT written by `save_hf` with a BPE tokenizer trained here;
the summary must name its folder, put held-out accuracy beside the baseline, show fill-mask
guesses the export really makes, and give three lines that load it with transformers alone.
"""
from __future__ import annotations

import os

import pytest
import torch

from flexbert.quickstart import HeldOut, fill_mask_examples, load_snippet, summary_text

transformers = pytest.importorskip("transformers")

TEXTS = [f"def read_{i}(self, name): return self.items[name] + {i}" for i in range(150)]
PROMPTS = ("def read({mask}, name):", "return {mask}.items")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> str:
    from flexbert.config.model import FlexBertConfig
    from flexbert.data.tokenizer import train_tokenizer
    from flexbert.export import save_hf
    from flexbert.model import FlexBertForMaskedLM

    root = tmp_path_factory.mktemp("qs")
    tok = train_tokenizer(TEXTS, 320, root / "tok", show_progress=False)
    cfg = FlexBertConfig(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                         local_attention=8, max_position_embeddings=64, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id,
                         sep_token_id=tok.sep_id, mask_token_id=tok.mask_id, attn_backend="sdpa")
    torch.manual_seed(0)
    save_hf(FlexBertForMaskedLM(cfg).eval(), root / "hf", tokenizer=str(root / "tok"))
    return str(root / "hf")


def test_fill_mask_examples_come_from_the_export(export_dir):
    examples = fill_mask_examples(export_dir, PROMPTS, top_k=3)
    assert [text for text, _ in examples] == [p.format(mask="[MASK]") for p in PROMPTS]
    for _, guesses in examples:
        assert len(guesses) == 3 and all(isinstance(t, str) and 0.0 <= s <= 1.0 for t, s in guesses)
        assert [s for _, s in guesses] == sorted((s for _, s in guesses), reverse=True)


def test_summary_names_the_folder_the_accuracy_the_examples_and_how_to_load_it(export_dir):
    examples = fill_mask_examples(export_dir, PROMPTS, top_k=2)
    text = summary_text(export_dir, HeldOut(accuracy=0.4125, baseline=0.0625, tokens=12345), examples)
    assert f"model (Hugging Face ModernBERT): {os.path.abspath(export_dir)}" in text
    assert "held-out MLM accuracy: 0.412 on 12,345 masked tokens (majority-token baseline: 0.062; 6.6x the baseline)" in text
    for prompt, guesses in examples:
        line = next(line for line in text.splitlines() if line.strip().startswith(repr(prompt)))
        assert all(repr(token) in line for token, _ in guesses), line
    snippet = load_snippet(export_dir)
    assert len(snippet.splitlines()) == 3 and "trust_remote_code" not in snippet
    assert all("  " + line in text for line in snippet.splitlines())
    assert "no baseline" in summary_text(export_dir, HeldOut(0.5, 0.0, 0), [])


def test_the_printed_snippet_loads_the_model_with_transformers_alone(export_dir):
    namespace: dict = {}
    exec(load_snippet(export_dir), namespace)  # exactly what the user copies
    assert type(namespace["model"]).__name__ == "ModernBertForMaskedLM"
    assert namespace["tokenizer"].mask_token == "[MASK]"
