#!/usr/bin/env bash
# Create a Python venv for the PyTorch reference scripts and install their packages.
#
#   scripts/setup_torch_venv.sh [VENV_PATH]     (default: .venv-torch in the repo)
#
# Then:  VENV_PATH/bin/python scripts/make_fixtures.py
#        VENV_PATH/bin/python scripts/bench_torch.py --threads 2 --batch-size 32
#
# Installs scripts/requirements-fixtures.txt (torch, numpy, safetensors and what
# `import d2l.torch` needs), then d2l==1.0.3 with --no-deps. `pip install torch`
# takes PyPI's default wheel (on x86_64 Linux that is the CUDA build, which runs
# on the CPU too; several GB). Set PYTHON to choose the interpreter (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${1:-$repo/.venv-torch}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install -r "$here/requirements-fixtures.txt"
"$venv/bin/python" -m pip install --no-deps d2l==1.0.3

SSDC_SCRIPTS="$here" "$venv/bin/python" -c "
import os, sys
sys.path.insert(0, os.environ['SSDC_SCRIPTS'])
import tinyssd_torch, torch
d2l = tinyssd_torch.import_d2l()
print('ok: torch', torch.__version__, '- d2l.multibox_target', callable(d2l.multibox_target))
"
echo "venv ready: $venv"
