"""Point gpugraph at your own model: torchvision's ResNet-18 on CIFAR-sized inputs.

    pip install torchvision   # matching your torch
    python examples/resnet18_cifar.py

Nothing is downloaded: the weights are random and the 1000 inputs are random CIFAR-sized
images with 10 random labels, so the curve stays flat and low. Replace ``model`` with your
trained network and ``images, labels`` with your test set (or a DataLoader) to see the rise
with depth that Lu et al. (2022) report on CIFAR-10.
"""

import torch
from torchvision.models import resnet18

import gpugraph as gg

torch.manual_seed(0)
model = resnet18(num_classes=10)  # weights=None: random initialisation, no download
images = torch.randn(1000, 3, 32, 32)
labels = torch.randint(0, 10, (1000,))
device = "cuda" if torch.cuda.is_available() else "cpu"
model.to(device)

# Default layers for a ResNet: the stem conv (conv1), each residual block, and fc.
acts = gg.capture(model, (images, labels), reduce="flatten", device=device)
for name, x in acts.items():
    print(f"{name:10s} {tuple(x.shape)}")

curve = gg.modularity_curve(acts, k=3, n=500, repeats=2)
print(curve)
print("redundant:", curve.redundant())
curve.plot("resnet18_curve.png")
