"""Train an example model's PyTorch twin the way `ssdc run --train --augment none` trains it,
to compare what the two learn over many steps (the fixtures compare one step).

    .venv-torch/bin/python scripts/train_twin.py mobilenet-ssdlite DATA_DIR [--epochs 12]

DATA_DIR has the banana-detection layout (bananas_train/ and bananas_val/, each with
label.csv and images/), e.g. ~/.cache/ssdc/data/synthetic-shapes after `ssdc run --train
--data builtin:shapes`. The loop is the chapter's: SGD (lr 0.2, weight decay 5e-4, no
momentum), batch 32, a fresh shuffle per epoch, d2l's multibox_target and the chapter's loss
(cross-entropy + masked L1, means over anchors). Images are resized bilinearly to the
model's input. After each epoch: the mean loss, and mAP@0.5 on the validation split from
d2l's multibox_detection (VOC-style all-point average precision per class, averaged).
Not a test: a diagnostic.
"""

import argparse
import csv
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import examples_torch  # noqa: E402
from tinyssd_torch import calc_loss, import_d2l, multibox_target_valid  # noqa: E402


def load_split(root, split, size):
    """Images (N, 3, H, W) at `size`, 0..255, and labels (N, G, 5) padded with -1 rows."""
    folder = os.path.join(root, f"bananas_{split}")
    rows = {}
    with open(os.path.join(folder, "label.csv")) as f:
        for r in list(csv.reader(f))[1:]:
            rows.setdefault(r[0], []).append([float(v) for v in r[1:]])
    names = sorted(rows, key=lambda n: int(os.path.splitext(n)[0]))
    g = max(len(v) for v in rows.values())
    images, labels = [], []
    for n in names:
        im = Image.open(os.path.join(folder, "images", n)).convert("RGB")
        w, h = im.size
        x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)[None]
        images.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0])
        boxes = [[c, x0 / w, y0 / h, x1 / w, y1 / h] for c, x0, y0, x1, y1 in rows[n]]
        boxes += [[-1, 0, 0, 0, 0]] * (g - len(boxes))
        labels.append(boxes)
    return torch.stack(images), torch.tensor(labels, dtype=torch.float32)


def average_precision(dets, gts, num_classes, iou=0.5):
    """dets: per image (K, 6) rows [class, score, box]; gts: per image (G, 5) labels."""
    box_iou = import_d2l().box_iou
    aps = []
    for c in range(num_classes):
        scored, npos = [], 0
        for d, g in zip(dets, gts):
            gc = g[g[:, 0] == c][:, 1:]
            npos += len(gc)
            dc = d[d[:, 0] == c]
            order = torch.argsort(dc[:, 1], descending=True)
            used = torch.zeros(len(gc), dtype=torch.bool)
            for k in order:
                hit = False
                if len(gc):
                    ious = box_iou(dc[k, 2:][None], gc)[0]
                    j = int(torch.argmax(ious))
                    if ious[j] >= iou and not used[j]:
                        used[j] = hit = True
                scored.append((float(dc[k, 1]), hit))
        if npos == 0:
            continue
        scored.sort(key=lambda t: -t[0])
        tp = np.cumsum([h for _, h in scored]) if scored else np.zeros(0)
        fp = np.cumsum([not h for _, h in scored]) if scored else np.zeros(0)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, 1e-12)
        mrec = np.concatenate([[0], recall, [1]])
        mpre = np.concatenate([[0], precision, [0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return sum(aps) / len(aps) if aps else 0.0


def evaluate(model, images, labels, num_classes):
    d2l = import_d2l()
    model.eval()
    dets = []
    with torch.no_grad():
        for i in range(0, len(images), 32):
            anchors, cls_preds, bbox_preds = model(images[i:i + 32])
            probs = F.softmax(cls_preds, dim=2).permute(0, 2, 1)
            out = d2l.multibox_detection(probs, bbox_preds, anchors)
            dets += [o[o[:, 0] >= 0] for o in out]
    model.train()
    return average_precision(dets, labels, num_classes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(examples_torch.EXAMPLES))
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    classes = os.path.join(args.data, "bananas_train", "classes.txt")
    num_classes = len(open(classes).read().split()) if os.path.exists(classes) else 1
    model = examples_torch.build(args.model, num_classes)
    size = examples_torch.EXAMPLES[args.model][1].INPUT_SIZE
    x_train, y_train = load_split(args.data, "train", size)
    x_val, y_val = load_split(args.data, "val", size)
    trainer = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.wd)
    model.train()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train))
        total, count = 0.0, 0
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            anchors, cls_preds, bbox_preds = model(x_train[idx])
            bbox_labels, bbox_masks, cls_labels = multibox_target_valid(anchors, y_train[idx])
            loss = calc_loss(cls_preds, cls_labels, bbox_preds, bbox_labels, bbox_masks)
            trainer.zero_grad()
            loss.mean().backward()
            trainer.step()
            total += float(loss.detach().sum())
            count += len(idx)
        m = evaluate(model, x_val, y_val, num_classes)
        print(f"epoch {epoch}, loss {total / count:.4f}, val mAP@0.5 {m:.4f}", flush=True)


if __name__ == "__main__":
    main()
