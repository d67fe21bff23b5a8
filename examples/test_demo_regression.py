"""A representation regression test: the demo network must keep separating the classes.

    pytest examples/test_demo_regression.py                        # compare with the baseline
    pytest examples/test_demo_regression.py --gg-update-baselines  # store a new baseline

Trains the demo network (gpugraph/tools/demo.py) for 3 epochs on MNIST-1D, measures its layer-wise
modularity curve, and fails if any layer separates the classes worse than the stored curve
(examples/gg_baselines/), by more than 0.03. Replace the model, data and training with yours.
"""

import torch

import gpugraph as gg
from gpugraph.tools.demo import DemoNet, mnist1d_data, train


def test_the_demo_network_separates_the_classes_as_before(gg_baseline):
    torch.manual_seed(0)
    model = DemoNet()
    x_train, y_train, x_test, y_test = mnist1d_data()
    train(model, x_train, y_train, epochs=3, seed=0, log=lambda *_: None)
    acts = gg.capture(model, (x_test, y_test), include_input=True)
    curve = gg.modularity_curve(acts, k=3, n=200, repeats=5, seed=0)
    gg_baseline.check_curve(curve, atol=0.03, direction="lower")
