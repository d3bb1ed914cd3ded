"""Let `python data_prep/X.py` work from a checkout without `pip install -e .`: the repository
root goes on sys.path. The commands themselves live in flexbert/data/cli/."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
