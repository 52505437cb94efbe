#!/usr/bin/env bash
# ssdc beside PyTorch on this machine, from one run with the same threads and batch size.
#
#   scripts/bench.sh [THREADS] [BATCH]          (default 2 threads, batch 32)
#
# Builds ssdc (release), sets up PyTorch CPU in a venv (.venv-torch, via
# scripts/setup_torch_venv.sh, once), runs `ssdc bench --json` and scripts/bench_torch.py
# --json one after the other (never at the same time), ROUNDS times in turn (default 2),
# and prints one table with the machine, threads and versions. Each figure is the best of
# its rounds (a shared machine only ever slows a run down); the spread of the rounds is
# printed too, with the CPU time the hypervisor took from this VM during each side's runs
# (the steal column of /proc/stat; on a shared machine that is where most of the
# run-to-run spread comes from). Set TORCH_VENV to use another venv.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
batch="${2:-32}"
venv="${TORCH_VENV:-.venv-torch}"
source scripts/setup.sh
swift build -c release >/dev/null
[ -x "$venv/bin/python" ] || bash scripts/setup_torch_venv.sh "$venv" >/dev/null
export OMP_NUM_THREADS="$threads"
rounds="${ROUNDS:-2}"
ssdc_runs=()
torch_runs=()
# steal ticks (USER_HZ) of all CPUs, from the "cpu" line of /proc/stat (0 where absent)
steal() { awk '/^cpu /{print ($9 == "" ? 0 : $9); exit}' /proc/stat 2>/dev/null || echo 0; }
ssdc_steal=0
torch_steal=0
for ((r = 1; r <= rounds; ++r)); do
    echo "round $r of $rounds: ssdc, then PyTorch" >&2
    s0=$(steal)
    ssdc_runs+=("$(.build/release/ssdc bench --threads "$threads" --batch-size "$batch" --json)")
    s1=$(steal)
    torch_runs+=("$("$venv/bin/python" scripts/bench_torch.py --threads "$threads" --batch-size "$batch" --json 2>/dev/null)")
    s2=$(steal)
    ssdc_steal=$((ssdc_steal + s1 - s0))
    torch_steal=$((torch_steal + s2 - s1))
done
python3 - "$rounds" "$ssdc_steal" "$torch_steal" "$(getconf CLK_TCK)" "${ssdc_runs[@]}" "${torch_runs[@]}" <<'PY'
import json, platform, subprocess, sys
n = int(sys.argv[1])
steal_s, steal_t, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
runs = [json.loads(a) for a in sys.argv[5:]]
ss, ts = runs[:n], runs[n:]
def best(rs, key, better):
    vals = [r[key] for r in rs if r.get(key)]
    return (max if better == "higher" else min)(vals) if vals else None
def merged(rs, keys):
    out = dict(rs[0])
    for key, better in keys.items():
        out[key] = best(rs, key, better)
    return out
s = merged(ss, {"train_examples_per_sec": "higher", "infer_b1_ms": "lower",
                "infer_b32_examples_per_sec": "higher", "peak_rss_bytes": "lower",
                "compile_seconds": "lower", "compile_cached_seconds": "lower"})
t = merged(ts, {"train_examples_per_sec": "higher", "infer_b1_ms": "lower",
                "infer_b1_detect_ms": "lower", "infer_b32_examples_per_sec": "higher",
                "peak_rss_bytes": "lower"})
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
print(f"best of {n} rounds; train examples/s per round: ssdc "
      + " ".join(f"{r['train_examples_per_sec']:.2f}" for r in ss) + ", PyTorch "
      + " ".join(f"{r['train_examples_per_sec']:.2f}" for r in ts))
print(f"CPU time taken by the hypervisor (steal) during the runs: ssdc {steal_s / hz:.2f} s, "
      f"PyTorch {steal_t / hz:.2f} s")
PY
