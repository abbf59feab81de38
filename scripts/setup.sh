#!/usr/bin/env bash
# Idempotent set-up: ./.venv with PyPI's torch==2.11.0 (the libtorch that tch 0.24 links; the
# CUDA build, which runs on CPU too) and the Python peers the tests compare against, plus the
# .venv/libtorch link that .cargo/config.toml points LIBTORCH at. Fast once done.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.gptlab-setup
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing Python packages into .venv (first time: torch is a large download)" >&2
    command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
    if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv .venv
        else
            echo "error: python3 -m venv failed; install it (Debian/Ubuntu: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    # No pip cache: torch's CUDA wheels are gigabytes, and a cached copy beside the installed one
    # doubles what the first set-up needs on disk (CI once ran out of space there).
    .venv/bin/python -m pip install -q --no-cache-dir --upgrade pip
    .venv/bin/python -m pip install -q --no-cache-dir -r requirements.txt
    echo "$want" > "$stamp"
fi
# Data-parallel training compiles a small C++ shim against c10d's headers (in torch) and Gloo's,
# which PyPI's torch does not ship: Debian's libgloo-dev has them. Without them gptlab builds
# without data parallelism (and says so when asked for it).
if [ ! -f /usr/include/gloo/algorithm.h ] && [ -z "${GLOO_INCLUDE_DIR:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing Gloo's headers (libgloo-dev) for data-parallel training" >&2
        apt-get update -qq && apt-get install -y -qq libgloo-dev >/dev/null
    else
        echo "warning: no Gloo headers (Debian/Ubuntu: apt-get install libgloo-dev): gptlab builds without data-parallel training" >&2
    fi
fi
torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
[ "$(readlink .venv/libtorch 2>/dev/null)" = "$torch_dir" ] || ln -sfn "$torch_dir" .venv/libtorch
command -v cargo >/dev/null || { echo "error: cargo is required (https://rustup.rs)" >&2; exit 1; }
