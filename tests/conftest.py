import numpy as np
import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
