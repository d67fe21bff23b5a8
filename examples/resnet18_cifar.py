"""Point gpugraph at your own model: a ResNet-18 on CIFAR-sized inputs.

    python examples/resnet18_cifar.py [--samples 1000] [--n 500] [--repeats 2] [--out resnet18_curve.png]

Runs offline in the README's environment: the network is defined below (the layout of
torchvision's resnet18: a stem, four stages of two BasicBlocks, a linear head), so no
torchvision is needed, and nothing is downloaded. The weights are random and the inputs are
random CIFAR-sized images with 10 random labels, so the curve stays flat and low (and
gpugraph says so). Replace ``model`` with your trained network and ``images, labels`` with
your test set (or a DataLoader) to see the rise with depth that Lu et al. (2022) report on
CIFAR-10.
"""

import argparse

import torch
from torch import nn

import gpugraph as gg


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 layout with a CIFAR stem (3x3 conv, no max-pool)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, c_in = (64, 128, 256, 512), 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(c_in, width, stride), BasicBlock(width, width)))
            c_in = width
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--n", type=int, default=500, help="samples per subset")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="resnet18_curve.png")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = ResNet18(classes=10)  # replace with your trained network
    images = torch.randn(args.samples, 3, 32, 32)  # and these with your test set
    labels = torch.randint(0, 10, (args.samples,))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    # Default layers for a ResNet: the stem conv (conv1), each residual block, and fc.
    acts = gg.capture(model, (images, labels), reduce="flatten", device=device)
    for name, x in acts.items():
        print(f"{name:10s} {tuple(x.shape)}")

    curve = gg.modularity_curve(acts, k=3, n=args.n, repeats=args.repeats)
    print(curve)
    print("redundant:", curve.redundant())
    curve.plot(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
