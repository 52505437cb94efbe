#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with libFuzzer, SECONDS_PER_TARGET each (default 120):
#   safetensors  SafeTensors.decode (Sources/SSDIO/SafeTensors.swift), plus a round trip
#   labels       label.csv through DetectionDataSet.load (Sources/SSDIO/DetectionDataSet.swift)
#   image        the PNG/JPEG decoders of Sources/CImageIO/cimageio.c
# The Swift targets are built by `swiftc -sanitize=fuzzer,address` with SSDIO's sources
# compiled in (Tests/Fuzz/FuzzParsers.swift); the image target by clang with
# -fsanitize=fuzzer,address,undefined (Tests/Fuzz/fuzz_image.c). Seeds: Tests/Fuzz/corpus.
# The growing corpora and any crashing inputs stay in .build/fuzz. Exit status 1 if a target
# crashed: turn the input into a test (Tests/SSDIOTests/FuzzRegressionTests.swift), then fix.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

seconds="${1:-120}"
[ $# -gt 0 ] && shift
targets=(safetensors labels image)
[ $# -gt 0 ] && targets=("$@")
out=.build/fuzz
mkdir -p "$out"

# Builds into $out; prints why and fails when this toolchain cannot build fuzzers.
build() {
  local swift_clang
  swift_clang="$(dirname "$(command -v swiftc)")/clang"
  # The Swift targets link the Swift toolchain's sanitizer runtime; its clang builds the shim.
  mkdir -p "$out/modules/CImageIO"
  printf 'module CImageIO {\n  header "%s"\n  export *\n}\n' \
    "$PWD/Sources/CImageIO/include/cimageio.h" > "$out/modules/CImageIO/module.modulemap"
  "$swift_clang" -fsanitize=fuzzer-no-link,address -O1 -g -I Sources/CImageIO/include \
    -c Sources/CImageIO/cimageio.c -o "$out/cimageio-swift.o"
  local define
  for t in safetensors labels; do
    define="FUZZ_$(echo "$t" | tr a-z A-Z)"
    swiftc -sanitize=fuzzer,address -parse-as-library -O -g -D "$define" -module-name SSDIOFuzz \
      -I "$out/modules/CImageIO" Tests/Fuzz/FuzzParsers.swift Sources/SSDIO/*.swift \
      "$out/cimageio-swift.o" -lpng -ljpeg -o "$out/fuzz_$t" 2>&1 | grep -v "Cannot export local symbol" || true
    [ -x "$out/fuzz_$t" ] || return 1
  done
  /usr/bin/clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -O1 -g \
    -I Sources/CImageIO/include Tests/Fuzz/fuzz_image.c Sources/CImageIO/cimageio.c -lpng -ljpeg \
    -o "$out/fuzz_image"
}
rm -f "$out"/fuzz_*
if ! build > "$out/build.log" 2>&1; then
  cat "$out/build.log"
  echo "fuzz: this toolchain cannot build libFuzzer targets (swiftc -sanitize=fuzzer or clang -fsanitize=fuzzer); skipped"
  exit 0
fi

status=0
for t in "${targets[@]}"; do
  [ -x "$out/fuzz_$t" ] || { echo "fuzz: unknown target $t (safetensors, labels, image)"; exit 2; }
  mkdir -p "$out/corpus/$t" "$out/crashes"
  log="$out/$t.log"
  dict=()
  [ -f "Tests/Fuzz/$t.dict" ] && dict=(-dict="Tests/Fuzz/$t.dict")
  # New inputs go to the first directory (kept between runs); the seeds are only read.
  # Swift's own crash backtracer is off so that libFuzzer reports (and saves) the input;
  # the labels target's scratch data set goes to $out/tmp.
  mkdir -p "$out/tmp"
  if TMPDIR="$PWD/$out/tmp" SWIFT_BACKTRACE=enable=no "$out/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "${dict[@]}" -artifact_prefix="$out/crashes/$t-" "$out/corpus/$t" "Tests/Fuzz/corpus/$t" \
      > "$log" 2>&1; then
    result="no crash"
  else
    result="CRASH: $(grep -m1 -E '^==[0-9]+==ERROR|Fatal error|SUMMARY' "$log" || echo 'see log'); input: $(grep -o "$out/crashes/$t-[^ ]*" "$log" | head -1)"
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  echo "fuzz: $t: ${seconds} s, $runs runs ($rate/s), $cov, corpus $(ls "$out/corpus/$t" | wc -l) files: $result"
done
exit $status
