#!/usr/bin/env bash
# Installs FlexBERT into the current Python environment (used by docker/Dockerfile, README and CI).
#
#   bash docker/install.sh          runtime install
#   bash docker/install.sh --test   also the test tools and the side environments the tests use
#
# PYTHON selects the interpreter (default: python). FLASH_ATTN=1 also builds the optional
# flash-attn kernels (needs nvcc and a CUDA torch).
#
# Composer 0.32.1 (its last release) pins torch<2.7.1 and mosaicml-streaming 0.13 pins
# transformers<5, though both run on torch >= 2.10 and transformers 5; so they are installed
# with --no-deps, pyproject.toml declares their other needs, and `flexbert/stack.py check`
# fails the install on any conflict other than those waived pins.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python}"
stack="${here}/flexbert/stack.py"  # stdlib only: runs before flexbert is installed
extras=""
side_envs=0
for arg in "$@"; do
    case "$arg" in
        --test) extras="[dev]"; side_envs=1 ;;
        *) echo "install.sh: unknown option $arg (known: --test)" >&2; exit 2 ;;
    esac
done

# 1. torch: a supported torch already here (a GPU machine's CUDA build, the Docker base
#    image's) is kept; otherwise the newest release pip may take.
if "$py" "$stack" torch-ok; then
    echo "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
else
    "$py" -m pip install "torch>=2.10"
fi

# 2. From here on torch stays exactly as it is: a constraint file pins it, and torchvision
#    is the series built for it (Composer imports torchvision at start).
pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
"$py" -c 'from importlib.metadata import version; print("torch==" + version("torch"))' > "$pins"
"$py" -m pip install -c "$pins" "$("$py" "$stack" torchvision-spec)"

# 3. FlexBERT with its dependencies (Composer's and Streaming's real needs included), then
#    Composer and Streaming themselves without their stale pins.
"$py" -m pip install -c "$pins" -e "${here}${extras}"
# shellcheck disable=SC2046  # the specs are separate words on purpose
"$py" -m pip install --no-deps $("$py" "$stack" no-deps-specs)

if [ "${FLASH_ATTN:-0}" = "1" ]; then
    "$py" -m pip install -c "$pins" --no-build-isolation "flash-attn>=2.6"
fi

# 4. Nothing conflicts but the waived pins, and the training stack imports.
"$py" -m flexbert.stack check
"$py" -c "import flexbert.train, torch; print('flexbert installed; torch', torch.__version__, '| cuda', torch.cuda.is_available())"

if [ "$side_envs" = "1" ]; then
    PYTHON="$py" bash "${here}/docker/side_envs.sh"
fi
