#!/usr/bin/env python3
"""Write the PyTorch reference fixtures of the example models in Examples/.

Usage:
    .venv-torch/bin/python scripts/make_example_fixtures.py [--out Tests/Fixtures/examples]
        [--model ssd300-vgg16|mobilenet-ssdlite|resnet-fpn-ssd ...]

For each model (scripts/examples_torch.py, the twins of Examples/<model>/model.swift, at
the width and input size of the model file, 3 classes), the same files and tensor names as
TinySSD's (scripts/make_fixtures.py writes both with the same functions):

  <model>_weights.safetensors  state_dict: default init after torch.manual_seed(0), then BN
                               running stats from 10 train-mode forwards on random images
                               (4,3,H,W) at the model's input size
  <model>_forward.safetensors  X (2,3,H,W); train-mode and eval-mode outputs, softmax probs
                               and d2l.multibox_detection
  <model>_step.safetensors     one SGD step (lr 0.2, wd 5e-4): targets, losses, grad.* and
                               grad64.* of every parameter, state.* (BN running statistics
                               and counters after the step)

X is stored as U8 (integer pixels 0..255, exactly the float32 values the networks saw):
at 300x300 a float32 X alone would be 2 MB. A text summary of each architecture (module
output shapes, parameters, anchors per scale) is printed and written to <model>.txt, to
check the DSL graph against.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import examples_torch as E  # noqa: E402
import make_fixtures as MF  # noqa: E402

NUM_CLASSES = 3

# Labels of the step's batch: objects of the three classes, some overlapping, sized so that
# every scale of every model gets positive anchors (so every head has a gradient), and
# padding rows (class -1) in both images.
STEP_Y = [
    [[0, 0.05, 0.05, 0.15, 0.17], [2, 0.55, 0.50, 0.90, 0.95], [1, 0.30, 0.35, 0.62, 0.70],
     [1, 0.08, 0.10, 0.95, 0.92], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]],
    [[1, 0.30, 0.25, 0.70, 0.80], [0, 0.62, 0.05, 0.97, 0.33], [2, 0.05, 0.20, 0.75, 0.95],
     [0, 0.72, 0.70, 0.90, 0.92], [1, 0.0, 0.0, 0.64, 0.64], [-1, 0, 0, 0, 0]],
]


def spec_for(name):
    cls, cfg = E.EXAMPLES[name]
    return MF.Spec(prefix=name, build=cls, num_classes=NUM_CLASSES, input_hw=cfg.INPUT_SIZE,
                   step_y=STEP_Y, image=MF._image_u8,
                   x_text="integers uniform in [0,255], stored as U8 (feed as float32)",
                   generator="scripts/make_example_fixtures.py", step_tries=12, strict=False)


def write_model(name, out):
    spec = spec_for(name)
    print(f"{name}:")
    model = MF.make_model(spec)
    text = E.summary(name, model)
    print(text)
    with open(os.path.join(out, f"{name}.txt"), "w") as f:
        f.write(text + "\n")
    MF.write_weights(model, out, spec)
    MF.write_forward(model, out, spec)
    MF.write_step(model, out, spec)
    return [spec.file(kind) for kind in ("weights", "forward", "step")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(MF.REPO, "Tests", "Fixtures", "examples"),
                    help="output folder (default: Tests/Fixtures/examples of the repo)")
    ap.add_argument("--model", action="append", choices=list(E.EXAMPLES),
                    help="only this model (repeatable; default: all three)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; writing to {args.out}")
    files = []
    for name in args.model or list(E.EXAMPLES):
        files += write_model(name, args.out)
    MF.summarize(args.out, files)


if __name__ == "__main__":
    main()
