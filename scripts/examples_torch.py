"""PyTorch twins of the example models in Examples/ (ssd300-vgg16, mobilenet-ssdlite,
resnet-fpn-ssd), for scripts/make_example_fixtures.py and benchmarks.

Each network is written module for module like its model.swift, so that the state_dict
names are the DSL's parameter names: a `Named("x", layer)` is an attribute `self.x`, a
`Sequential { ... }` is an nn.Sequential (children named by their index, a `for` loop's
layers consecutive), a layer struct's `Named` children are its attributes. Anchors,
targets and the loss are d2l's, through scripts/tinyssd_torch.py.

Every conv that feeds a batch norm has no bias (as in MobileNetV2 and ResNet): such a bias
has no gradient through a train-mode BN and only adds parameters.
"""

import torch
import torch.nn.functional as F
from torch import nn

import tinyssd_torch as T


def flat_cls_bbox(num_classes, anchors, cls_preds, bbox_preds):
    """The SSDOutputs of a model: anchors (1,A,4), cls (N,A,q+1), bbox (N,4A)."""
    anchors = torch.cat(anchors, dim=1)
    cls = T.concat_preds(cls_preds)
    return anchors, cls.reshape(cls.shape[0], -1, num_classes + 1), T.concat_preds(bbox_preds)


def num_anchors(sizes, ratios):
    return len(sizes) + len(ratios) - 1


def conv_bn(in_c, out_c, k, stride=1, padding=0, dilation=1, groups=1, act=nn.ReLU):
    """[conv (no bias), BN, activation] as three consecutive children."""
    return [nn.Conv2d(in_c, out_c, k, stride=stride, padding=padding, dilation=dilation,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_c), act()]


class L2Norm(nn.Module):
    """ssd.pytorch's L2Norm: x / (||x||_channels + 1e-10) * weight, weight initialised to scale."""

    def __init__(self, channels, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return x / norm * self.weight.reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------
# SSD300 with a VGG16 base (Liu et al. 2016), as Examples/ssd300-vgg16/model.swift.

class SSD300:
    WIDTH_DIVISOR = 8
    INPUT_SIZE = (300, 300)
    # s_k of the paper (conv4_3 at 0.1, then 0.2 .. 0.88) and sqrt(s_k * s_k+1).
    SIZES = [[0.1, 0.141], [0.2, 0.272], [0.37, 0.447], [0.54, 0.619], [0.71, 0.79],
             [0.88, 0.961]]
    RATIOS = [[1, 2, 0.5], [1, 2, 3, 0.5, 1 / 3], [1, 2, 3, 0.5, 1 / 3],
              [1, 2, 3, 0.5, 1 / 3], [1, 2, 0.5], [1, 2, 0.5]]


def _c(n, divisor):
    return n // divisor


def vgg_convs(in_c, out_c, count):
    layers = []
    for i in range(count):
        layers += conv_bn(in_c if i == 0 else out_c, out_c, 3, padding=1)
    return layers


def extra_layer(in_c, mid_c, out_c, stride, padding):
    """conv8..conv11: 1x1 to mid_c, then 3x3 (stride 2, or valid padding) to out_c."""
    return nn.Sequential(*conv_bn(in_c, mid_c, 1), *conv_bn(mid_c, out_c, 3, stride, padding))


class SSD300VGG16(nn.Module):
    def __init__(self, num_classes, divisor=SSD300.WIDTH_DIVISOR):
        super().__init__()
        c = lambda n: _c(n, divisor)  # noqa: E731
        self.num_classes = num_classes
        self.conv1 = nn.Sequential(*vgg_convs(3, c(64), 2), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(*vgg_convs(c(64), c(128), 2), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(*vgg_convs(c(128), c(256), 3), nn.MaxPool2d(2, ceil_mode=True))
        self.conv4 = nn.Sequential(*vgg_convs(c(256), c(512), 3))
        self.conv4_3_norm = L2Norm(c(512), 20)
        self.conv5 = nn.Sequential(nn.MaxPool2d(2), *vgg_convs(c(512), c(512), 3),
                                   nn.MaxPool2d(3, stride=1, padding=1))
        self.fc6 = nn.Sequential(*conv_bn(c(512), c(1024), 3, padding=6, dilation=6))
        self.fc7 = nn.Sequential(*conv_bn(c(1024), c(1024), 1))
        self.conv8 = extra_layer(c(1024), c(256), c(512), 2, 1)
        self.conv9 = extra_layer(c(512), c(128), c(256), 2, 1)
        self.conv10 = extra_layer(c(256), c(128), c(256), 1, 0)
        self.conv11 = extra_layer(c(256), c(128), c(256), 1, 0)
        source_channels = [c(512), c(1024), c(512), c(256), c(256), c(256)]
        for i, ch in enumerate(source_channels):
            k = num_anchors(SSD300.SIZES[i], SSD300.RATIOS[i])
            setattr(self, f"cls_{i}", nn.Conv2d(ch, k * (num_classes + 1), 3, padding=1))
            setattr(self, f"bbox_{i}", nn.Conv2d(ch, k * 4, 3, padding=1))

    def sources(self, x):
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        out = [self.conv4_3_norm(x)]
        x = self.fc7(self.fc6(self.conv5(x)))
        out.append(x)
        for blk in (self.conv8, self.conv9, self.conv10, self.conv11):
            x = blk(x)
            out.append(x)
        return out

    def forward(self, x):
        return ssd_heads(self, self.sources(x), SSD300.SIZES, SSD300.RATIOS)


def ssd_heads(model, sources, sizes, ratios):
    d2l = T.import_d2l()
    anchors, cls, bbox = [], [], []
    for i, y in enumerate(sources):
        anchors.append(d2l.multibox_prior(y, sizes=sizes[i], ratios=ratios[i]))
        cls.append(getattr(model, f"cls_{i}")(y))
        bbox.append(getattr(model, f"bbox_{i}")(y))
    return flat_cls_bbox(model.num_classes, anchors, cls, bbox)


# ----------------------------------------------------------------------------
# MobileNetV2 + SSDLite (Sandler et al. 2018), as Examples/mobilenet-ssdlite/model.swift.

class SSDLite:
    WIDTH = 0.25
    INPUT_SIZE = (320, 320)
    # (expansion t, output channels c, repeats n, first stride s): the paper's table 2.
    BLOCKS_16 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
    BLOCKS_32 = [(6, 160, 3, 2), (6, 320, 1, 1)]
    LAST_CHANNELS = 1280
    EXTRAS = [512, 256, 256, 128]
    SIZES = [[0.1], [0.35, 0.418], [0.5, 0.57], [0.65, 0.721], [0.8, 0.872], [0.95, 0.975]]
    RATIOS = [[1, 2, 0.5]] + [[1, 2, 3, 0.5, 1 / 3]] * 5


def conv_bn_relu6(in_c, out_c, k, stride=1, padding=0, groups=1):
    """[conv (no bias), BN, ReLU6]; groups=in_c makes it depthwise (convBNReLU6 in Swift)."""
    return conv_bn(in_c, out_c, k, stride, padding, groups=groups, act=nn.ReLU6)


def make_divisible(v, divisor=8):
    """MobileNet's channel rounding: to a multiple of 8, never below 90% of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    def __init__(self, in_c, out_c, stride, expand):
        super().__init__()
        hidden = in_c * expand
        layers = conv_bn_relu6(in_c, hidden, 1) if expand != 1 else []
        layers += conv_bn_relu6(hidden, hidden, 3, stride, 1, groups=hidden)
        layers += [nn.Conv2d(hidden, out_c, 1, bias=False), nn.BatchNorm2d(out_c)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_c == out_c

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


def inverted_residuals(in_c, table, width):
    blocks = []
    for t, c, n, s in table:
        out_c = make_divisible(c * width)
        for i in range(n):
            blocks.append(InvertedResidual(in_c, out_c, s if i == 0 else 1, t))
            in_c = out_c
    return blocks, in_c


def ssdlite_extra(in_c, out_c):
    mid = out_c // 2
    return nn.Sequential(*conv_bn_relu6(in_c, mid, 1),
                         *conv_bn_relu6(mid, mid, 3, 2, 1, groups=mid),
                         *conv_bn_relu6(mid, out_c, 1))


def ssdlite_head(in_c, out_c):
    """SSDLite predictor: depthwise 3x3 + BN + ReLU6, then a 1x1 conv."""
    return nn.Sequential(*conv_bn_relu6(in_c, in_c, 3, padding=1, groups=in_c),
                         nn.Conv2d(in_c, out_c, 1))


class MobileNetV2SSDLite(nn.Module):
    def __init__(self, num_classes, width=SSDLite.WIDTH):
        super().__init__()
        self.num_classes = num_classes
        stem = make_divisible(32 * width)
        blocks16, c16 = inverted_residuals(stem, SSDLite.BLOCKS_16, width)
        self.features16 = nn.Sequential(*conv_bn_relu6(3, stem, 3, 2, 1), *blocks16)
        blocks32, c = inverted_residuals(c16, SSDLite.BLOCKS_32, width)
        last = make_divisible(SSDLite.LAST_CHANNELS * width)
        self.features32 = nn.Sequential(*blocks32, *conv_bn_relu6(c, last, 1))
        source_channels = [c16, last]
        in_c = last
        for i, e in enumerate(SSDLite.EXTRAS):
            out_c = make_divisible(e * width)
            setattr(self, f"extra_{i}", ssdlite_extra(in_c, out_c))
            source_channels.append(out_c)
            in_c = out_c
        for i, ch in enumerate(source_channels):
            k = num_anchors(SSDLite.SIZES[i], SSDLite.RATIOS[i])
            setattr(self, f"cls_{i}", ssdlite_head(ch, k * (num_classes + 1)))
            setattr(self, f"bbox_{i}", ssdlite_head(ch, k * 4))

    def sources(self, x):
        x = self.features16(x)
        out = [x]
        x = self.features32(x)
        out.append(x)
        for i in range(len(SSDLite.EXTRAS)):
            x = getattr(self, f"extra_{i}")(x)
            out.append(x)
        return out

    def forward(self, x):
        return ssd_heads(self, self.sources(x), SSDLite.SIZES, SSDLite.RATIOS)


# ----------------------------------------------------------------------------
# ResNet-18-style base + feature pyramid (He et al. 2016, Lin et al. 2017), as
# Examples/resnet-fpn-ssd/model.swift.

class ResNetFPN:
    WIDTH_DIVISOR = 8
    INPUT_SIZE = (256, 256)
    BLOCKS = [2, 2, 2, 2]
    SIZES = [[0.1, 0.158], [0.25, 0.316], [0.4, 0.469], [0.55, 0.62], [0.7, 0.771]]
    RATIOS = [[1, 2, 0.5]] * 5


class BasicBlock(nn.Module):
    def __init__(self, in_c, out_c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_c)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.relu = nn.ReLU()  # a module (no parameters), so that hooks see its inputs
        self.downsample = None
        if stride != 1 or in_c != out_c:
            self.downsample = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_c))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(y + shortcut)


def res_layer(in_c, out_c, count, stride):
    return nn.Sequential(*[BasicBlock(in_c if i == 0 else out_c, out_c, stride if i == 0 else 1)
                           for i in range(count)])


class ResNetFPNSSD(nn.Module):
    def __init__(self, num_classes, divisor=ResNetFPN.WIDTH_DIVISOR):
        super().__init__()
        c = lambda n: _c(n, divisor)  # noqa: E731
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, c(64), 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c(64))
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [c(64), c(128), c(256), c(512)]
        in_c = c(64)
        for i, (w, n) in enumerate(zip(widths, ResNetFPN.BLOCKS)):
            setattr(self, f"layer{i + 1}", res_layer(in_c, w, n, 1 if i == 0 else 2))
            in_c = w
        f = c(256)
        for level, ch in zip((3, 4, 5), widths[1:]):
            setattr(self, f"lateral{level}", nn.Conv2d(ch, f, 1))
            setattr(self, f"smooth{level}", nn.Conv2d(f, f, 3, padding=1))
        self.p6 = nn.Conv2d(widths[3], f, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(f, f, 3, stride=2, padding=1)
        for i in range(len(ResNetFPN.SIZES)):
            k = num_anchors(ResNetFPN.SIZES[i], ResNetFPN.RATIOS[i])
            setattr(self, f"cls_{i}", nn.Conv2d(f, k * (num_classes + 1), 3, padding=1))
            setattr(self, f"bbox_{i}", nn.Conv2d(f, k * 4, 3, padding=1))

    def sources(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
        m5 = self.lateral5(c5)
        m4 = self.lateral4(c4) + up(m5)
        m3 = self.lateral3(c3) + up(m4)
        p6 = self.p6(c5)
        p7 = self.p7(self.relu(p6))
        return [self.smooth3(m3), self.smooth4(m4), self.smooth5(m5), p6, p7]

    def forward(self, x):
        return ssd_heads(self, self.sources(x), ResNetFPN.SIZES, ResNetFPN.RATIOS)


# ----------------------------------------------------------------------------

EXAMPLES = {
    "ssd300-vgg16": (SSD300VGG16, SSD300),
    "mobilenet-ssdlite": (MobileNetV2SSDLite, SSDLite),
    "resnet-fpn-ssd": (ResNetFPNSSD, ResNetFPN),
}


def build(name, num_classes):
    return EXAMPLES[name][0](num_classes)


def summary(name, model):
    """Text summary: every module's output shape at the model's input size (batch 1),
    the anchors per scale and the parameter count, to check the DSL graph against."""
    cfg = EXAMPLES[name][1]
    h, w = cfg.INPUT_SIZE
    lines = [f"== {name}: input 3x{h}x{w}, {model.num_classes} classes"]
    was_training = model.training
    model.eval()
    x = torch.zeros((1, 3, h, w))
    with torch.no_grad():
        srcs = model.sources(x)
    hooks = []

    def hook(mod_name):
        def f(m, _inp, out):
            n = sum(p.numel() for p in m.parameters(recurse=False))
            params = f"  {n} params" if n else ""
            lines.append(f"  {mod_name:36s} {type(m).__name__:18s} {tuple(out.shape[1:])}{params}")
        return f

    for mod_name, m in model.named_modules():
        if mod_name and (not list(m.children()) or isinstance(m, (InvertedResidual, BasicBlock))):
            hooks.append(m.register_forward_hook(hook(mod_name)))
    with torch.no_grad():
        anchors, cls_preds, bbox_preds = model(x)
    model.train(was_training)
    for hk in hooks:
        hk.remove()
    total_a = 0
    for i, s in enumerate(srcs):
        k = num_anchors(cfg.SIZES[i], cfg.RATIOS[i])
        a = s.shape[2] * s.shape[3] * k
        total_a += a
        lines.append(f"  scale {i}: {s.shape[1]} channels, {s.shape[2]}x{s.shape[3]}, "
                     f"{k} anchors per position (sizes {cfg.SIZES[i]}, ratios "
                     f"{[round(r, 4) for r in cfg.RATIOS[i]]}), {a} anchors")
    trainable = sum(p.numel() for p in model.parameters())
    lines.append(f"  anchors {total_a}; outputs anchors {tuple(anchors.shape)} cls_preds "
                 f"{tuple(cls_preds.shape)} bbox_preds {tuple(bbox_preds.shape)}")
    lines.append(f"  trainable parameters {trainable}; state_dict tensors "
                 f"{len(model.state_dict())}")
    assert anchors.shape[1] == total_a
    return "\n".join(lines)
