"""Helpers shared by the tests: data, exact references written out independently of
gpugraph, a peak-memory probe, and small models for the capture and pruning tests."""

import os
import subprocess
import sys
import textwrap

import networkx as nx
import numpy as np
import pytest
import torch
from networkx.algorithms.community import modularity as nx_modularity
from torch import nn

# Every device-parametrised test shows on every machine: the CUDA cases skip with a reason.
HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (none visible to torch)")),
]


def clustered(n=600, d=24, classes=4, spread=0.6, seed=0):
    """Gaussian clusters around random centres, with integer labels (float32 features)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    labels = rng.integers(0, classes, size=n)
    x = centres[labels] + spread * rng.normal(size=(n, d))
    return torch.tensor(x, dtype=torch.float32), labels


def exact_knn(x, k):
    """Exact float64 cosine top-k by a full sort, self excluded: the reference search."""
    x = np.asarray(x, dtype=np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def peak_growth(setup: str, call: str) -> tuple[int, str]:
    """Bytes by which one call raises the resident memory of a fresh process above what it
    held before the call.

    ``setup`` runs first (imports, data); then the kernel's high-water mark is reset
    (/proc/self/clear_refs), ``call`` runs, and the new mark is compared with the resident
    size before the call: no earlier peak (of the setup, or of another test) can hide the
    call's own. Returns (bytes, repr of the call's value).
    """
    code = textwrap.dedent(f"""
        def _status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
        {textwrap.indent(textwrap.dedent(setup), "        ").strip()}
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status("VmRSS:")
        value = {call}
        print(_status("VmHWM:") - before)
        print(repr(value))
    """)
    # A fixed mmap threshold: glibc then returns every freed large block to the system, so
    # the high-water mark follows live memory, not how the heap happened to fragment.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr
    grown, value = out.stdout.strip().split("\n", 1)
    return int(grown), value


def paper_adjacency(x, k, mode="mean", weighted=True, weights=None):
    """Dense construction of Lu et al.: cosine, top-k per row, symmetrised; float64.

    ``weights`` (N, k) replaces the float64 similarities of the exact search, so that a
    reference can be built on exactly the float32 weights of the graph under test.
    Unweighted: 1 on every edge of the mode's graph."""
    idx, sim = exact_knn(x, k)
    if weights is not None:
        sim = np.asarray(weights, dtype=np.float64)
    n = len(idx)
    w = np.zeros((n, n))
    w[np.arange(n)[:, None], idx] = sim
    present = np.zeros((n, n), dtype=bool)
    present[np.arange(n)[:, None], idx] = True
    if mode == "mean":
        a = (w + w.T) / 2
    elif mode == "max":
        a = np.where(
            present | present.T, np.maximum(np.where(present, w, -np.inf), np.where(present.T, w.T, -np.inf)), 0.0
        )
    else:
        a = np.where(present & present.T, (w + w.T) / 2, 0.0)
    return a if weighted else (a != 0).astype(float)


def nx_reference_modularity(adj, labels, resolution=1.0):
    graph = nx.from_numpy_array(adj)
    classes = [set(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return nx_modularity(graph, classes, weight="weight", resolution=resolution)


# ---- small ResNet-like and VGG-like models for the capture and pruning tests ----
class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean(dim=(2, 3)))


class TinyVGG(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class ConvBlockNet(nn.Module):
    """A plain CNN of nn.Sequential(Conv2d, BatchNorm2d, ReLU) blocks, as a new user writes it."""

    def __init__(self, classes=4, width=8, blocks=3):
        super().__init__()
        self.conv1 = self.block(1, width)
        self.mid = nn.Sequential(*(self.block(width, width) for _ in range(blocks)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

    @staticmethod
    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, x):
        return self.head(self.mid(self.conv1(x)))


class Exploding(nn.Module):
    """Raises inside the forward, after a hooked layer ran."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        self.lin(x)
        raise RuntimeError("boom")


def dense_lsim(x1, x2):
    """The definition: dense cosine graphs with zero diagonal, mean row cosine (float64)."""

    def graph(x):
        x = np.asarray(x, dtype=np.float64)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        a = xn @ xn.T
        np.fill_diagonal(a, 0.0)
        return a

    a1, a2 = graph(x1), graph(x2)
    num = (a1 * a2).sum(1)
    return float(np.mean(num / (np.linalg.norm(a1, axis=1) * np.linalg.norm(a2, axis=1))))
