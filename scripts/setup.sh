#!/usr/bin/env bash
# Set up hwprune from nothing on a Debian/Ubuntu machine: the Fashion-MNIST data (apt), a virtual
# environment in .venv, PyTorch 2.13.0 (CPU) first, then hwprune with its test extra. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: a plain `pip install torch` would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
echo "hwprune is set up in .venv ($(.venv/bin/hwprune --version))"
