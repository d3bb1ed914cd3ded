"""Fine-tuning evaluation: a pretrained FlexBERT checkpoint -> sequence classification / regression.

    python -m flexbert.finetune --checkpoint CKPT --train train.jsonl --validation val.jsonl [--test test.jsonl]

API: `FinetuneConfig` (config.py), `finetune(cfg) -> results dict` (run.py),
`load_pretrained` / `build_classifier` (model_loading.py), data reading in data.py,
`build_prose_vs_code` (tasks.py). Composer is imported only when training starts.
See docs/finetune.md.
"""
from flexbert.finetune.config import FinetuneConfig

__all__ = ["FinetuneConfig", "finetune"]


def finetune(cfg: FinetuneConfig) -> dict:
    """Run one fine-tuning job (see flexbert.finetune.run.finetune)."""
    from flexbert.finetune.run import finetune as _finetune  # import cost: Composer loads only when a fine-tuning run starts

    return _finetune(cfg)
