"""The export CLI on Composer-style checkpoints, atomic writes, tokenizer files, --from-hf."""
from __future__ import annotations

import dataclasses
import datetime
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("transformers")

from test_export_helpers import (  # noqa: E402
    CLS, MASK, PAD, SEP, TOL, flex_logits, hf_logits, max_diff_real, padded_batch, random_model, tiny_config,
)

from flexbert.export import TOKENIZER_FILES, ExportError, save_hf  # noqa: E402
from flexbert.export.__main__ import main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def composer_checkpoint(model, path: Path, prefix: str = "model.") -> None:
    """Save a dict shaped like a Composer checkpoint: wrapper-prefixed weights, timestamp, RNG state."""
    state = {
        "model": {prefix + k: v for k, v in model.state_dict().items()},
        "optimizers": {"StableAdamW": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}},
        "timestamp": {"batch": 7, "token": 1234, "total_wct": datetime.timedelta(seconds=12.5)},
        "run_name": "tiny",
        "rank_zero_seed": 17,
    }
    rng = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}]
    torch.save({"state": state, "rng": rng}, path)


def run_yaml(cfg, path: Path) -> None:
    """A resolved run config (the training writes one beside checkpoints): only `model:` matters here."""
    path.write_text(yaml.safe_dump({"run_name": "tiny", "model": dataclasses.asdict(cfg)}))


def tiny_tokenizer(folder: Path, vocab: int = 101, mask_token: str = "[MASK]"):
    """A tiny BPE tokenizer with [PAD]=0 [CLS]=1 [SEP]=2 [MASK]=3, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[CLS]", "[SEP]", mask_token, "[UNK]"]
    trainer = trainers.BpeTrainer(vocab_size=vocab - 20, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token=mask_token, unk_token="[UNK]")
    fast.save_pretrained(str(folder))
    return fast


@pytest.mark.parametrize("prefix", ["model.", "module.model.", "model._orig_mod."])
def test_cli_composer_checkpoint_end_to_end(tmp_path, prefix, capsys):
    cfg = tiny_config(num_hidden_layers=3, local_attention=6)
    model = random_model(cfg, seed=5)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    composer_checkpoint(model, run / "checkpoints" / "ep0-ba7-rank0.pt", prefix)
    run_yaml(cfg, run / "config.yaml")  # found one folder up from the checkpoint
    out = tmp_path / "hf"
    assert main([str(run / "checkpoints" / "ep0-ba7-rank0.pt"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "config.json" in printed and "model.safetensors" in printed
    ids, mask = padded_batch(cfg.vocab_size, [40, 17, 29], seed=4)
    assert max_diff_real(flex_logits(model, ids, mask), hf_logits(out, ids, mask, "sdpa"), mask) <= TOL


def test_cli_config_flag_and_model_only_yaml(tmp_path):
    cfg = tiny_config()
    model = random_model(cfg)
    composer_checkpoint(model, tmp_path / "c.pt")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))  # model-only YAML
    assert main([str(tmp_path / "c.pt"), str(tmp_path / "hf"), "--config", str(tmp_path / "m.yaml")]) == 0


def test_cli_missing_config_says_what_to_do(tmp_path, capsys):
    composer_checkpoint(random_model(tiny_config()), tmp_path / "c.pt")
    assert main([str(tmp_path / "c.pt"), str(tmp_path / "hf")]) == 2
    assert "--config" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


class CustomCallbackState:
    """An arbitrary pickled object: loading it would import and run code named by the file."""


def test_cli_unsafe_pickle_refused(tmp_path, capsys):
    cfg = tiny_config()
    run_yaml(cfg, tmp_path / "config.yaml")
    torch.save({"state": {"model": {}, "callbacks": {"x": CustomCallbackState()}}}, tmp_path / "c.pt")
    assert main([str(tmp_path / "c.pt"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "refusing" in err and "CustomCallbackState" in err and str(tmp_path / "c.pt") in err
    assert "weights_only=False" not in err  # never advise running the file


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_hf(random_model(tiny_config()), tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []  # no out_dir, no temp folder


def test_overwrite_rules(tmp_path):
    model = random_model(tiny_config())
    out = tmp_path / "hf"
    out.mkdir()
    save_hf(model, out)  # an empty folder is fine
    from flexbert.outputs import OutputError

    with pytest.raises(OutputError, match="overwrite"):
        save_hf(model, out)
    (out / "stale.txt").write_text("old")
    save_hf(model, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_tokenizer_files_copied_and_checked(tmp_path):
    from transformers import AutoTokenizer

    tiny_tokenizer(tmp_path / "tok")
    model = random_model(tiny_config())
    written = save_hf(model, tmp_path / "hf", tokenizer=tmp_path / "tok")
    # transformers 5's save_pretrained keeps the special tokens in tokenizer_config.json and writes
    # no special_tokens_map.json; whatever the source folder has is copied.
    source_files = sorted(p.name for p in (tmp_path / "tok").iterdir())
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(source_files)
    assert sorted(n for n in written if n in TOKENIZER_FILES) == source_files
    for name in set(source_files) - {"tokenizer_config.json"}:
        assert (tmp_path / "hf" / name).read_bytes() == (tmp_path / "tok" / name).read_bytes()
    # ... and tokenizer_config.json names a class transformers 4.x resolves too (5.x wrote its own name)
    source_config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    written_config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert source_config["tokenizer_class"] == "TokenizersBackend"
    assert written_config == {**source_config, "tokenizer_class": "PreTrainedTokenizerFast"}
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (PAD, CLS, SEP, MASK)


def test_tokenizer_mismatch_refused(tmp_path):
    tiny_tokenizer(tmp_path / "tok")
    model = random_model(tiny_config(mask_token_id=7))
    with pytest.raises(ExportError, match="mask_token_id"):
        save_hf(model, tmp_path / "hf", tokenizer=tmp_path / "tok")
    small = random_model(tiny_config(vocab_size=40))
    with pytest.raises(ExportError, match="vocab_size"):
        save_hf(small, tmp_path / "hf2", tokenizer=tmp_path / "tok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_from_hf_then_export_back(tmp_path):
    """HF folder -> FlexBERT folder (--from-hf) -> HF folder (CLI on the folder): same weights."""
    from safetensors.torch import load_file

    model = random_model(tiny_config(hidden_activation="silu"))
    save_hf(model, tmp_path / "hf")
    assert main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "flex")]) == 0
    assert (tmp_path / "flex" / "config.yaml").is_file()
    assert main([str(tmp_path / "flex"), str(tmp_path / "hf2")]) == 0
    a = load_file(str(tmp_path / "hf" / "model.safetensors"))
    b = load_file(str(tmp_path / "hf2" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_python_dash_m(tmp_path):
    """The module entry point runs as a real process (argument parsing, exit code)."""
    res = subprocess.run([sys.executable, "-m", "flexbert.export", "--help"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and "--from-hf" in res.stdout
