#!/usr/bin/env bash
# Install the system packages lamella's build and tests need (Debian/Ubuntu), idempotently.
# Quiet when everything is present. Elsewhere, print what to install or `module load`.
set -euo pipefail

# clang: its resource headers (stddef.h, ...) for bindgen in mpi-sys and hdf5-sys
# chromium: the headless browser that loads the HTML report in the tests
PKGS=(openmpi-bin libopenmpi-dev libhdf5-dev libclang-dev clang pkg-config python3-venv chromium)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  cat >&2 <<'MSG'
lamella deps: this is not a Debian/Ubuntu system. Please provide:
  - an MPI implementation with headers and mpicc (e.g. `module load openmpi`),
  - HDF5 >= 1.10 with headers (e.g. `module load hdf5`; set HDF5_DIR if pkg-config cannot find it),
  - libclang (for bindgen; e.g. `module load llvm` or set LIBCLANG_PATH),
  - pkg-config, and Python 3 with the venv module (for the tests).
MSG
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "lamella deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "lamella deps: not root and no sudo; please install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "lamella deps: done" >&2
