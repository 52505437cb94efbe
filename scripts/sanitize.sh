#!/usr/bin/env bash
# The runtime under AddressSanitizer and UndefinedBehaviorSanitizer (part of scripts/test.sh):
#   1. the C suites of Runtime/tests (test_kernels, test_fused, test_ssd_ops, test_ops), and
#   2. TinySSD compiled by the built ssdc at 64x64 (the smallest size its six halvings
#      allow), its model.c linked with Runtime/*.c and Runtime/tests/sanitize_model.c,
#      run once through every program: forward_train, infer, eval_step and one train_step.
# Any sanitizer report stops the run (-fno-sanitize-recover=all) and fails the script.
# Needs `swift build` first (it uses .build/debug/ssdc). Usage: scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cc="${SSDC_CC:-${CC:-/usr/bin/clang}}"
flags=(-std=c11 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
       -O1 -g -march=native -fopenmp -I Runtime)
ssdc=.build/debug/ssdc
[ -x "$ssdc" ] || { echo "sanitize: $ssdc not found; run swift build first"; exit 1; }

work="$(mktemp -d /tmp/ssdc-sanitize.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# Leak checking included; libomp's threads are not instrumented, so keep them few.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=2

# Each runtime file is compiled once; the suites and the model link the objects they need.
mkdir -p "$work/obj"
for src in Runtime/*.c; do
  "$cc" "${flags[@]}" -c "$src" -o "$work/obj/$(basename "$src" .c).o" &
done
wait
objs() { local o=(); for f in "$@"; do o+=("$work/obj/$f.o"); done; echo "${o[@]}"; }
kernels=$(objs threads gemm gemm_avx512 conv conv_direct conv_general winograd winograd4 winograd_avx512 bn pool optim fused collective)
ops=$(objs detect target loss threads)

# A suite's log is kept quiet unless it fails; then its failures and the report are shown.
suite() { # name, objects
  local name="$1" start=$SECONDS
  "$cc" "${flags[@]}" $2 "Runtime/tests/$name.c" -lm -o "$work/$name"
  if ! "$work/$name" > "$work/$name.log" 2>&1; then
    grep -E "^FAIL" "$work/$name.log" | head -20 || true
    tail -30 "$work/$name.log"
    echo "sanitize: $name FAILED under ASan+UBSan"; exit 1
  fi
  echo "sanitize: $name: $(grep -E 'passed, ' "$work/$name.log" | tail -1) ($((SECONDS - start)) s)"
}
suite test_kernels "$kernels"
suite test_fused "$kernels"
suite test_ssd_ops "$ops"
suite test_ops "$(objs threads gemm gemm_avx512 conv_general conv_direct dwconv pool_general activation resize l2norm standardize eltwise)"

# One compiled model: every program once, on exactly sized regions. The emitted C asks for
# `omp simd` loops that -O1 may not vectorise; that warning is expected here.
start=$SECONDS
"$ssdc" compile Examples/tinyssd/model.swift --input-size 64x64 -o "$work/tinyssd" > "$work/compile.log" 2>&1 \
  || { cat "$work/compile.log"; echo "sanitize: ssdc compile failed"; exit 1; }
"$cc" "${flags[@]}" -Wno-pass-failed -I "$work/tinyssd" "$work/tinyssd/model.c" Runtime/tests/sanitize_model.c \
  $(objs $(cd Runtime && ls *.c | sed 's/\.c$//')) -lm -o "$work/sanitize_model"
if ! "$work/sanitize_model" "$work/tinyssd/model.h" > "$work/model.log" 2>&1; then
  tail -40 "$work/model.log"
  echo "sanitize: TinySSD 64x64 FAILED under ASan+UBSan"; exit 1
fi
echo "sanitize: TinySSD 64x64, every program once: $(tail -1 "$work/model.log") ($((SECONDS - start)) s)"
