#!/usr/bin/env bash
# ssdc beside its peers on this machine, from one run with the same threads and batch size:
# PyTorch eager, torch.compile and onnxruntime (forward only).
#
#   scripts/bench.sh [THREADS] [BATCH]          (default 2 threads, batch 32)
#   MODEL=resnet-fpn-ssd scripts/bench.sh       (an example model of Examples/; default tinyssd)
#
# Builds ssdc (release), sets up PyTorch CPU and onnxruntime in a venv (.venv-torch, via
# scripts/setup_torch_venv.sh, once), measures the machine's float32 FMA peak
# (scripts/fma_peak.c), then runs `ssdc bench --json` and scripts/bench_torch.py --json
# --compile --onnx one after the other (never at the same time), ROUNDS times in turn
# (default 2), and prints one table with the machine, its ISA, threads and versions. Each
# figure is the best of its rounds (a shared machine only ever slows a run down); the spread
# of the rounds is printed too, with the CPU time the hypervisor took from this VM during
# each side's runs (the steal column of /proc/stat; on a shared machine that is where most
# of the run-to-run spread comes from). Set TORCH_VENV to use another venv, PEERS="" to
# time PyTorch eager only (torch.compile's warm-up takes a minute or two per round).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
batch="${2:-32}"
venv="${TORCH_VENV:-.venv-torch}"
peers="${PEERS---compile --onnx}"
model="${MODEL:-tinyssd}"
ssdc_model=()
[ "$model" = tinyssd ] || ssdc_model=(--model "Examples/$model/model.swift")
source scripts/setup.sh
swift build -c release >/dev/null
[ -x "$venv/bin/python" ] || bash scripts/setup_torch_venv.sh "$venv" >/dev/null
"$venv/bin/python" -c "import onnxruntime, onnx" 2>/dev/null || "$venv/bin/python" -m pip install -q onnx onnxruntime
export OMP_NUM_THREADS="$threads"
cc="${SSDC_CC:-${CC:-/usr/bin/clang}}"
"$cc" -O2 -march=native -fopenmp scripts/fma_peak.c -o .build/fma_peak
peak="$(.build/fma_peak "$threads")"
rounds="${ROUNDS:-2}"
ssdc_runs=()
torch_runs=()
# steal ticks (USER_HZ) of all CPUs, from the "cpu" line of /proc/stat (0 where absent)
steal() { awk '/^cpu /{print ($9 == "" ? 0 : $9); exit}' /proc/stat 2>/dev/null || echo 0; }
ssdc_steal=0
torch_steal=0
for ((r = 1; r <= rounds; ++r)); do
    echo "round $r of $rounds: ssdc, then PyTorch ${peers:+and its peers}" >&2
    s0=$(steal)
    ssdc_runs+=("$(.build/release/ssdc bench "${ssdc_model[@]}" --threads "$threads" --batch-size "$batch" --json)")
    s1=$(steal)
    # shellcheck disable=SC2086
    torch_runs+=("$("$venv/bin/python" scripts/bench_torch.py --model "$model" --threads "$threads" --batch-size "$batch" --json $peers 2>/dev/null)")
    s2=$(steal)
    ssdc_steal=$((ssdc_steal + s1 - s0))
    torch_steal=$((torch_steal + s2 - s1))
done
python3 - "$rounds" "$ssdc_steal" "$torch_steal" "$(getconf CLK_TCK)" "$peak" "${ssdc_runs[@]}" "${torch_runs[@]}" <<'PY'
import json, platform, subprocess, sys
n = int(sys.argv[1])
steal_s, steal_t, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
peak = json.loads(sys.argv[5])
runs = [json.loads(a) for a in sys.argv[6:]]
ss, ts = runs[:n], runs[n:]
def best(rs, key, better):
    vals = [r[key] for r in rs if r.get(key)]
    return (max if better == "higher" else min)(vals) if vals else None
def merged(rs, keys):
    out = dict(rs[0])
    for key, better in keys.items():
        out[key] = best(rs, key, better)
    return out
s = merged(ss, {"train_examples_per_sec": "higher", "infer_b1_ms": "lower", "train_conv_gflops": "higher",
                "infer_b32_examples_per_sec": "higher", "peak_rss_bytes": "lower",
                "compile_seconds": "lower", "compile_cached_seconds": "lower"})
t = merged(ts, {"train_examples_per_sec": "higher", "infer_b1_ms": "lower",
                "infer_b1_detect_ms": "lower", "infer_b32_examples_per_sec": "higher",
                "peak_rss_bytes": "lower", "compile_train_examples_per_sec": "higher",
                "compile_infer_b1_ms": "lower", "compile_infer_b32_examples_per_sec": "higher",
                "onnx_infer_b1_ms": "lower", "onnx_infer_b32_examples_per_sec": "higher"})
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"model: {s.get('model', 'tinyssd')} {s.get('input', '')}; machine: {cpu}, {cores} cores, {isa}; threads {s['threads']}, batch {s['batch_size']}")
p512 = peak.get("avx512_fma_gflops")
print(f"float32 FMA peak on {peak['threads']} threads (scripts/fma_peak.c): AVX2 {peak['avx2_fma_gflops']:.0f} GFLOP/s"
      + (f", AVX-512 {p512:.0f} GFLOP/s" if p512 else ""))
print(f"ssdc {s['ssdc_version']} ({s['cc']}, {s.get('isa', '?')} micro-kernel); PyTorch {t['torch_version']}"
      + (f"; onnxruntime {t['onnxruntime_version']}" if t.get("onnxruntime_version") else ""))
def cell(v):
    return f"{v:10.2f}" if v else f"{'-':>10s}"
def row(name, unit, better, mine, *peers):
    known = [p for p in peers if p]
    ref = (max(known) if better == "higher" else min(known)) if known else None
    ratio = (mine / ref if better == "higher" else ref / mine) if mine and ref else float("nan")
    print(f"| {name:32s} | {cell(mine)} | " + " | ".join(cell(p) for p in peers) + f" | {unit:10s} | {ratio:5.2f}x |")
print(f"| {'figure':32s} | {'ssdc':>10s} | {'eager':>10s} | {'compile':>10s} | {'onnxrt':>10s} | {'unit':10s} | vs best |")
print(f"|{'-'*34}|{'-'*12}|{'-'*12}|{'-'*12}|{'-'*12}|{'-'*12}|---------|")
row(f"train, batch {s['batch_size']}", "examples/s", "higher", s["train_examples_per_sec"],
    t["train_examples_per_sec"], t.get("compile_train_examples_per_sec"), None)
row("infer b1 (ssdc: + detection)", "ms", "lower", s["infer_b1_ms"], t["infer_b1_ms"], t.get("compile_infer_b1_ms"),
    t.get("onnx_infer_b1_ms"))
row("infer b1, eager + d2l detection", "ms", "lower", s["infer_b1_ms"], t["infer_b1_detect_ms"], None, None)
row("infer, batch 32", "examples/s", "higher", s["infer_b32_examples_per_sec"], t["infer_b32_examples_per_sec"],
    t.get("compile_infer_b32_examples_per_sec"), t.get("onnx_infer_b32_examples_per_sec"))
row("peak RSS (training process)", "MiB", "lower", s["peak_rss_bytes"] / 2**20, t["peak_rss_bytes"] / 2**20, None, None)
print("(the peers' inference is the forward alone; ssdc's includes softmax and detection with NMS)")
conv = s.get("train_conv_gflops")
if conv:
    print(f"ssdc's train-step convolutions: {conv:.0f} GFLOP/s as direct multiply-adds, "
          f"{100 * conv / peak['avx2_fma_gflops']:.0f}% of the AVX2 peak"
          + (f", {100 * conv / p512:.0f}% of the AVX-512 peak" if p512 else ""))
print(f"ssdc compile: {s['compile_seconds']:.2f} s cold, {s['compile_cached_seconds']:.2f} s cached"
      + (f"; torch.compile warm-up {t['compile_warmup_sec']:.0f} s (train), {t['compile_infer_warmup_sec']:.0f} s (infer)"
         if t.get("compile_warmup_sec") else ""))
if t.get("compile_error"):
    print(f"torch.compile: {t['compile_error']}")
if t.get("onnx_error"):
    print(f"onnxruntime: {t['onnx_error']}")
print(f"best of {n} rounds; train examples/s per round: ssdc "
      + " ".join(f"{r['train_examples_per_sec']:.2f}" for r in ss) + ", PyTorch "
      + " ".join(f"{r['train_examples_per_sec']:.2f}" for r in ts))
print(f"CPU time taken by the hypervisor (steal) during the runs: ssdc {steal_s / hz:.2f} s, "
      f"PyTorch and peers {steal_t / hz:.2f} s")
PY
