#!/usr/bin/env python3
"""Measure PyTorch CPU eager speed of TinySSD on this machine (the baseline for ssdc).

Usage:
    .venv-torch/bin/python scripts/bench_torch.py --threads 2 --batch-size 32 [--json] [--compile]
        [--model tinyssd|ssd300-vgg16|mobilenet-ssdlite|resnet-fpn-ssd]

Measures, for TinySSD(num_classes=1) at 256x256 (the seed's setting), or an example model
of Examples/ (scripts/examples_torch.py, 3 classes, at its own input size):
  (i)   training examples/s at batch B: forward, d2l.multibox_target, CE + L1 loss,
        backward, SGD(lr=0.2, wd=5e-4) step and the seed's two metrics (as in the
        seed's loop); 2 warm-up steps, then --train-steps timed steps;
  (ii)  inference latency at batch 1: forward (median of --latency-runs), and
        forward + softmax + d2l.multibox_detection (median of fewer runs: d2l's
        NMS is a Python loop);
  (iii) forward throughput at batch 32 (examples/s);
  (iv)  peak RSS of a fresh process that builds the model and runs 2 training steps
        at batch B (ru_maxrss of that child, and its growth over the setup);
  (v)   with --compile: training examples/s, batch-1 forward latency and batch-32
        forward examples/s with torch.compile (in a child process, given
        --compile-timeout seconds; null if it fails or times out), its warm-up time apart;
  (vi)  with --onnx: the same model's forward (cls_preds, bbox_preds; anchors are
        constants) exported to ONNX and run by onnxruntime's CPU provider with the same
        intra-op threads: batch-1 latency and batch-32 examples/s (forward only: ONNX
        has no d2l detection).

Inputs are uniform[0,255) images with one random box each (like the bananas set).
The model is the fixture model (scripts/tinyssd_torch.make_reference_model): default
init after seed 0 with BN running statistics warmed up, so eval outputs are not
saturated. With --json, stdout holds only one JSON object and the table goes to stderr.
"""

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tinyssd_torch as T  # noqa: E402

SIZE = 256  # the input's height and width; main() sets it from --model
MODEL = "tinyssd"


def make_model():
    """The benchmarked network: TinySSD as the fixtures make it, or an example model."""
    if MODEL == "tinyssd":
        return T.make_reference_model()
    import examples_torch as E
    return E.build(MODEL, 3)
LR, WD = 0.2, 5e-4


def make_batch(batch_size, seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand((batch_size, 3, SIZE, SIZE), generator=gen) * 255
    xy = torch.rand((batch_size, 2), generator=gen) * 0.6
    wh = 0.1 + torch.rand((batch_size, 2), generator=gen) * 0.3
    Y = torch.cat([torch.zeros((batch_size, 1)), xy, xy + wh], dim=1).unsqueeze(1)
    return X, Y


def train_step(net, trainer, X, Y):
    """One iteration of the seed's training loop; returns the metric sums."""
    d2l = T.import_d2l()
    trainer.zero_grad()
    anchors, cls_preds, bbox_preds = net(X)
    bbox_labels, bbox_masks, cls_labels = d2l.multibox_target(anchors, Y)
    l = T.calc_loss(cls_preds, cls_labels, bbox_preds, bbox_labels, bbox_masks)
    l.mean().backward()
    trainer.step()
    correct = float((cls_preds.detach().argmax(dim=-1).type(cls_labels.dtype) == cls_labels).sum())
    mae = float(torch.abs((bbox_labels - bbox_preds.detach()) * bbox_masks).sum())
    return correct, mae


def bench_train(net, batch_size, warmup, steps):
    trainer = torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)
    X, Y = make_batch(batch_size, seed=10)
    net.train()
    for _ in range(warmup):
        train_step(net, trainer, X, Y)
    times = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        train_step(net, trainer, X, Y)
        times.append(time.perf_counter() - t)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"train_examples_per_sec": steps * batch_size / dt,
            "train_step_ms": 1e3 * dt / steps, "train_step_ms_min": 1e3 * min(times),
            # CPU seconds used per wall second per thread: well below 1 means the
            # process did not get its cores (another load on the machine).
            "train_cpu_util": cpu / (dt * torch.get_num_threads())}


def _median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _forward_timings(fn, latency_runs, b32_runs):
    """(batch-1 median ms, batch-32 examples/s) of fn(X) after warm-up calls."""
    X1, _ = make_batch(1, seed=11)
    X32, _ = make_batch(32, seed=12)
    for _ in range(3):
        fn(X1)
    b1 = _median_ms(lambda: fn(X1), latency_runs)
    fn(X32)
    t0 = time.perf_counter()
    for _ in range(b32_runs):
        fn(X32)
    return b1, b32_runs * 32 / (time.perf_counter() - t0)


def bench_infer(net, latency_runs, detect_runs, b32_runs):
    d2l = T.import_d2l()
    net.eval()
    X1, _ = make_batch(1, seed=11)
    out = {}
    with torch.no_grad():
        out["infer_b1_ms"], out["infer_b32_examples_per_sec"] = _forward_timings(net, latency_runs, b32_runs)

        def detect():
            anchors, cls_preds, bbox_preds = net(X1)
            probs = F.softmax(cls_preds, dim=2).permute(0, 2, 1)
            return d2l.multibox_detection(probs, bbox_preds, anchors)

        det = detect()
        out["detect_kept_rows"] = int((det[0, :, 0] >= 0).sum())
        out["infer_b1_detect_ms"] = _median_ms(detect, detect_runs)
    return out


# ----------------------------------------------------------------------------
# Child processes (same script, hidden flags).

def _proc_status(key):
    """A memory line of /proc/self/status in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child_rss(args):
    """Peak RSS while training, in a fresh process.

    ru_maxrss is not used by default: after fork+exec Linux carries the parent's
    high-water mark into it. /proc/self/status VmHWM is per address space, and
    writing 5 to /proc/self/clear_refs resets it to the current RSS, so the peak
    seen afterwards is the peak during the training steps.
    """
    net = make_model()
    trainer = torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)
    X, Y = make_batch(args.batch_size, seed=10)
    net.train()
    base = _proc_status("VmRSS")
    method = "VmHWM after clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        method = "VmHWM (not reset)"
    for _ in range(2):
        train_step(net, trainer, X, Y)
    peak = _proc_status("VmHWM")
    if base is None or peak is None:
        base, method = None, "ru_maxrss"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"setup_rss_bytes": base, "peak_rss_bytes": peak, "rss_method": method}))


def child_compile(args):
    net = make_model()
    cnet = torch.compile(net)
    t0 = time.perf_counter()
    trainer = torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)
    X, Y = make_batch(args.batch_size, seed=10)
    net.train()
    for _ in range(2):
        train_step(cnet, trainer, X, Y)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps = max(2, args.train_steps)
    for _ in range(steps):
        train_step(cnet, trainer, X, Y)
    dt = time.perf_counter() - t0
    # Inference: a fresh compile of the eval-mode model (its own warm-up, timed apart).
    inet = torch.compile(make_model().eval())
    with torch.no_grad():
        t0 = time.perf_counter()
        inet(make_batch(1, seed=11)[0])
        inet(make_batch(32, seed=12)[0])
        infer_compile_s = time.perf_counter() - t0
        b1, b32 = _forward_timings(inet, args.latency_runs, args.b32_runs)
    print(json.dumps({"compile_train_examples_per_sec": steps * args.batch_size / dt,
                      "compile_warmup_sec": compile_s, "compile_infer_b1_ms": b1,
                      "compile_infer_b32_examples_per_sec": b32,
                      "compile_infer_warmup_sec": infer_compile_s}))


class _Heads(torch.nn.Module):
    """The forward without anchors (constants of the input size), for ONNX."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, X):
        _, cls_preds, bbox_preds = self.net(X)
        return cls_preds, bbox_preds


def bench_onnx(args):
    import tempfile

    import onnxruntime as ort
    net = _Heads(make_model().eval())
    path = os.path.join(tempfile.mkdtemp(prefix="ssdc-onnx-"), "tinyssd.onnx")
    X1, _ = make_batch(1, seed=11)
    with torch.no_grad():
        ref = net(X1)
        # (the TorchScript exporter may fold BN into the convs of the module it is given:
        # export a copy, so `net` stays the reference)
        torch.onnx.export(copy.deepcopy(net), (X1,), path, input_names=["X"],
                          output_names=["cls_preds", "bbox_preds"], opset_version=17, dynamo=False,
                          dynamic_axes={"X": {0: "N"}, "cls_preds": {0: "N"}, "bbox_preds": {0: "N"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": X1.numpy()})
    err = max(float((torch.from_numpy(g) - r).abs().max() / r.abs().max()) for g, r in zip(got, ref))
    b1, b32 = _forward_timings(lambda X: sess.run(None, {"X": X.numpy()}), args.latency_runs, args.b32_runs)
    return {"onnxruntime_version": ort.__version__, "onnx_infer_b1_ms": b1,
            "onnx_infer_b32_examples_per_sec": b32, "onnx_max_rel_diff_vs_torch": err}


def run_child(args, flag, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), flag, "--model", MODEL,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--train-steps", str(args.train_steps), "--latency-runs", str(args.latency_runs),
           "--b32-runs", str(args.b32_runs)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
    return json.loads(p.stdout.strip().splitlines()[-1]), None


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--model", default="tinyssd", help="tinyssd or an example model of Examples/")
    ap.add_argument("--batch-size", type=int, default=32, help="training batch size")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile training")
    ap.add_argument("--compile-timeout", type=float, default=300.0)
    ap.add_argument("--onnx", action="store_true", help="also time onnxruntime's forward")
    ap.add_argument("--train-steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--detect-runs", type=int, default=5)
    ap.add_argument("--b32-runs", type=int, default=3)
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global MODEL, SIZE
    MODEL = args.model
    if MODEL != "tinyssd":
        import examples_torch as E
        SIZE = E.EXAMPLES[MODEL][1].INPUT_SIZE[0]

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    T.import_d2l()
    if args.rss_child:
        return child_rss(args)
    if args.compile_child:
        return child_compile(args)

    t_start = time.perf_counter()
    res = {"torch_version": torch.__version__, "threads": args.threads, "model": MODEL,
           "batch_size": args.batch_size}
    train_net = make_model()
    res.update(bench_train(train_net, args.batch_size, warmup=2, steps=args.train_steps))
    res.update(bench_infer(make_model(), args.latency_runs,
                           args.detect_runs, args.b32_runs))
    rss, err = run_child(args, "--rss-child", timeout=300)
    res["peak_rss_bytes"] = rss["peak_rss_bytes"] if rss else None
    res["setup_rss_bytes"] = rss["setup_rss_bytes"] if rss else None
    res["peak_rss_delta_bytes"] = (rss["peak_rss_bytes"] - rss["setup_rss_bytes"]
                                   if rss and rss["setup_rss_bytes"] is not None else None)
    res["rss_method"] = rss["rss_method"] if rss else None
    if err:
        res["peak_rss_error"] = err
    if args.compile:
        comp, err = run_child(args, "--compile-child", timeout=args.compile_timeout)
        for key in ("compile_train_examples_per_sec", "compile_warmup_sec", "compile_infer_b1_ms",
                    "compile_infer_b32_examples_per_sec", "compile_infer_warmup_sec"):
            res[key] = comp[key] if comp else None
        if not comp:
            res["compile_error"] = err
    if args.onnx:
        try:
            res.update(bench_onnx(args))
        except Exception as e:  # reported, not fatal: the other figures stand
            res["onnx_error"] = f"{type(e).__name__}: {e}"
    res["bench_wall_sec"] = time.perf_counter() - t_start

    def mb(x):
        return "n/a" if x is None else f"{x / 2**20:.0f} MiB"

    rows = [
        ("torch", res["torch_version"]),
        ("threads / batch size", f"{args.threads} / {args.batch_size}"),
        (f"train examples/s ({MODEL} {SIZE}x{SIZE})", f"{res['train_examples_per_sec']:.2f}"
         f"  ({res['train_step_ms']:.0f} ms/step, best {res['train_step_ms_min']:.0f}; "
         f"CPU use {100 * res['train_cpu_util']:.0f}% of {args.threads} threads)"),
        ("infer b1 forward ms (median)", f"{res['infer_b1_ms']:.2f}"),
        ("infer b1 forward+detection ms", f"{res['infer_b1_detect_ms']:.2f}"
         f"  ({res['detect_kept_rows']} rows kept by NMS)"),
        ("infer b32 examples/s", f"{res['infer_b32_examples_per_sec']:.2f}"),
        ("peak RSS, 2 train steps", f"{mb(res['peak_rss_bytes'])}"
         f"  (+{mb(res['peak_rss_delta_bytes'])} over setup)"),
    ]
    if args.compile:
        c = res["compile_train_examples_per_sec"]
        rows.append(("torch.compile train examples/s",
                     f"{c:.2f}" if c is not None else f"n/a ({res.get('compile_error')})"))
        if c is not None:
            rows.append(("torch.compile infer b1 ms / b32 examples/s",
                         f"{res['compile_infer_b1_ms']:.2f} / {res['compile_infer_b32_examples_per_sec']:.2f}"
                         f"  (warm-up {res['compile_warmup_sec']:.0f} s train, "
                         f"{res['compile_infer_warmup_sec']:.0f} s infer)"))
    if args.onnx:
        rows.append(("onnxruntime infer b1 ms / b32 examples/s",
                     f"{res['onnx_infer_b1_ms']:.2f} / {res['onnx_infer_b32_examples_per_sec']:.2f}"
                     f"  (onnxruntime {res['onnxruntime_version']})" if "onnx_infer_b1_ms" in res
                     else f"n/a ({res.get('onnx_error')})"))
    rows.append(("bench wall time", f"{res['bench_wall_sec']:.0f} s"))
    out = sys.stderr if args.json else sys.stdout
    if res["train_cpu_util"] < 0.8:
        print("warning: the training steps got less CPU than asked for; another load "
              "was probably running, so the numbers are low", file=out)
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}", file=out)
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
