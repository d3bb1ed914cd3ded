#!/usr/bin/env bash
# Builds the side environments that tests/test_side_env_*.py run against FlexBERT's exported
# Hugging Face folders (docs/side_envs.md): library versions that cannot be installed beside the
# main environment's transformers 5 / sentence-transformers 6.
#
# Each side environment is a `pip install --target` folder under <sys.prefix>/flexbert-side/<name>
# holding only the packages whose versions differ from (or are missing in) the main environment.
# The main interpreter runs it with PYTHONPATH=<folder>, so torch, numpy, safetensors, ... are the
# main environment's. --no-deps keeps pip from pulling a second torch into the folder.
#
# PYTHON selects the main environment's interpreter (default: python). Rerunning is a no-op while a
# folder's stamp (Python version + pins) is current; a changed pin rebuilds that folder.
set -euo pipefail
py="${PYTHON:-python}"
root="$("$py" -c 'import sys; print(sys.prefix)')/flexbert-side"
pyver="$("$py" -c 'import sys; print(sys.version.split()[0])')"

# transformers 4.57 is the last v4 release: exports must keep loading there. Its import-time
# version check wants huggingface_hub < 1.0 and tokenizers <= 0.23.0.
TRANSFORMERS457=(transformers==4.57.6 huggingface_hub==0.36.2 tokenizers==0.22.2)

# PyLate 1.6.0 pins sentence-transformers==5.3.0 and transformers<=5.3.0, which import-check
# huggingface_hub < 2.0 and tokenizers <= 0.23.0. pylate.utils imports datasets (which needs pandas,
# dill, multiprocess, huggingface_hub >= 1.31). pandas 2.3 rather than 3.x: it also works with the
# numpy < 2 that the main environment allows. Left out on purpose: PyLate's index backends
# (fast-plaid, fastkmeans, ninja, ujson), unused by encode/rerank/training; fast-plaid's wheels are
# built for one torch each (1.4.6.2110 requires torch==2.11.0), never the main environment's.
# kernels: transformers >= 5.25 (main environment) depends on it, and transformers 5.3 imports it
# when present; 5.3 is written for kernels >=0.10.2,<0.11 (newer ones refuse its hub layer table
# at import: "Either a revision or a version must be specified"), so the side env carries its own.
PYLATE=(pylate==1.6.0 sentence-transformers==5.3.0 transformers==5.3.0 huggingface_hub==1.33.0
        tokenizers==0.22.2 datasets==5.2.0 pandas==2.3.3 dill==0.4.1 multiprocess==0.70.19 kernels==0.10.5)

tmp=""
# A failed or interrupted build leaves no temporary folder behind.
trap 'if [ -n "$tmp" ]; then rm -rf "$tmp" "$tmp.old"; fi' EXIT

build() {
    local name="$1"; shift
    local dest="$root/$name"
    local stamp="python $pyver: $*"
    if [ -f "$dest/.flexbert-side" ] && [ "$(cat "$dest/.flexbert-side")" = "$stamp" ]; then
        echo "side env $name: up to date ($dest)"
        return
    fi
    # Built under a temporary name and renamed when complete: a half-built folder never looks finished.
    tmp="$root/.$name.tmp-$$"
    rm -rf "$tmp" "$tmp.old"
    mkdir -p "$root"
    # --no-compile: byte-compiling every module of transformers costs ~15 s per build; Python caches
    # the few modules the tests import on first use instead.
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --target "$tmp" "$@"
    printf '%s\n' "$stamp" > "$tmp/.flexbert-side"
    if [ -e "$dest" ]; then mv -T "$dest" "$tmp.old"; fi
    mv -T "$tmp" "$dest"
    rm -rf "$tmp.old"
    tmp=""
    echo "side env $name: built in $dest ($*)"
}

build transformers457 "${TRANSFORMERS457[@]}"
build pylate "${PYLATE[@]}"
