#!/usr/bin/env bash
# The main job: set up the machine, build ssdc (release) and train TinySSD. With no
# arguments it trains on the built-in generated data set; any arguments are passed on to
# `ssdc run --train` (e.g. --data ../shared/data/banana-detection --epochs 20).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release
exec .build/release/ssdc run --train "$@"
