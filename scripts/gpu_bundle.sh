#!/usr/bin/env bash
# Packs what a GPU session needs into .gpu/ (git-ignored, never committed): the stripped
# test and app binaries of a CUDA build, the non-CUDA shared libraries they load (OpenBLAS, oneDNN, ...;
# the GPU machine's image has the CUDA runtime, cuBLAS, cuDNN and cuSOLVER but not Debian's packages) and the
# Fashion-MNIST files. The device tool then carries .gpu/ to the GPU machine, where scripts/gpu_check.sh
# runs everything the [cuda] issue asks a GPU for. Binaries built here (Debian 12, glibc 2.36) run on
# the newer image there.
#
#   bash scripts/gpu_bundle.sh            # builds build/ first if needed
#   device run, one per part:  PARTS=suite bash scripts/gpu_check.sh   (carry: [".gpu"]); then PARTS=cuda_apps,
#                              train, bench, profile (scripts/gpu_check.sh says what each runs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RETORT_BUILD_DIR:-$root/build}
out=$root/.gpu
# .gpu/ is in .gitignore: it travels only when named in the device tool's carry.
cmake --build "$build" -j "$(nproc)" >/dev/null
# (CMAKE_CUDA_COMPILER is not always in CMakeCache.txt — CMake found nvcc by itself —, so ask the build
# for what it compiled: the CUDA backend's objects.)
compgen -G "$build/engine/CMakeFiles/retort_engine.dir/cuda/*.cu.o" >/dev/null ||
  { echo "gpu_bundle.sh: $build has no CUDA objects: it was configured without CUDA (no nvcc?)" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib" "$out/data"
bins=$(find "$build/tests" "$build/apps" -maxdepth 1 -type f -perm -u+x \( -name 'test_*' -o -name 'retort-*' \))
for b in $bins; do strip -o "$out/bin/$(basename "$b")" "$b"; done
# Shared libraries outside the CUDA toolkit and glibc: resolved here, loaded there via LD_LIBRARY_PATH.
for b in $bins; do ldd "$b"; done | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case $(basename "$lib") in
    # glibc and the GCC runtime: the image's are newer and backward compatible; CUDA: the image's own.
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
    # (cuSOLVER, with the cuSPARSE and nvJitLink it loads, is there too — torch's nvidia-* wheels — and
    # far beyond what a device call can carry.)
    libcuda.so*|libcudart*|libcublas*|libcudnn*|libnvrtc*|libcusolver*|libcusparse*|libnvJitLink*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
# xz -9e: 21 MB instead of 26 at the default level (d820d4b) — the bundle, the dataset (31 MB) and the
# tracked tree (6 MB) must fit the device tool's 64 MiB carry together.
tar -C "$out" -cf - bin lib | xz -9e -T0 >"$out/bundle.tar.xz" && rm -rf "$out/bin" "$out/lib"
cp /usr/share/datasets/fashion-mnist/*.gz "$out/data/"
git -C "$root" rev-parse --short HEAD >"$out/commit"
du -sh "$out" "$out"/*
