"""PyTorch twins of Retort's C++ model zoo (models/*.cpp), written for golden tests and checkpoint
exchange: resnet8x4, resnet20, wrn_16_2, vgg8, mobile_half and ShuffleV2 — and resnet56, resnet32x4
and wrn_40_2, the same classes at other depths and widths, for the [perf] benchmark's teachers
(bench/torch_reference.py). Each is an nn.Module whose state_dict has exactly the names, shapes and
order of the C++ model, which are those of the RepDistiller / mdistiller definitions, so checkpoints
move between all three.

Every constructor takes num_classes and in_channels (the references hard-code 3 input channels).
The references' fixed-size final pools (AvgPool2d(8), avg_pool2d(4), AvgPool2d(2, ceil_mode)) are
adaptive average pools to 1x1 here and in C++: identical for 32x32 inputs, and 28x28 inputs work too.
Each model's forward returns the logits only; features are the C++ side's business (taps).

Initialisation follows the references (it matters only when a twin is trained; the golden generator
overwrites every tensor with a reproducible fill)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(cin, cout, k, stride=1, groups=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=bias)


def _init_normal_fan_out(model, linear_std=None):
    """RepDistiller's VGG / WRN / MobileNetV2 init: conv N(0, sqrt(2 / (k*k*out))) with zero bias;
    Linear bias 0, and weight N(0, linear_std) when given (otherwise PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                m.weight.data.normal_(0, linear_std)
            m.bias.data.zero_()


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


# ---- CIFAR ResNet (resnet.py) -----------------------------------------------------------------------

class ResNetBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = _conv(cout, cout, 3)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, depth, widths, num_classes=100, in_channels=3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = _conv(in_channels, widths[0], 3)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        cin = widths[0]
        for s, (w, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = []
            for i in range(n):
                blocks.append(ResNetBlock(cin, w, stride if i == 0 else 1))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet8x4(num_classes=100, in_channels=3):
    return ResNet(8, (32, 64, 128, 256), num_classes, in_channels)


def resnet20(num_classes=100, in_channels=3):
    return ResNet(20, (16, 16, 32, 64), num_classes, in_channels)


def resnet56(num_classes=100, in_channels=3):
    return ResNet(56, (16, 16, 32, 64), num_classes, in_channels)


def resnet32x4(num_classes=100, in_channels=3):
    return ResNet(32, (32, 64, 128, 256), num_classes, in_channels)


# ---- Wide ResNet (wrn.py, pre-activation) ------------------------------------------------------------

class WRNBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = _conv(cout, cout, 3)
        self.convShortcut = _conv(cin, cout, 1, stride) if cin != cout else None

    def forward(self, x):
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return (x if self.convShortcut is None else self.convShortcut(act)) + out


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, num_classes=100, in_channels=3):
        super().__init__()
        n = (depth - 4) // 6
        c = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = _conv(in_channels, c[0], 3)
        self.block1 = NetworkBlock(n, c[0], c[1], 1)
        self.block2 = NetworkBlock(n, c[1], c[2], 2)
        self.block3 = NetworkBlock(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c[3], num_classes)
        _init_normal_fan_out(self)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def wrn_16_2(num_classes=100, in_channels=3):
    return WideResNet(16, 2, num_classes, in_channels)


def wrn_40_2(num_classes=100, in_channels=3):
    return WideResNet(40, 2, num_classes, in_channels)


# ---- VGG with BN (vgg.py) ---------------------------------------------------------------------------

class VGG(nn.Module):
    def __init__(self, cfg, num_classes=100, in_channels=3):
        super().__init__()
        cin = in_channels
        for b, widths in enumerate(cfg):
            layers = []
            for w in widths:
                layers += [_conv(cin, w, 3, bias=True), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            setattr(self, f"block{b}", nn.Sequential(*layers[:-1]))  # the last ReLU runs in forward
        for p in range(4):
            setattr(self, f"pool{p}", nn.MaxPool2d(2, 2))
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cin, num_classes)
        _init_normal_fan_out(self, linear_std=0.01)

    def forward(self, x):
        pool3 = x.shape[2] == 64
        x = F.relu(self.block0(x))
        for b in range(1, 5):
            if b <= 3:
                x = getattr(self, f"pool{b - 1}")(x)
            elif pool3:
                x = self.pool3(x)
            x = F.relu(getattr(self, f"block{b}")(x))
        return self.classifier(torch.flatten(self.pool4(x), 1))


def vgg8(num_classes=100, in_channels=3):
    return VGG([[64], [128], [256], [512], [512]], num_classes, in_channels)


def vgg13(num_classes=100, in_channels=3):  # a teacher of the CRD table's cross-family pairs
    return VGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], num_classes, in_channels)


# ---- MobileNetV2 for CIFAR (mobilenetv2.py) ---------------------------------------------------------

def _conv_bn_relu(cin, cout, k, stride):
    return nn.Sequential(_conv(cin, cout, k, stride), nn.BatchNorm2d(cout), nn.ReLU())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _conv(cin, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
            _conv(hidden, hidden, 3, stride, groups=hidden), nn.BatchNorm2d(hidden), nn.ReLU(),
            _conv(hidden, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, t, width, num_classes=100, in_channels=3):
        super().__init__()
        settings = [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2),
                    (t, 320, 1, 1)]
        cin = int(32 * width)
        self.conv1 = _conv_bn_relu(in_channels, cin, 3, 2)
        self.blocks = nn.ModuleList()
        for ti, c, n, s in settings:
            group = []
            for i in range(n):
                group.append(InvertedResidual(cin, int(c * width), s if i == 0 else 1, ti))
                cin = int(c * width)
            self.blocks.append(nn.Sequential(*group))
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = _conv_bn_relu(cin, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_normal_fan_out(self, linear_std=0.01)

    def forward(self, x):
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.avgpool(self.conv2(x))
        return self.classifier(torch.flatten(x, 1))


def mobile_half(num_classes=100, in_channels=3):
    return MobileNetV2(6, 0.5, num_classes, in_channels)


# ---- ResNet50 for CIFAR (resnetv2.py) ------------------------------------------------------------

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, 4 * planes, 1), nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != 4 * planes:
            self.shortcut = nn.Sequential(_conv(cin, 4 * planes, 1, stride), nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNetV2(nn.Module):
    def __init__(self, blocks, num_classes=100, in_channels=3):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, 64, 3), nn.BatchNorm2d(64)  # 3x3 stride 1, no max-pool
        cin = 64
        for s, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for i in range(n):
                layers.append(Bottleneck(cin, planes, 2 if i == 0 and s > 0 else 1))
                cin = 4 * planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(cin, num_classes)
        # The reference's init (kaiming_normal fan_out, BN 1/0) is replaced by the tests' fill.

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def ResNet50(num_classes=100, in_channels=3):  # noqa: N802 (the registry name)
    return ResNetV2((3, 4, 6, 3), num_classes, in_channels)


# ---- ShuffleNetV1 for CIFAR (ShuffleNetv1.py) -------------------------------------------------------

class ShuffleV1Bottleneck(nn.Module):
    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        g = 1 if in_planes == 24 else groups  # the first block reads the 24-channel stem ungrouped
        self.conv1, self.bn1 = _conv(in_planes, mid, 1, groups=g), nn.BatchNorm2d(mid)
        self.shuffle1 = ShuffleBlock(g)
        self.conv2, self.bn2 = _conv(mid, mid, 3, stride, groups=mid), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = _conv(mid, out_planes, 1, groups=groups), nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x):
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    def __init__(self, widths, blocks, groups, num_classes=100, in_channels=3):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, 24, 1), nn.BatchNorm2d(24)
        cin = 24
        for s in range(3):
            layers = []
            for i in range(blocks[s]):  # a stage's first block concatenates its pooled input
                layers.append(ShuffleV1Bottleneck(cin, widths[s] - (cin if i == 0 else 0), 2 if i == 0 else 1, groups))
                cin = widths[s]
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(cin, num_classes)
        # No explicit initialisation in the reference: PyTorch's defaults.

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))  # the reference's avg_pool2d(4) at 32x32


def ShuffleV1(num_classes=100, in_channels=3):  # noqa: N802 (the registry name)
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)


# ---- ShuffleNetV2 for CIFAR (ShuffleNetv2.py) -------------------------------------------------------

class ShuffleBlock(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


class ShuffleV2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.conv1, self.bn1 = _conv(h, h, 1), nn.BatchNorm2d(h)
        self.conv2, self.bn2 = _conv(h, h, 3, groups=h), nn.BatchNorm2d(h)
        self.conv3, self.bn3 = _conv(h, h, 1), nn.BatchNorm2d(h)
        self.shuffle = ShuffleBlock(2)

    def forward(self, x):
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class ShuffleV2DownBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1, self.bn1 = _conv(cin, cin, 3, 2, groups=cin), nn.BatchNorm2d(cin)
        self.conv2, self.bn2 = _conv(cin, mid, 1), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = _conv(cin, mid, 1), nn.BatchNorm2d(mid)
        self.conv4, self.bn4 = _conv(mid, mid, 3, 2, groups=mid), nn.BatchNorm2d(mid)
        self.conv5, self.bn5 = _conv(mid, mid, 1), nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock(2)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, widths, blocks, num_classes=100, in_channels=3):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, 24, 1), nn.BatchNorm2d(24)
        cin = 24
        for s in range(3):
            layers = [ShuffleV2DownBlock(cin, widths[s])] + [ShuffleV2Block(widths[s]) for _ in range(blocks[s])]
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
            cin = widths[s]
        self.conv2, self.bn2 = _conv(cin, widths[3], 1), nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        # No explicit initialisation in the reference: PyTorch's defaults.

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def ShuffleV2(num_classes=100, in_channels=3):  # noqa: N802 (the registry name)
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes, in_channels)


MODELS = {
    "resnet8x4": resnet8x4,
    "resnet20": resnet20,
    "wrn_16_2": wrn_16_2,
    "vgg8": vgg8,
    "vgg13": vgg13,
    "mobile_half": mobile_half,
    "ShuffleV2": ShuffleV2,
    "ShuffleV1": ShuffleV1,
    "ResNet50": ResNet50,
    "MobileNetV2": mobile_half,  # the registry's two names of one network (width 0.5, expansion 6)
    "resnet56": resnet56,
    "resnet32x4": resnet32x4,
    "wrn_40_2": wrn_40_2,
}
