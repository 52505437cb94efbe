#!/usr/bin/env bash
# The test command: set up the machine, build everything (the CLI tests run the built
# ssdc, and model files compile against its libSSDGraph.so), run the runtime under
# AddressSanitizer + UBSan (scripts/sanitize.sh), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build
scripts/sanitize.sh
swift test 2>&1 | tee /tmp/ssdc-test.log | grep -vE "^Test Case '.*' (started|passed)" 
