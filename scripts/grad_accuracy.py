#!/usr/bin/env python3
"""How far ssdc's and PyTorch's float32 gradients are from float64, on random batches.

Usage (after scripts/setup_torch_venv.sh and swift build -c release):
    .venv-torch/bin/python scripts/grad_accuracy.py [--size 256] [--batches 6] [--threads 2]

For each batch (two images of uniform noise in 0..255, one random box each) it runs one
training step three ways from the same float32 weights (tinyssd_weights' model): ssdc
(`ssdc run --step`), PyTorch float32, and PyTorch with default dtype float64. It prints,
per batch, how close the float64 forward comes to a ReLU or max-pool switch (the margins of
make_fixtures._switch_margins) and the worst tensors by ssdc's relative L2 error against
float64, beside PyTorch float32's. Where a margin is below float32's rounding (~1e-7..1e-6)
one float32 run may take the other branch: its gradients then differ from float64 by
~1e-3 in every layer below that point, whatever the accumulation precision.
"""

import argparse
import copy
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as MF  # noqa: E402
import tinyssd_torch as T  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_grads(model, X, Y, dtype):
    net = copy.deepcopy(model).to(dtype).train()
    a, c, b = net(X.to(dtype))
    bl, bm, cl = T.multibox_target_valid(a.float(), Y)
    T.calc_loss(c, cl, b, bl.to(dtype), bm.to(dtype)).mean().backward()
    return {n: p.grad.detach().double() for n, p in net.named_parameters()}


def zero_gradient_bias(name):
    parts = name.split(".")
    return name.startswith("blk_") and parts[-1] == "bias" and parts[-2] in ("0", "3")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ssdc", default=os.path.join(REPO, ".build", "release", "ssdc"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MF.make_model()
    net64 = copy.deepcopy(model).double().train()
    tmp = tempfile.mkdtemp(prefix="ssdc-grad-")
    weights = os.path.join(tmp, "w.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    print(f"torch {torch.__version__}; {args.batches} batches of 2 x {args.size}x{args.size}; "
          f"{args.threads} threads")
    for seed in range(1, args.batches + 1):
        g = torch.Generator().manual_seed(seed)
        X = torch.rand((2, 3, args.size, args.size), generator=g) * 255
        lo = torch.rand((2, 1, 2), generator=g) * 0.5
        hi = lo + 0.2 + torch.rand((2, 1, 2), generator=g) * 0.3
        Y = torch.cat([torch.zeros(2, 1, 1), lo, hi], dim=2)
        relu, pool = MF._switch_margins(net64, X.double())
        g32 = step_grads(model, X, Y, torch.float32)
        torch.set_default_dtype(torch.float64)
        try:
            g64 = step_grads(model, X, Y, torch.float64)
        finally:
            torch.set_default_dtype(torch.float32)
        batch, out = os.path.join(tmp, "b.safetensors"), os.path.join(tmp, "o.safetensors")
        save_file({"X": X.contiguous(), "Y": Y.contiguous()}, batch)
        subprocess.run([args.ssdc, "run", "--step", "--weights", weights, "--input", batch, "--out", out,
                        "--threads", str(args.threads)], check=True, stdout=subprocess.DEVNULL)
        ours = load_file(out)
        rows = []
        for n, r in g64.items():
            scale = g64[n[:-4] + "weight"].norm() if zero_gradient_bias(n) else r.norm()
            if scale == 0:
                continue
            es = float((ours["grad." + n].double() - r).norm() / scale)
            et = float((g32[n] - r).norm() / scale)
            rows.append((es, et, n))
        worst = sorted(rows, reverse=True)[:3]
        torch_worst = max(rows, key=lambda t: t[1])
        print(f"seed {seed}: margins ReLU {relu:.1e} pool {pool:.1e}; ssdc worst "
              + ", ".join(f"{n} {es:.1e} (torch {et:.1e})" for es, et, n in worst)
              + f"; torch worst {torch_worst[2]} {torch_worst[1]:.1e}")


if __name__ == "__main__":
    main()
