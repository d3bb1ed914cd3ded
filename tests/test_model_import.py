"""`import flexbert` and building a model work without flash-attn, Composer or transformers."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_and_build_without_flash_attn():
    code = textwrap.dedent("""
        import sys
        sys.modules["flash_attn"] = None  # any `import flash_attn` now raises ImportError
        import torch
        from flexbert import FlexBertConfig, FlexBertForMaskedLM, FlexBertModel, build_model
        from flexbert import FlexBertForSequenceClassification, load_model_config
        heavy = sorted(m for m in ("composer", "transformers", "flash_attn", "triton", "streaming")
                       if sys.modules.get(m) is not None)
        assert not heavy, heavy
        model = build_model("yamls/models/tiny.yaml")
        out = model(torch.randint(4, 512, (2, 24)))
        assert out.logits.shape == (2, 24, 512), out.logits.shape
        print("ok")
    """)
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
