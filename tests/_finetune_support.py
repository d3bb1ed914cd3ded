"""Helpers for the fine-tuning tests: a tiny offline corpus, tokenizer, model and checkpoints.

Nothing is downloaded: code comes from the standard library's .py files, prose from the
pydoc topics shipped with Python (the demo corpus's sources, a few documents of each).
"""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import torch

from flexbert.config.model import FlexBertConfig

# Our trained tokenizers put [UNK] [CLS] [SEP] [PAD] [MASK] at ids 0..4.
TINY_MODEL = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  global_attn_every_n_layers=2, local_attention=16, attn_out_dropout=0.0,
                  pad_token_id=3, cls_token_id=1, sep_token_id=2, mask_token_id=4)

_CODE_FILES = ("argparse.py", "textwrap.py", "shlex.py", "fractions.py", "string.py", "glob.py", "fnmatch.py",
               "bisect.py", "heapq.py", "colorsys.py", "calendar.py", "difflib.py", "pprint.py", "copy.py",
               "abc.py", "numbers.py", "quopri.py", "sched.py", "tabnanny.py", "keyword.py", "linecache.py",
               "operator.py", "queue.py", "reprlib.py", "statistics.py", "struct.py", "timeit.py", "wave.py",
               "netrc.py", "mailcap.py", "token.py", "getopt.py", "dataclasses.py", "functools.py", "random.py",
               "enum.py", "csv.py", "base64.py", "gettext.py", "ipaddress.py")


def tiny_config(**overrides) -> FlexBertConfig:
    return FlexBertConfig(**{**TINY_MODEL, **overrides})


def tiny_corpus_records(n_per_class: int = 30) -> list[dict]:
    """Up to `n_per_class` code files and prose topics, as demo-corpus records (text, source, origin)."""
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = []
    for name in _CODE_FILES:
        path = stdlib / name
        if path.is_file():
            code.append({"text": path.read_text(encoding="utf-8")[:12000], "source": "code", "origin": f"stdlib:{name}"})
    prose = [{"text": text.strip()[:12000], "source": "prose", "origin": f"pydoc:{key}"}
             for key, text in sorted(topics.items()) if len(text) > 2000]
    return code[:n_per_class] + prose[:n_per_class]


def write_corpus(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def train_tiny_tokenizer(out: Path, texts: list[str]):
    from flexbert.data.tokenizer import train_tokenizer

    return train_tokenizer(texts, vocab_size=512, output=out, show_progress=False)


def random_mlm(seed: int = 0, **overrides) -> torch.nn.Module:
    from flexbert.model import FlexBertForMaskedLM

    torch.manual_seed(seed)
    return FlexBertForMaskedLM(tiny_config(**overrides)).eval()


def write_config_yaml(folder: Path, model: torch.nn.Module, tokenizer: str | None = None) -> Path:
    """A run-style config.yaml (a `model:` section, like the trainer writes beside checkpoints)."""
    import dataclasses

    from omegaconf import OmegaConf

    data = {"model": dataclasses.asdict(model.config)}
    if tokenizer is not None:
        data["tokenizer"] = tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    return folder / "config.yaml"


def save_flexbert_folder(model: torch.nn.Module, folder: Path) -> Path:
    """model.safetensors (FlexBERT names, tied decoder left out) + config.yaml, written here by hand."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != "decoder.weight"}
    write_config_yaml(folder, model)
    save_file(sd, str(folder / "model.safetensors"))
    return folder


def save_composer_checkpoint(model: torch.nn.Module, folder: Path, tokenizer: str | None = None) -> Path:
    """A Composer-style checkpoint dict: {'state': {'model': {'model.' + name: tensor}}} + config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"state": {"model": {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}}}
    torch.save(state, folder / "ep1-ba10-rank0.pt")
    write_config_yaml(folder, model, tokenizer)
    return folder / "ep1-ba10-rank0.pt"
