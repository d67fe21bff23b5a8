"""The network and data of the guide's examples: the demo's residual CNN, trained for three
epochs on MNIST-1D (generated offline), cached under docs/_build so that every page and
figure of one build reuses it."""

from pathlib import Path

import torch

from gpugraph.models.training import fit
from gpugraph.tools.demo import DemoNet, mnist1d_data

CACHE = Path(__file__).resolve().parent / "_build" / "cache" / "demo-net-e3.pt"


def demo():
    """(model, (x, y), (x_test, y_test)): the trained demo network, its 4000 training and
    1000 test signals (length 40, 10 classes)."""
    x, y, x_test, y_test = mnist1d_data()
    torch.manual_seed(0)
    model = DemoNet()
    if CACHE.exists():
        model.load_state_dict(torch.load(CACHE, weights_only=True))
    else:
        fit(model, x, y, epochs=3, seed=0, log=None)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), CACHE)
    return model.eval(), (x, y), (x_test, y_test)
