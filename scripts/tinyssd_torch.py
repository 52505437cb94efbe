"""PyTorch reference for ssdc: TinySSD as in the d2l chapter, plus the d2l loader.

Shared by scripts/make_fixtures.py and scripts/bench_torch.py; not a test itself.

`import_d2l()` imports `d2l.torch` (d2l==1.0.3, installed with --no-deps).
d2l imports torchvision at load time, which is not installable here, so empty
placeholder modules are put into sys.modules for it first; none of the d2l
functions used (multibox_prior, multibox_target, multibox_detection, box_iou,
offset_boxes, offset_inverse, nms) touch torchvision. d2l's other import-time
dependencies (numpy, pandas, requests, Pillow, matplotlib, matplotlib-inline,
IPython, scipy) are listed in scripts/requirements-fixtures.txt; if one of
them is missing anyway, it is replaced by a placeholder too (with a note on
stderr), since the functions above need only torch.
"""

import importlib.util
import sys
import types

import torch
from torch import nn

# Anchor sizes and ratios of the five scales (SPEC section 2).
SIZES = [[0.2, 0.272], [0.37, 0.447], [0.54, 0.619], [0.71, 0.79], [0.88, 0.961]]
RATIOS = [[1, 2, 0.5]] * 5
NUM_ANCHORS = len(SIZES[0]) + len(RATIOS[0]) - 1  # 4 boxes per position
IN_CHANNELS = [64, 128, 128, 128, 128]

# Modules d2l.torch imports at load time, with the attributes / submodules that
# its `from X import Y` statements want. torchvision is always a placeholder.
_TORCHVISION = ["torchvision", "torchvision.transforms", "torchvision.io",
                "torchvision.io.image", "torchvision.datasets"]
# top-level package -> the dotted names d2l takes from it (`from X import Y`).
_OPTIONAL = {
    "pandas": [], "requests": [], "PIL": ["PIL.Image"], "IPython": ["IPython.display"],
    "matplotlib": ["matplotlib.pyplot"], "matplotlib_inline": ["matplotlib_inline.backend_inline"],
    "scipy": ["scipy.spatial", "scipy.spatial.distance_matrix"],
}

_d2l = None


def _placeholder(name):
    mod = types.ModuleType(name)
    mod.__doc__ = "placeholder installed by scripts/tinyssd_torch.py"
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, mod)
    return mod


def import_d2l():
    """Return the `d2l.torch` module, importing it behind the placeholders."""
    global _d2l
    if _d2l is not None:
        return _d2l
    for name in _TORCHVISION:
        if name not in sys.modules:
            _placeholder(name)
    for name, subs in _OPTIONAL.items():
        if importlib.util.find_spec(name) is None:
            print(f"note: {name} is not installed; using a placeholder for d2l's import",
                  file=sys.stderr)
            _placeholder(name)
            for sub in subs:
                _placeholder(sub)
    if importlib.util.find_spec("matplotlib") is not None:
        import matplotlib
        matplotlib.use("Agg")  # headless: never open a window
    from d2l import torch as d2l
    _d2l = d2l
    return d2l


# ----------------------------------------------------------------------------
# TinySSD, as in the chapter (module names fix the state_dict names).

def cls_predictor(num_inputs, num_anchors, num_classes):
    return nn.Conv2d(num_inputs, num_anchors * (num_classes + 1), kernel_size=3, padding=1)


def bbox_predictor(num_inputs, num_anchors):
    return nn.Conv2d(num_inputs, num_anchors * 4, kernel_size=3, padding=1)


def flatten_pred(pred):
    return torch.flatten(pred.permute(0, 2, 3, 1), start_dim=1)


def concat_preds(preds):
    return torch.cat([flatten_pred(p) for p in preds], dim=1)


def down_sample_blk(in_channels, out_channels):
    layers = []
    for _ in range(2):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                   nn.BatchNorm2d(out_channels), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def base_net():
    filters = [3, 16, 32, 64]
    return nn.Sequential(*[down_sample_blk(filters[i], filters[i + 1])
                           for i in range(len(filters) - 1)])


def get_blk(i):
    if i == 0:
        return base_net()
    if i == 1:
        return down_sample_blk(64, 128)
    if i == 4:
        return nn.AdaptiveMaxPool2d((1, 1))
    return down_sample_blk(128, 128)


def anchors_for(feature_maps):
    """Anchors of the five scales for feature maps (tensors or (h, w) shapes)."""
    d2l = import_d2l()
    out = []
    for i, fm in enumerate(feature_maps):
        if not torch.is_tensor(fm):
            fm = torch.zeros((1, 1) + tuple(fm))
        out.append(d2l.multibox_prior(fm, sizes=SIZES[i], ratios=RATIOS[i]))
    return torch.cat(out, dim=1)


class TinySSD(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        for i in range(5):
            setattr(self, f"blk_{i}", get_blk(i))
            setattr(self, f"cls_{i}", cls_predictor(IN_CHANNELS[i], NUM_ANCHORS, num_classes))
            setattr(self, f"bbox_{i}", bbox_predictor(IN_CHANNELS[i], NUM_ANCHORS))

    def forward(self, X):
        d2l = import_d2l()
        anchors, cls_preds, bbox_preds = [], [], []
        for i in range(5):
            X = getattr(self, f"blk_{i}")(X)
            anchors.append(d2l.multibox_prior(X, sizes=SIZES[i], ratios=RATIOS[i]))
            cls_preds.append(getattr(self, f"cls_{i}")(X))
            bbox_preds.append(getattr(self, f"bbox_{i}")(X))
        anchors = torch.cat(anchors, dim=1)
        cls_preds = concat_preds(cls_preds)
        cls_preds = cls_preds.reshape(cls_preds.shape[0], -1, self.num_classes + 1)
        bbox_preds = concat_preds(bbox_preds)
        return anchors, cls_preds, bbox_preds


def make_reference_model(num_classes=1, init_seed=0, warmup_seed=1, build=None,
                         input_hw=(128, 128)):
    """The model of Tests/Fixtures/tinyssd_weights.safetensors, in eval mode.

    PyTorch default init after torch.manual_seed(init_seed), then BN running
    statistics from 10 train-mode forwards (no grad) on uniform[0,255) images of
    shape (4,3,128,128) drawn from a generator seeded with warmup_seed.
    `build(num_classes=...)` and `input_hw` make the same for another network
    (TinySSD and 128x128 by default).
    """
    torch.manual_seed(init_seed)
    model = (build or TinySSD)(num_classes=num_classes)
    gen = torch.Generator().manual_seed(warmup_seed)
    model.train()
    with torch.no_grad():
        for _ in range(10):
            model(torch.rand((4, 3) + tuple(input_hw), generator=gen) * 255)
    model.eval()
    return model


# ----------------------------------------------------------------------------
# Loss of the seed's training loop.

_cls_loss = nn.CrossEntropyLoss(reduction="none")
_bbox_loss = nn.L1Loss(reduction="none")


def calc_loss(cls_preds, cls_labels, bbox_preds, bbox_labels, bbox_masks):
    """Per-example loss (N,): mean CE over anchors + mean L1 over 4A."""
    batch_size, num_classes = cls_preds.shape[0], cls_preds.shape[2]
    cls = _cls_loss(cls_preds.reshape(-1, num_classes),
                    cls_labels.reshape(-1)).reshape(batch_size, -1).mean(dim=1)
    bbox = _bbox_loss(bbox_preds * bbox_masks, bbox_labels * bbox_masks).mean(dim=1)
    return cls + bbox


def multibox_target_valid(anchors, labels):
    """d2l.multibox_target per image on the rows whose class is >= 0.

    d2l does not skip padding rows (class -1); the SPEC (like MXNet's
    MultiBoxTarget) ignores them, so they are dropped here before calling d2l.
    Each image must keep at least one valid row.
    """
    d2l = import_d2l()
    outs = []
    for i in range(labels.shape[0]):
        valid = labels[i][labels[i, :, 0] >= 0]
        if valid.shape[0] == 0:
            raise ValueError(f"image {i} has no valid label row")
        outs.append(d2l.multibox_target(anchors, valid.unsqueeze(0)))
    return tuple(torch.cat([o[k] for o in outs], dim=0) for k in range(3))
