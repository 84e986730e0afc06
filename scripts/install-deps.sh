#!/usr/bin/env bash
# Installs Retort's system dependencies from Debian's packages. Idempotent: installs only what is
# missing, so a second run does nothing. Works as root or through sudo.
#
# dataset-fashion-mnist is the embedded default dataset (/usr/share/datasets/fashion-mnist).
# oneDNN (libdnnl-dev) runs the F32 CPU convolutions; like OpenBLAS it uses GNU OpenMP threads.
# OpenBLAS: we take the OpenMP flavour (libopenblas-openmp-dev) so that OpenBLAS threads and our own
# OpenMP loops share one thread pool instead of oversubscribing the cores.
# python3 rewrites the CUDA launches for the emulator build (-DRETORT_CUDA=EMU, tools/cudaemu).
# ccache: the test command builds most sources twice (build/ and build-emu/); cmake/ccache.cmake.
set -euo pipefail

packages=(
  cmake g++ make pkg-config python3 ccache
  libopenblas-openmp-dev
  libdnnl-dev
  libgtest-dev
  nlohmann-json3-dev
  libstb-dev
  zlib1g-dev
  libcli11-dev
  dataset-fashion-mnist
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
