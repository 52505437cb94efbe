#!/usr/bin/env bash
# ssdc beside PyTorch on this machine, from one run with the same threads and batch size.
#
#   scripts/bench.sh [THREADS] [BATCH]          (default 2 threads, batch 32)
#
# Builds ssdc (release), sets up PyTorch CPU in a venv (.venv-torch, via
# scripts/setup_torch_venv.sh, once), runs `ssdc bench --json` and scripts/bench_torch.py
# --json one after the other (never at the same time), and prints one table with the
# machine, threads and versions. Set TORCH_VENV to use another venv.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
batch="${2:-32}"
venv="${TORCH_VENV:-.venv-torch}"
source scripts/setup.sh
swift build -c release >/dev/null
[ -x "$venv/bin/python" ] || bash scripts/setup_torch_venv.sh "$venv" >/dev/null
export OMP_NUM_THREADS="$threads"
ssdc_json=$(.build/release/ssdc bench --threads "$threads" --batch-size "$batch" --json)
torch_json=$("$venv/bin/python" scripts/bench_torch.py --threads "$threads" --batch-size "$batch" --json 2>/dev/null)
python3 - "$ssdc_json" "$torch_json" <<'PY'
import json, platform, subprocess, sys
s, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"machine: {cpu}, {cores} cores; threads {s['threads']}, batch {s['batch_size']}")
print(f"ssdc {s['ssdc_version']} ({s['cc']}); PyTorch {t['torch_version']} eager")
def row(name, a, b, unit, better):
    ratio = (a / b if better == "higher" else b / a) if a and b else float("nan")
    print(f"| {name:34s} | {a:10.2f} | {b:10.2f} | {unit:10s} | {ratio:5.2f}x |")
print(f"| {'figure':34s} | {'ssdc':>10s} | {'PyTorch':>10s} | {'unit':10s} | ssdc  |")
print(f"|{'-'*36}|{'-'*12}|{'-'*12}|{'-'*12}|-------|")
row(f"train, batch {s['batch_size']}", s["train_examples_per_sec"], t["train_examples_per_sec"], "examples/s", "higher")
row("infer batch 1: forward + detection", s["infer_b1_ms"], t["infer_b1_detect_ms"], "ms", "lower")
row("infer batch 1: PyTorch forward only", s["infer_b1_ms"], t["infer_b1_ms"], "ms", "lower")
row("infer, batch 32", s["infer_b32_examples_per_sec"], t["infer_b32_examples_per_sec"], "examples/s", "higher")
row("peak RSS (training process)", s["peak_rss_bytes"] / 2**20, t["peak_rss_bytes"] / 2**20, "MiB", "lower")
print(f"ssdc compile: {s['compile_seconds']:.2f} s cold, {s['compile_cached_seconds']:.2f} s cached")
PY
