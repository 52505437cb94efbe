#!/usr/bin/env bash
# Installs what ssdc needs on a fresh Debian machine: Debian's clang (with OpenMP via
# libomp-dev; the Swift toolchain's own clang has no OpenMP headers), libpng and libjpeg,
# clang's sanitizer runtimes (libclang-rt-dev) for scripts/sanitize.sh and fuzz.sh, and
# gcc, make, Debian's aarch64 cross gcc and qemu-user for the tests that build exported bundles,
# Open MPI (openmpi-bin, libopenmpi-dev) for the data-parallel training tests, and graphviz,
# which renders graph.dot in a test.
# Safe to run again: it installs only what is missing.
set -euo pipefail
packages=(clang libomp-dev libpng-dev libjpeg-dev libclang-rt-dev gcc make crossbuild-essential-arm64 qemu-user
          openmpi-bin libopenmpi-dev graphviz)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null || { echo "setup: Swift 6 is needed (swift not on PATH, not in /opt/swift)"; exit 1; }
