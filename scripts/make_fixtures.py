#!/usr/bin/env python3
"""Write the PyTorch reference fixtures of ssdc (safetensors files).

Usage:
    scripts/setup_torch_venv.sh            # once: venv at .venv-torch
    .venv-torch/bin/python scripts/make_fixtures.py [--out Tests/Fixtures]

Needs torch, numpy, safetensors and d2l==1.0.3 (installed with --no-deps) plus
what `import d2l.torch` pulls in: pandas, requests, Pillow, matplotlib,
matplotlib-inline, IPython, scipy (see scripts/requirements-fixtures.txt).
torchvision is replaced by an empty placeholder module (scripts/tinyssd_torch.py).

The reference is the chapter's PyTorch code (seed 002): TinySSD as defined there
and d2l's own multibox_prior / multibox_target / multibox_detection. Everything
is seeded and runs on one CPU thread, so reruns give the same files (up to the
float behaviour of the torch build). Files written (see SPEC.md for meanings):

  tinyssd_weights.safetensors   state_dict of TinySSD(num_classes=1): default init
                                after torch.manual_seed(0), then BN running stats
                                from 10 train-mode forwards on random images
  tinyssd_forward.safetensors   X (2,3,128,128); train-mode and eval-mode outputs,
                                softmax probs and d2l.multibox_detection
  tinyssd_anchors256.safetensors anchors of a 256x256 input, (1,5444,4)
  tinyssd_step.safetensors      one SGD training step (lr 0.2, wd 5e-4) from the
                                weights above: inputs, targets, losses, grads
                                (and float64 grads of every parameter) and the state after
                                the step that grads do not determine (BN running
                                statistics, num_batches_tracked)
  multibox_cases.safetensors    crafted multibox_target and multibox_detection cases
  loss_variants.safetensors     losses/gradients of CE+L1, smooth L1, focal, weights

The weights, forward and step files are written by functions that take a Spec (network,
classes, input size, labels); scripts/make_example_fixtures.py calls them for the models
in Examples/.

Label rows whose class is negative are padding: d2l.multibox_target does not
skip them, so it is called per image on the valid rows only (as the SPEC says).
"""

import argparse
import copy
import json
import os
import struct
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tinyssd_torch as T  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR, WD = 0.2, 5e-4
NUM_CLASSES = 1

# Seeds: one per use, so that the files do not depend on each other's order.
SEED_INIT, SEED_WARMUP, SEED_FWD_X, SEED_STEP_X, SEED_CASES, SEED_LOSS = 0, 1, 2, 3, 4, 5

d2l = T.import_d2l()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _image(shape, gen):
    """Random image batch, uniform in [0, 255)."""
    return torch.rand(shape, generator=gen) * 255


def _image_u8(shape, gen):
    """Random image batch of integer pixels 0..255 as uint8 (a quarter of the bytes)."""
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def _common_meta(generator="scripts/make_fixtures.py"):
    import d2l as d2l_pkg
    return {
        "torch_version": torch.__version__,
        "d2l_version": getattr(d2l_pkg, "__version__", "1.0.3"),
        "numpy_version": np.__version__,
        "generator": generator,
        "num_threads": str(torch.get_num_threads()),
    }


# Labels of the training step's batch (class, xmin, ymin, xmax, ymax; class -1 = padding).
STEP_Y = [
    [[0, 0.10, 0.08, 0.42, 0.50], [0, 0.55, 0.50, 0.90, 0.95], [-1, -1, -1, -1, -1]],
    [[0, 0.30, 0.25, 0.70, 0.80], [-1, -1, -1, -1, -1], [-1, 0, 0, 0, 0]],
]


@dataclass(frozen=True)
class Spec:
    """What differs between the fixture files of TinySSD and those of another network
    (scripts/make_example_fixtures.py): the defaults make TinySSD's files."""
    prefix: str = "tinyssd"  # files <prefix>_{weights,forward,step}.safetensors
    build: Callable = T.TinySSD  # build(num_classes=...) -> nn.Module
    num_classes: int = NUM_CLASSES
    input_hw: tuple = (128, 128)
    step_y: list = None  # STEP_Y if None
    image: Callable = _image  # (shape, generator) -> the batch X as stored
    x_text: str = "uniform[0,255) float32"
    generator: str = "scripts/make_fixtures.py"
    # Image seeds tried for the step's batch; if none keeps STEP_SWITCH_MARGIN, the one
    # with the largest margin is taken (a large network always has values near a switch).
    step_tries: int = 200
    # TinySSD's files insist on a switch margin and on no exact conf ties, and keep their
    # metadata; the others take the best batch found and record float32 noise floors.
    strict: bool = True

    @property
    def labels(self):
        return STEP_Y if self.step_y is None else self.step_y

    def file(self, kind):
        return f"{self.prefix}_{kind}.safetensors"

    def batch_shape(self, n):
        return (n, 3) + tuple(self.input_hw)


TINYSSD = Spec()


def _save(tensors, path, meta):
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        if v.dtype == torch.float64:
            v = v.float()
        out[k] = v.contiguous().clone()
    save_file(out, path, metadata={k: str(v) for k, v in meta.items()})
    _sort_metadata(path)
    os.chmod(path, 0o644)


def _sort_metadata(path):
    """Rewrite the header with __metadata__ keys sorted, for byte-identical reruns.

    save_file writes the metadata in hash-map order, which changes from run to
    run; the tensor entries and data are already deterministic. Only the order of
    keys changes, so the header keeps its length and the data offsets stay valid.
    """
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        new = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(new) != len(raw.rstrip(b" ")):
            return  # serialised differently than expected: leave the file as written
        f.seek(8)
        f.write(new.ljust(n, b" "))


def _confs(probs_nqa):
    """Per-anchor confidence = max over non-background classes, (N, A)."""
    return probs_nqa[:, 1:, :].max(dim=1).values


def _min_gap(values):
    s = torch.sort(values.reshape(-1)).values
    return float((s[1:] - s[:-1]).min()) if s.numel() > 1 else float("inf")


def _detection_margins(probs_nqa, offsets, anchors):
    """(min gap between confs of one image, min |IoU - 0.5| over box pairs)."""
    gap, iou_margin = float("inf"), float("inf")
    conf = _confs(probs_nqa)
    for i in range(probs_nqa.shape[0]):
        gap = min(gap, _min_gap(conf[i]))
        boxes = d2l.offset_inverse(anchors.squeeze(0), offsets[i].reshape(-1, 4))
        iou = d2l.box_iou(boxes, boxes)
        off = ~torch.eye(boxes.shape[0], dtype=torch.bool)
        iou_margin = min(iou_margin, float((iou[off] - 0.5).abs().min()))
    return gap, iou_margin


# ----------------------------------------------------------------------------
# (a) weights

def make_model(spec=TINYSSD):
    return T.make_reference_model(spec.num_classes, init_seed=SEED_INIT, warmup_seed=SEED_WARMUP,
                                  build=spec.build, input_hw=spec.input_hw)


def write_weights(model, out, spec=TINYSSD):
    sd = model.state_dict()
    meta = dict(_common_meta(spec.generator), num_classes=spec.num_classes, init_seed=SEED_INIT,
                warmup="10 train-mode forwards under no_grad on uniform[0,255) images "
                       f"({','.join(map(str, spec.batch_shape(4)))}), generator seed {SEED_WARMUP}",
                order=json.dumps(list(sd.keys())))
    _save(dict(sd), os.path.join(out, spec.file("weights")), meta)


# ----------------------------------------------------------------------------
# (b) forward

def _exact_conf_ties(probs_nqa):
    """Pairs of equal per-anchor confidences within one image."""
    conf = _confs(probs_nqa)
    return sum(int((torch.diff(torch.sort(conf[i]).values) == 0).sum())
               for i in range(conf.shape[0]))


def write_forward(model, out, spec=TINYSSD):
    # Pick the first image seed whose detection has no exact conf ties (with many anchors
    # in a narrow band of confs there may be none: then the one with the fewest ties).
    best = None
    for seed in range(SEED_FWD_X, SEED_FWD_X + 1000, 100):
        X = spec.image(spec.batch_shape(2), _gen(seed))
        m_eval = copy.deepcopy(model).eval()
        with torch.no_grad():
            anchors, cls_e, bbox_e = m_eval(X.float())
        probs = F.softmax(cls_e, dim=2)
        ties = _exact_conf_ties(probs.permute(0, 2, 1))
        if best is None or ties < best[0]:
            best = (ties, seed, X, anchors, cls_e, bbox_e, probs)
        if ties == 0:
            break
    ties, seed, X, anchors, cls_e, bbox_e, probs = best
    if ties and spec.strict:
        raise RuntimeError("could not find an image batch without conf ties")
    gap, iou_margin = _detection_margins(probs.permute(0, 2, 1), bbox_e, anchors)
    m_train = copy.deepcopy(model).train()
    with torch.no_grad():
        anchors_t, cls_t, bbox_t = m_train(X.float())
    assert torch.equal(anchors, anchors_t)
    det = d2l.multibox_detection(probs.permute(0, 2, 1), bbox_e, anchors)
    conf = probs[:, :, 1:].max(dim=2).values
    # Near ties (not exact) are unavoidable with thousands of confs in a narrow band; an
    # implementation whose confs differ by an ulp may order such rows differently.
    near = sum(int((torch.diff(torch.sort(conf[i]).values) < 1e-6).sum())
               for i in range(conf.shape[0]))
    print(f"  forward: X seed {seed}; eval conf min {float(conf.min()):.4g} max "
          f"{float(conf.max()):.4g}; train conf min "
          f"{float(F.softmax(cls_t, 2)[:, :, 1:].min()):.4g} max "
          f"{float(F.softmax(cls_t, 2)[:, :, 1:].max()):.4g}; min conf gap {gap:.3g}; "
          f"conf pairs closer than 1e-6 {near}; min |IoU-0.5| {iou_margin:.3g}; kept rows "
          f"{[int((det[i, :, 0] >= 0).sum()) for i in range(det.shape[0])]}")
    tensors = {
        "X": X,
        "train.cls_preds": cls_t, "train.bbox_preds": bbox_t,
        "fwd.anchors": anchors,
        "eval.cls_preds": cls_e, "eval.bbox_preds": bbox_e,
        "eval.probs": probs, "eval.detection": det,
    }
    meta = dict(_common_meta(spec.generator), weights=spec.file("weights"), x_seed=seed,
                x=spec.x_text,
                train="deep copy of the model in train mode (batch statistics)",
                eval="eval mode (running statistics); probs = softmax over classes, (N,A,q+1)",
                detection="d2l.multibox_detection(probs.permute(0,2,1), bbox_preds, anchors), "
                          "nms_threshold 0.5, pos_threshold 0.009999999",
                min_conf_gap=repr(gap), conf_pairs_closer_than_1e_6=near,
                min_abs_iou_minus_half=repr(iou_margin),
                note="confs have no exact ties but do have near ties (see min_conf_gap); "
                     "compare detections tolerantly")
    if ties:
        meta.update(exact_conf_ties=ties,
                    note="some confs of one image are exactly equal (exact_conf_ties pairs) and "
                         "many are near ties; compare detections tolerantly")
    if not spec.strict:
        meta.update(float32_noise=json.dumps(_float32_noise(model, X.float())),
                    float32_noise_text="max |torch float32 - float64| / max |float64| of each "
                                       "output, same weights and X: the floor of any float32 "
                                       "implementation's error (train-mode BN over tiny maps "
                                       "at batch 2 amplifies rounding)")
    _save(tensors, os.path.join(out, spec.file("forward")), meta)


def _float32_noise(model, X):
    """PyTorch float32's own error (relative to the max) of each forward output, against
    the same forward in float64, in train and eval mode."""
    noise = {}
    for mode in ("train", "eval"):
        m32 = copy.deepcopy(model).train(mode == "train")
        m64 = copy.deepcopy(model).double().train(mode == "train")
        with torch.no_grad():
            _, c32, b32 = m32(X)
            _, c64, b64 = m64(X.double())
        for name, a, b in (("cls_preds", c32, c64), ("bbox_preds", b32, b64)):
            noise[f"{mode}.{name}"] = float((a.double() - b).abs().max() / b.abs().max())
    return noise


# ----------------------------------------------------------------------------
# (c) anchors of a 256x256 input

def write_anchors256(model, out):
    shapes = [(32, 32), (16, 16), (8, 8), (4, 4), (1, 1)]
    anchors = T.anchors_for(shapes)
    with torch.no_grad():
        fwd_anchors, _, _ = copy.deepcopy(model).eval()(torch.zeros((1, 3, 256, 256)))
    assert torch.equal(anchors, fwd_anchors), "anchors differ from the forward's"
    assert anchors.shape == (1, 5444, 4)
    meta = dict(_common_meta(), input="256x256", feature_maps=json.dumps(shapes),
                sizes=json.dumps(T.SIZES), ratios=json.dumps(T.RATIOS))
    _save({"anchors": anchors}, os.path.join(out, "tinyssd_anchors256.safetensors"), meta)


# ----------------------------------------------------------------------------
# (d) one training step

def _switch_margins(net, X):
    """How far a forward pass is from a ReLU or max-pool switch, relative to the scale.

    Returns (min |ReLU input| / rms (and |ReLU6 input - 6| / rms), min gap between the
    largest and the second largest value of a max-pool window whose maximum is positive /
    rms), over every ReLU, ReLU6 and max pool (module) of `net`. Where a value sits within float32 rounding of such a switch, float32
    and float64 take different branches (a ReLU passes or blocks a gradient, a window
    routes it to another pixel) and their gradients differ by ~1e-3 relative whatever the
    accumulation: neither is wrong, the gradient is discontinuous there.
    """
    worst = {"relu": float("inf"), "pool": float("inf")}

    def rms(v):
        return v.pow(2).mean().sqrt()

    def relu_hook(m, inp, _out):
        v = inp[0].detach()
        distance = v.abs()
        if isinstance(m, torch.nn.ReLU6):
            distance = torch.minimum(distance, (v - 6).abs())
        worst["relu"] = min(worst["relu"], float(distance.min() / rms(v)))

    def pool_hook(m, inp, _out):
        v = inp[0].detach()
        if isinstance(m, torch.nn.MaxPool2d):
            windows = _max_pool_windows(v, m)
        else:  # global max pool: one window per plane
            windows = v.reshape(v.shape[0] * v.shape[1], -1, 1)
        top2 = windows.topk(2, dim=1).values
        live = top2[:, 0] > 0  # an all-nonpositive window's gradient dies in the ReLU anyway
        gaps = (top2[:, 0] - top2[:, 1])[live]
        if gaps.numel():
            worst["pool"] = min(worst["pool"], float(gaps.min() / rms(v)))

    hooks = []
    for m in net.modules():
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)):
            hooks.append(m.register_forward_hook(relu_hook))
        if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d)):
            hooks.append(m.register_forward_hook(pool_hook))
    with torch.no_grad():
        net(X)
    for h in hooks:
        h.remove()
    return worst["relu"], worst["pool"]


def _max_pool_windows(v, pool):
    """The windows of nn.MaxPool2d `pool` (square kernel, int stride and padding, any
    ceil_mode) over v (N,C,H,W), as (NC, k*k, L); padding is -inf as in PyTorch."""
    k, stride, pad = pool.kernel_size, pool.stride, pool.padding

    def extra(n):  # right/bottom padding that ceil mode's last window reaches
        if not pool.ceil_mode:
            return 0
        out = -(-(n + 2 * pad - k) // stride) + 1
        if (out - 1) * stride >= n + pad:  # the last window must start inside the input
            out -= 1
        return max(0, (out - 1) * stride + k - (n + 2 * pad))

    planes = v.reshape(-1, 1, *v.shape[2:])
    planes = F.pad(planes, (pad, pad + extra(v.shape[3]), pad, pad + extra(v.shape[2])),
                   value=float("-inf"))
    return F.unfold(planes, k, stride=stride)


# Smallest relative distance from a ReLU or max-pool switch the step's batch must keep
# (in float64): float32's forward is ~1e-7..1e-6 off, so a batch closer than this would
# compare branches, not arithmetic. Random 128x128 batches come within 1e-8..1e-6.
STEP_SWITCH_MARGIN = 2e-6


def _step_batch(model, spec=TINYSSD):
    """The first image seed from SEED_STEP_X whose float64 train-mode forward keeps
    STEP_SWITCH_MARGIN from every switch, and its margins; if none of spec.step_tries
    seeds does, the one with the largest margin (unless spec.strict)."""
    net64 = copy.deepcopy(model).double().train()
    best = None
    for seed in range(SEED_STEP_X, SEED_STEP_X + spec.step_tries):
        X = spec.image(spec.batch_shape(2), _gen(seed))
        relu, pool = _switch_margins(net64, X.double())
        if min(relu, pool) >= STEP_SWITCH_MARGIN:
            return seed, X, relu, pool
        if best is None or min(relu, pool) > min(best[2], best[3]):
            best = (seed, X, relu, pool)
    if spec.strict:
        raise RuntimeError("no step batch keeps the switch margin")
    return best


def write_step(model, out, spec=TINYSSD):
    seed, X, relu_margin, pool_margin = _step_batch(model, spec)
    net = copy.deepcopy(model)
    Y = torch.tensor(spec.labels, dtype=torch.float32)
    trainer = torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)
    net.train()
    trainer.zero_grad()
    anchors, cls_preds, bbox_preds = net(X.float())
    bbox_labels, bbox_masks, cls_labels = T.multibox_target_valid(anchors, Y)
    l = T.calc_loss(cls_preds, cls_labels, bbox_preds, bbox_labels, bbox_masks)
    loss = l.mean()
    loss.backward()
    grads = {f"grad.{n}": p.grad.detach().clone() for n, p in net.named_parameters()}
    trainer.step()
    # The updated trainable parameters follow from the weights and grad.* exactly as
    # torch.optim.SGD computes them (p - lr * (g + wd * p), float32), so only the state
    # that grad.* does not determine is stored: BN running statistics and counters.
    trainable = {n for n, _ in net.named_parameters()}
    state = {f"state.{n}": v for n, v in net.state_dict().items() if n not in trainable}
    # The same step in float64 (default dtype float64: forward, anchors and loss), from the
    # same float32 weights and batch, with the targets above (inputs of the loss, not
    # functions of the weights; d2l's multibox_target builds float32 tensors): the
    # reference both float32 gradients are measured against, every parameter.
    torch.set_default_dtype(torch.float64)
    try:
        net64 = copy.deepcopy(model).double()
        net64.train()
        a64, c64, b64 = net64(X.double())
        assert torch.allclose(a64, anchors.double(), atol=1e-6)
        T.calc_loss(c64, cls_labels, b64, bbox_labels.double(), bbox_masks.double()).mean().backward()
        grads64 = {f"grad64.{n}": p.grad.detach() for n, p in net64.named_parameters()}
    finally:
        torch.set_default_dtype(torch.float32)
    pos = [int((cls_labels[i] > 0).sum()) for i in range(2)]
    kept = "keeps" if min(relu_margin, pool_margin) >= STEP_SWITCH_MARGIN else "misses"
    print(f"  step: X seed {seed} (switch margins: ReLU {relu_margin:.3g}, max pool "
          f"{pool_margin:.3g}, {kept} {STEP_SWITCH_MARGIN}); loss {loss.item():.6f} per example {l.detach().tolist()}; "
          f"positive anchors {pos}")
    tensors = {
        "X": X, "Y": Y, "fwd.anchors": anchors,
        "fwd.cls_preds": cls_preds, "fwd.bbox_preds": bbox_preds,
        "target.bbox_labels": bbox_labels, "target.bbox_masks": bbox_masks,
        "target.cls_labels": cls_labels.float(),
        "loss.per_example": l, "loss.mean": loss.reshape(()),
    }
    tensors.update(grads)
    tensors.update(grads64)
    tensors.update(state)
    meta = dict(_common_meta(spec.generator), lr=repr(LR), wd=repr(WD), momentum="0",
                weights=f"{spec.file('weights')} (state before the step)",
                x_seed=seed, relu_margin=repr(relu_margin), pool_margin=repr(pool_margin),
                x=f"the first seed from {SEED_STEP_X} whose float64 forward keeps "
                  f"{STEP_SWITCH_MARGIN} (relative to the rms) from every ReLU and max-pool "
                  "switch (see _switch_margins)",
                procedure="model.train(); SGD.zero_grad(); forward; multibox_target per image "
                          "on rows with class >= 0; calc_loss (CE + L1, reduction none); "
                          "l.mean().backward(); SGD(lr, weight_decay).step()",
                grads="grad.<name> = gradient of loss.mean before the step (no weight decay)",
                state="state.<name> = the state_dict entries after the step that are not "
                      "trainable parameters (BN running stats and num_batches_tracked)",
                grads64="grad64.<name> = the same gradient with torch's default dtype float64 "
                        "from the same float32 weights and batch, stored as float32 (every "
                        "parameter)")
    if not spec.strict:
        scale = torch.cat([g.reshape(-1) for g in grads64.values()]).norm()
        zero = [k[len("grad64."):] for k, g in grads64.items() if g.norm() <= 1e-9 * scale]
        meta.update(zero_gradients=json.dumps(zero),
                    zero_gradients_text="parameters whose float64 gradient is zero (norm <= "
                                        "1e-9 of all gradients'): a BN bias whose output only "
                                        "feeds 1x1 convs into train-mode BNs (which remove a "
                                        "per-channel constant), or a head without positives",
                    x=f"{spec.x_text}; of the seeds {SEED_STEP_X}..{SEED_STEP_X + spec.step_tries - 1}, "
                      f"the first whose float64 forward keeps {STEP_SWITCH_MARGIN} (relative to "
                      "the rms) from every ReLU, ReLU6 and max-pool switch, else the one with "
                      "the largest margin (relu_margin, pool_margin; see _switch_margins)")
    _save(tensors, os.path.join(out, spec.file("step")), meta)


# ----------------------------------------------------------------------------
# (e) crafted multibox_target / multibox_detection cases

def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _grid_anchors(h, w, sizes, ratios):
    return d2l.multibox_prior(torch.zeros((1, 1, h, w)), sizes=sizes, ratios=ratios)


def _random_boxes(gen, n, lo=0.05, hi=0.6):
    xy = torch.rand((n, 2), generator=gen) * 0.6
    wh = lo + torch.rand((n, 2), generator=gen) * (hi - lo)
    return torch.cat([xy, (xy + wh).clamp(max=1.0)], dim=1)


def target_cases(gen):
    """(description, anchors (A,4), labels (G,5)) with padding rows allowed."""
    cases = []
    # 0: one box on a 3x3 grid of prior anchors.
    cases.append(("one box; 3x3 grid of multibox_prior anchors (36)",
                  _grid_anchors(3, 3, [0.3, 0.5], [1, 2, 0.5])[0],
                  _t([[0, 0.10, 0.08, 0.52, 0.50]])))
    # 1: exact IoU ties (dyadic coordinates): box 0 has IoU 1/3 with anchors 0 and 1
    # (no anchor >= 0.5, the global argmax takes the first); box 1 has IoU 0.75 with
    # anchors 2 and 3 (both assigned via the threshold); anchor 4 has IoU 0.75 with
    # boxes 2 and 3 (row tie: first box wins in both passes).
    a = [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5],
         [0.5, 0.5, 1, 0.875], [0.5, 0.625, 1, 1],
         [0.25, 0.25, 0.75, 0.75],
         [0, 0.5, 0.25, 0.75], [0, 0.75, 0.25, 1], [0.25, 0.5, 0.5, 1],
         [0.125, 0.125, 0.375, 0.375], [0.625, 0.125, 0.875, 0.375],
         [0.25, 0.375, 0.75, 0.875], [0, 0, 1, 1]]
    cases.append(("exact IoU ties in the threshold pass and the global argmax",
                  _t(a),
                  _t([[0, 0.25, 0, 0.75, 0.5], [0, 0.5, 0.5, 1, 1],
                      [1, 0.25, 0.25, 0.75, 0.625], [2, 0.25, 0.375, 0.75, 0.75]])))
    # 2: several boxes of classes 0..2 and padding rows (-1 coords and 0 coords).
    cases.append(("three boxes of classes 0,1,2 plus two padding rows; 3x3 grid (36)",
                  _grid_anchors(3, 3, [0.25, 0.4], [1, 2, 0.5])[0],
                  _t([[1, 0.05, 0.10, 0.35, 0.38], [-1, -1, -1, -1, -1],
                      [0, 0.40, 0.45, 0.80, 0.95], [2, 0.62, 0.05, 0.98, 0.30],
                      [-1, 0, 0, 0, 0]])))
    # 3: a small box with no anchor above 0.5 (best IoU ~0.05), next to a box that
    # has two anchors above 0.5.
    cases.append(("a tiny box with no anchor IoU >= 0.5 (gets its best anchor only)",
                  _grid_anchors(4, 4, [0.3, 0.45], [1, 2, 0.5])[0][::2].clone(),
                  _t([[0, 0.46, 0.44, 0.53, 0.51], [1, 0.0, 0.5, 0.35, 0.85]])))
    # 4: anchor 0 is the best anchor of both boxes (IoU 0.9 with box 0, 0.6 with box
    # 1); box 1's other anchors are below 0.5, so it gets its second-best anchor
    # (anchor 3, IoU ~0.49).
    a = [[0.2, 0.2, 0.6, 0.6],
         [0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.7, 0.7], [0.25, 0.15, 0.65, 0.55],
         [0.6, 0.6, 0.95, 0.95], [0.0, 0.5, 0.3, 0.9], [0.5, 0.0, 0.9, 0.35],
         [0.15, 0.25, 0.55, 0.65], [0.05, 0.05, 0.3, 0.3], [0.4, 0.4, 0.9, 0.9]]
    cases.append(("one anchor is the best of two boxes",
                  _t(a),
                  _t([[0, 0.2, 0.2, 0.6, 0.56], [1, 0.2, 0.2, 0.6, 0.44]])))
    # 5: the global pass overrides the threshold pass: anchor 1's best box is box 0
    # (IoU >= 0.5), but box 0 takes anchor 0 first and box 1 then takes anchor 1.
    a = [[0.1, 0.1, 0.5, 0.5], [0.14, 0.1, 0.54, 0.5], [0.6, 0.6, 0.9, 0.9],
         [0.0, 0.6, 0.3, 0.95], [0.55, 0.05, 0.95, 0.4], [0.3, 0.3, 0.7, 0.7],
         [0.05, 0.0, 0.35, 0.3], [0.45, 0.45, 0.75, 0.75]]
    cases.append(("global pass reassigns an anchor the threshold pass gave another box",
                  _t(a),
                  _t([[0, 0.1, 0.1, 0.5, 0.5], [1, 0.24, 0.1, 0.64, 0.5]])))
    # 6: random anchors and boxes, with a padding row.
    anchors = _random_boxes(gen, 48, 0.1, 0.6)
    boxes = _random_boxes(gen, 4, 0.15, 0.5)
    cls = torch.tensor([[0.], [2.], [1.], [0.]])
    labels = torch.cat([torch.cat([cls, boxes], 1), _t([[-1, -1, -1, -1, -1]])], 0)
    cases.append(("random: 48 anchors, 4 boxes, 1 padding row", anchors, labels))
    return cases


def detection_cases(gen):
    """(description, probs (A,q+1), offsets (4A,), anchors (A,4))."""
    cases = []
    # 0: q = 1, zero offsets (boxes = anchors, exact): anchor 1 overlaps anchor 0
    # with IoU exactly 0.5 (kept); anchor 2 has IoU 0.75 with anchor 0 (dropped);
    # anchor 5 has conf < 0.01; anchors 6.. have small nonzero offsets.
    a = _t([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.25], [0, 0, 0.5, 0.375],
            [0.5, 0.5, 1, 1], [0.5, 0.5, 0.75, 1], [0.25, 0.5, 0.75, 1],
            [0.1, 0.6, 0.4, 0.9], [0.6, 0.1, 0.9, 0.4], [0.12, 0.62, 0.42, 0.92],
            [0.3, 0.3, 0.7, 0.7]])
    fg = torch.tensor([0.9, 0.7, 0.8, 0.95, 0.6, 0.005, 0.5, 0.3, 0.45, 0.2])
    probs = torch.stack([1 - fg, fg], dim=1)
    off = torch.zeros((10, 4))
    off[6:] = torch.tensor([[0.5, -0.3, 0.2, 0.1], [-0.4, 0.6, -0.2, 0.3],
                            [0.1, 0.1, 0.0, -0.1], [1.0, -1.0, 0.5, -0.5]])
    cases.append(("q=1; exact IoU 0.5 kept, IoU 0.75 dropped, conf below pos_threshold",
                  probs, off.reshape(-1), a))
    # 1: q = 2: NMS is class-agnostic (a class-2 box suppresses a class-1 box).
    a = _grid_anchors(2, 2, [0.4, 0.6], [1, 2, 0.5])[0]  # 16 anchors
    logits = torch.randn((16, 3), generator=gen) * 2
    logits[0] = torch.tensor([0.0, 1.0, 3.0])
    logits[1] = torch.tensor([0.0, 2.5, 0.5])
    probs = F.softmax(logits, dim=1)
    off = torch.randn((16, 4), generator=gen) * 0.3
    cases.append(("q=2; class-agnostic NMS on a 2x2 grid of prior anchors (16)",
                  probs, off.reshape(-1), a))
    # 2: random, q = 2, 40 anchors; redrawn until conf and IoU margins are clear.
    for _ in range(100):
        a = _random_boxes(gen, 40, 0.1, 0.5)
        probs = F.softmax(torch.randn((40, 3), generator=gen) * 2.5, dim=1)
        off = torch.randn((40, 4), generator=gen) * 0.5
        gap, m = _detection_margins(probs.T.unsqueeze(0), off.reshape(1, -1), a.unsqueeze(0))
        if gap > 1e-4 and m > 1e-3:
            break
    cases.append(("random: q=2, 40 anchors", probs, off.reshape(-1), a))
    # 3: q = 2, 24 anchors, small confidences: many rows below pos_threshold.
    for _ in range(100):
        a = _random_boxes(gen, 24, 0.1, 0.5)
        logits = torch.randn((24, 3), generator=gen)
        logits[:, 0] += 5.0
        probs = F.softmax(logits, dim=1)
        off = torch.randn((24, 4), generator=gen) * 0.5
        gap, m = _detection_margins(probs.T.unsqueeze(0), off.reshape(1, -1), a.unsqueeze(0))
        if gap > 1e-5 and m > 1e-3:
            break
    cases.append(("random: q=2, 24 anchors, mostly background", probs, off.reshape(-1), a))
    return cases


def write_multibox_cases(out):
    gen = _gen(SEED_CASES)
    tensors, descr = {}, {}
    for k, (text, anchors, labels) in enumerate(target_cases(gen)):
        anchors = anchors.unsqueeze(0)
        labels = labels.unsqueeze(0)
        bl, bm, cl = T.multibox_target_valid(anchors, labels)
        tensors.update({f"case{k}.anchors": anchors, f"case{k}.labels": labels,
                        f"case{k}.bbox_labels": bl, f"case{k}.bbox_masks": bm,
                        f"case{k}.cls_labels": cl.float()})
        descr[f"case{k}"] = text
        assigned = torch.nonzero(cl[0] > 0).reshape(-1).tolist()
        print(f"  case{k}: A={anchors.shape[1]} G={labels.shape[1]} assigned anchors "
              f"{assigned} classes {cl[0, assigned].tolist()}")
    for k, (text, probs, off, anchors) in enumerate(detection_cases(gen)):
        probs, off, anchors = probs.unsqueeze(0), off.unsqueeze(0), anchors.unsqueeze(0)
        gap, m = _detection_margins(probs.permute(0, 2, 1), off, anchors)
        assert gap > 0, f"det{k} has conf ties"
        det = d2l.multibox_detection(probs.permute(0, 2, 1), off, anchors)
        tensors.update({f"det{k}.probs": probs, f"det{k}.offsets": off,
                        f"det{k}.anchors": anchors, f"det{k}.detection": det})
        descr[f"det{k}"] = text
        print(f"  det{k}: A={anchors.shape[1]} q={probs.shape[2] - 1} kept "
              f"{int((det[0, :, 0] >= 0).sum())}; min conf gap {gap:.3g}; "
              f"min |IoU-0.5| {m:.3g}")
    meta = dict(_common_meta(), cases=json.dumps(descr),
                target="case{k}: bbox_labels, bbox_masks, cls_labels (float32) = "
                       "d2l.multibox_target on the rows of labels with class >= 0",
                detection="det{k}: probs laid out (1,A,q+1); detection = "
                          "d2l.multibox_detection(probs.permute(0,2,1), offsets, anchors) "
                          "with nms_threshold 0.5, pos_threshold 0.009999999")
    _save(tensors, os.path.join(out, "multibox_cases.safetensors"), meta)


# ----------------------------------------------------------------------------
# (f) loss variants

def smooth_l1(x, sigma):
    s2 = sigma * sigma
    return torch.where(x.abs() < 1.0 / s2, 0.5 * s2 * x * x, x.abs() - 0.5 / s2)


def per_example_loss(cls_preds, cls_labels, bbox_preds, bbox_labels, bbox_masks,
                     cls_kind="ce", box_kind="l1", sigma=1.0, gamma=2.0, alpha=0.25,
                     cls_weight=1.0, box_weight=1.0):
    logp = F.log_softmax(cls_preds, dim=2).gather(2, cls_labels.long().unsqueeze(2)).squeeze(2)
    if cls_kind == "ce":
        cls = -logp
    else:  # focal: -alpha * (1 - p_j)^gamma * log p_j
        cls = -alpha * (1 - logp.exp()).pow(gamma) * logp
    diff = bbox_preds * bbox_masks - bbox_labels * bbox_masks
    box = diff.abs() if box_kind == "l1" else smooth_l1(diff, sigma)
    return cls_weight * cls.mean(dim=1) + box_weight * box.mean(dim=1)


VARIANTS = [
    dict(cls_kind="ce", box_kind="l1"),
    dict(cls_kind="ce", box_kind="smooth_l1", sigma=1.0),
    dict(cls_kind="ce", box_kind="smooth_l1", sigma=3.0),
    dict(cls_kind="focal", box_kind="l1", gamma=2.0, alpha=0.25),
    dict(cls_kind="ce", box_kind="l1", cls_weight=2.0, box_weight=0.5),
]


def write_loss_variants(out):
    gen = _gen(SEED_LOSS)
    N, A, C = 2, 20, 3
    cls_preds = torch.randn((N, A, C), generator=gen) * 1.5
    cls_labels = torch.zeros((N, A), dtype=torch.long)
    r = torch.rand((N, A), generator=gen)
    cls_labels[r > 0.55] = 1
    cls_labels[r > 0.8] = 2
    bbox_masks = (cls_labels > 0).float().unsqueeze(-1).repeat(1, 1, 4).reshape(N, -1)
    bbox_labels = torch.randn((N, 4 * A), generator=gen) * bbox_masks
    bbox_preds = bbox_labels + torch.randn((N, 4 * A), generator=gen) * 0.3
    bbox_preds[:, :8] = torch.randn((N, 8), generator=gen)  # unmasked entries too
    tensors = {"cls_preds": cls_preds, "bbox_preds": bbox_preds,
               "cls_labels": cls_labels.float(), "bbox_labels": bbox_labels,
               "bbox_masks": bbox_masks}
    descr = {}
    for k, v in enumerate(VARIANTS):
        cp = cls_preds.clone().requires_grad_(True)
        bp = bbox_preds.clone().requires_grad_(True)
        l = per_example_loss(cp, cls_labels, bp, bbox_labels, bbox_masks, **v)
        l.mean().backward()
        if k == 0:
            ref = T.calc_loss(cls_preds, cls_labels, bbox_preds, bbox_labels, bbox_masks)
            assert torch.allclose(l.detach(), ref, rtol=1e-6, atol=1e-6)
        tensors.update({f"v{k}.per_example": l, f"v{k}.dcls": cp.grad,
                        f"v{k}.dbbox": bp.grad})
        descr[f"v{k}"] = dict({"cls_weight": 1.0, "box_weight": 1.0}, **v)
        print(f"  v{k}: {descr[f'v{k}']} per example {[round(x, 6) for x in l.tolist()]}")
    meta = dict(_common_meta(), variants=json.dumps(descr),
                per_example="cls_weight * mean over anchors of cls loss + "
                            "box_weight * mean over 4A of box loss of "
                            "(bbox_preds*mask - bbox_labels*mask)",
                focal="-alpha * (1 - p_j)^gamma * log p_j, p_j = softmax prob of the label class",
                smooth_l1="(sigma*x)^2/2 if |x| < 1/sigma^2 else |x| - 0.5/sigma^2",
                grads="v{k}.dcls, v{k}.dbbox = gradients of the batch mean of v{k}.per_example")
    _save(tensors, os.path.join(out, "loss_variants.safetensors"), meta)


# ----------------------------------------------------------------------------

def summarize(out, names):
    from safetensors import safe_open
    total = 0
    for name in names:
        path = os.path.join(out, name)
        size = os.path.getsize(path)
        total += size
        print(f"\n{name}  ({size / 1e6:.3f} MB)")
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            shown = [k for k in keys if not k.startswith(("grad.", "grad64.", "state."))]
            for k in shown:
                sl = f.get_slice(k)
                print(f"  {k:28s} {sl.get_dtype():4s} {list(sl.get_shape())}")
            for prefix in ("grad.", "grad64.", "state."):
                n = sum(k.startswith(prefix) for k in keys)
                if n:
                    print(f"  {prefix}<name> x {n} (same names/shapes as the state_dict)")
            if name == "tinyssd_weights.safetensors":
                print(f"  ({len(keys)} tensors)")
    print(f"\ntotal {total / 1e6:.3f} MB in {len(names)} files")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures"),
                    help="output folder (default: Tests/Fixtures of the repo)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}; writing to {args.out}")
    model = make_model()
    write_weights(model, args.out)
    write_forward(model, args.out)
    write_anchors256(model, args.out)
    write_step(model, args.out)
    write_multibox_cases(args.out)
    write_loss_variants(args.out)
    summarize(args.out, ["tinyssd_weights.safetensors", "tinyssd_forward.safetensors",
                         "tinyssd_anchors256.safetensors", "tinyssd_step.safetensors",
                         "multibox_cases.safetensors", "loss_variants.safetensors"])


if __name__ == "__main__":
    main()
