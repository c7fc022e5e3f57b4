#!/usr/bin/env bash
# Set up hwprune from nothing on a Debian/Ubuntu machine: the Fashion-MNIST data (apt), a virtual
# environment in .venv, PyTorch 2.13.0 (CPU) first, then hwprune with its test extra, Debian's chromium
# for the HTML report test and Debian's postgresql for the shared-search test. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist
fi
# headless Chromium renders `hwprune compare`'s HTML page in the tests
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi
# the `--storage postgresql://` test starts its own throw-away server from these binaries (initdb, pg_ctl:
# /usr/lib/postgresql/VERSION/bin, off PATH); the package's own cluster is not used
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  apt_install postgresql
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  # Debian's system Python keeps venv's pip bootstrap in a separate package
  "$PYTHON" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; "$PYTHON" -m venv .venv; }
fi
# torch first, pinned: a plain `pip install torch` would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
echo "hwprune is set up in .venv ($(.venv/bin/hwprune --version))"
