#!/usr/bin/env bash
# Installs FlexBERT into the current Python environment (used by docker/Dockerfile).
# FLASH_ATTN=1 also builds the optional flash-attn kernels (needs nvcc and a CUDA torch).
# PYTHON selects the interpreter (default: python).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python}"
"$py" -m pip install --upgrade pip
"$py" -m pip install -e "${here}[dev]"
if [ "${FLASH_ATTN:-0}" = "1" ]; then
    "$py" -m pip install --no-build-isolation "flash-attn>=2.6"
fi
"$py" -c "import flexbert, torch; print('flexbert installed; torch', torch.__version__, '| cuda', torch.cuda.is_available())"
