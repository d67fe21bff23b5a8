import os
import subprocess
import sys
import textwrap

import networkx as nx
import numpy as np
import pytest
import torch
from networkx.algorithms.community import modularity as nx_modularity

pytest_plugins = ["pytester"]  # tests of gpugraph's own pytest plugin

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


@pytest.fixture
def clustered_case():
    return clustered()


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
        {textwrap.indent(textwrap.dedent(setup), '        ').strip()}
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
        a = np.where(present | present.T, np.maximum(np.where(present, w, -np.inf), np.where(present.T, w.T, -np.inf)), 0.0)
    else:
        a = np.where(present & present.T, (w + w.T) / 2, 0.0)
    return a if weighted else (a != 0).astype(float)


def nx_reference_modularity(adj, labels, resolution=1.0):
    graph = nx.from_numpy_array(adj)
    classes = [set(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return nx_modularity(graph, classes, weight="weight", resolution=resolution)
