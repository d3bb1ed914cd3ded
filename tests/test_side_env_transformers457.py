"""A FlexBERT export loads in transformers 4.57, the last v4 release, as the model FlexBERT trained.

Why a side environment: the main environment runs transformers 5, but 4.57 is still what many
users and pinned downstream stacks load our folders with, and the two cannot be installed side by
side. 4.57's ModernBERT reads only the v4 keys (`global_attn_every_n_layers`, `global_rope_theta`,
`local_rope_theta`); 5.x reads `layer_types` and `rope_parameters`. The exporter writes both
generations, and this test checks that 4.57 ignores the v5 keys and builds the same model: same
tokens from the exported tokenizer, same layer layout and thetas, same logits with eager and sdpa
attention as FlexBERT and as transformers 5 in the main environment. The 4.57 side runs in a
subprocess on docker/side_envs.sh's `transformers457` folder (see docs/side_envs.md).
"""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from _side_env import run_in_side_env  # noqa: E402
from test_export_helpers import TOL, flex_logits, hf_logits, max_diff_real, random_model, tiny_config  # noqa: E402

CORPUS = ["the quick brown fox jumps over the lazy dog",
          "a packed row holds several documents of different lengths",
          "sliding window attention sees a few tokens on each side"] * 10
# Tokenized, the first is several windows long, the second shorter than every window: local layers,
# their theta and padding all matter.
TEXTS = ["the quick brown fox jumps over the lazy dog while a packed row holds several documents of "
         "different lengths and sliding window attention sees a few tokens on each side",
         "fox",
         "several documents of different lengths"]
CASES = {
    # tiny_config: layers global, local, global (period 2); window 8; the recipe's thetas 160k / 10k,
    # which are also HF's defaults.
    "period2-window8": dict(),
    # Period 4 over 5 layers (global 0 and 4), window 6 (3 keys each side), thetas HF never
    # defaults to: a reader that ignores our keys gets different logits.
    "period4-window6-theta1000-50": dict(num_hidden_layers=5, global_attn_every_n_layers=4, local_attention=6,
                                         global_rope_theta=1000.0, local_rope_theta=50.0),
}
IMPLS = ["eager", "sdpa"]


def load_in_transformers457(folders: dict, texts: list, impls: list) -> dict:
    """(Runs in the side env.) Per folder: 4.57's tokens, layer layout, loading report and logits."""
    import torch
    from transformers import AutoTokenizer, ModernBertForMaskedLM

    out = {}
    for case, folder in folders.items():
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        enc = tok(texts, padding=True, return_tensors="pt")
        res = {"input_ids": enc["input_ids"].tolist()}
        for impl in impls:
            model, info = ModernBertForMaskedLM.from_pretrained(folder, attn_implementation=impl,
                                                                local_files_only=True, output_loading_info=True)
            model.eval()
            with torch.no_grad():
                logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            res[impl] = {"attn_implementation": model.config._attn_implementation, "logits": logits.tolist(),
                         "loading_info": {k: sorted(map(str, v)) for k, v in info.items()}}
        # Per layer, as 4.57 built it: (keys each side, -1 for global) and the RoPE theta behind inv_freq.
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        res["layers"] = [[layer.attn.local_attention[0], layer.attn.rotary_emb.inv_freq[1].item() ** (-head_dim / 2)]
                         for layer in model.model.layers]
        out[case] = res
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export every case with FlexBERT's own tokenizer, then load all of them once in transformers 4.57."""
    from transformers import AutoTokenizer

    from flexbert.data.tokenizer import train_tokenizer
    from flexbert.export import save_hf

    root = tmp_path_factory.mktemp("t457")
    info = train_tokenizer(CORPUS, vocab_size=300, output=root / "tok", show_progress=False)
    cases = {}
    for i, (case, overrides) in enumerate(CASES.items()):
        cfg = tiny_config(vocab_size=info.vocab_size, pad_token_id=info.pad_id, cls_token_id=info.cls_id,
                          sep_token_id=info.sep_id, mask_token_id=info.mask_id, **overrides)
        model = random_model(cfg, seed=i)
        # The first case copies the tokenizer folder; the second saves a transformers 5 tokenizer object,
        # whose own tokenizer_config.json would name a class (TokenizersBackend) that 4.57 cannot resolve.
        tokenizer = root / "tok" if i == 0 else AutoTokenizer.from_pretrained(str(root / "tok"), local_files_only=True)
        save_hf(model, root / case, tokenizer=tokenizer)
        enc = AutoTokenizer.from_pretrained(str(root / case), local_files_only=True)(TEXTS, padding=True,
                                                                                      return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        cases[case] = dict(folder=root / case, cfg=cfg, ids=ids, mask=mask, flex=flex_logits(model, ids, mask))
    side = run_in_side_env("transformers457", load_in_transformers457, {"transformers": "4.57."},
                           folders={c: str(v["folder"]) for c, v in cases.items()}, texts=TEXTS, impls=IMPLS)
    for case, v in cases.items():
        v["side"] = side[case]
    return cases


@pytest.mark.parametrize("case", CASES)
def test_folder_holds_both_config_generations(exported, case):
    """The premise of this file: 4.57's keys and 5.x's keys are both in config.json."""
    hf = json.loads((exported[case]["folder"] / "config.json").read_text())
    cfg = exported[case]["cfg"]
    assert (hf["global_attn_every_n_layers"], hf["global_rope_theta"], hf["local_rope_theta"]) == (
        cfg.global_attn_every_n_layers, cfg.global_rope_theta, cfg.local_rope_theta)
    assert {"layer_types", "rope_parameters"} <= set(hf)


@pytest.mark.parametrize("case", CASES)
def test_tokenizer_gives_the_same_ids(exported, case):
    """4.57's AutoTokenizer reads the exported tokenizer files and encodes exactly as the main env does."""
    e = exported[case]
    assert e["side"]["input_ids"] == e["ids"].tolist()
    lengths = e["mask"].sum(1)
    assert lengths.max() > 2 * e["cfg"].local_attention > lengths.min()


@pytest.mark.parametrize("case", CASES)
def test_layer_layout_and_thetas(exported, case):
    """Layer i is global iff i % period == 0; local layers see local_attention / 2 keys each side; thetas are ours."""
    cfg = exported[case]["cfg"]
    expected = [[-1, cfg.global_rope_theta] if i % cfg.global_attn_every_n_layers == 0
                else [cfg.local_attention // 2, cfg.local_rope_theta] for i in range(cfg.num_hidden_layers)]
    got = exported[case]["side"]["layers"]
    assert [w for w, _ in got] == [w for w, _ in expected]
    assert [t for _, t in got] == pytest.approx([t for _, t in expected], rel=1e-3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_logits_equal_flexbert(exported, case, impl):
    """Every weight is used as saved (nothing missing or re-initialised) and the logits are FlexBERT's."""
    e = exported[case]
    side = e["side"][impl]
    assert side["attn_implementation"] == impl
    assert not any(side["loading_info"].values()), side["loading_info"]
    theirs = torch.tensor(side["logits"])
    assert theirs.shape == e["flex"].shape
    assert e["flex"][e["mask"].bool()].abs().max() > 0.5  # a real comparison, not zeros against zeros
    assert max_diff_real(e["flex"], theirs, e["mask"]) <= TOL


@pytest.mark.parametrize("case", CASES)
def test_transformers5_reads_the_same_model(exported, case):
    """The same folder in the main environment's transformers 5 gives 4.57's logits: one model, two readers."""
    e = exported[case]
    v5 = hf_logits(e["folder"], e["ids"], e["mask"], "sdpa")
    assert max_diff_real(v5, torch.tensor(e["side"]["sdpa"]["logits"]), e["mask"]) <= TOL
