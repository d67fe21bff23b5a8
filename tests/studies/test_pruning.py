import json
import re
import warnings

import numpy as np
import pytest
import torch
from helpers import ConvBlockNet, TinyResNet, TinyVGG, dense_lsim
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import gpugraph as gg
from gpugraph.models.training import accuracy, fit, recalibrate_bn, reinitialise
from gpugraph.tools.cli import main
from gpugraph.tools.demo import DemoNet

SIGNAL = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
IMAGE = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def snapshot(model: nn.Module) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items()}


CASES = [  # model, input, removable layers, torchvision-style ResNet, VGG-style Sequential, the demo net
    (TinyResNet, IMAGE, ["layer1.1"]),
    (TinyResNet, IMAGE, ["layer1.0", "layer1.1"]),
    (TinyVGG, IMAGE, ["features.5"]),
    (TinyVGG, IMAGE, ["features.4", "features.5"]),
    (DemoNet, SIGNAL, ["blocks.1", "blocks.3", "blocks.5"]),
]


@pytest.mark.parametrize("with_example", [True, False])
@pytest.mark.parametrize(("cls", "x", "layers"), CASES)
def test_prune_removes_exactly_the_named_layers(cls, x, layers, with_example):
    if cls is TinyVGG and "features.4" in layers and not with_example:  # a ReLU: nothing to shape a probe
        with pytest.raises(ValueError, match=r"'features.4'.*input shape is unknown.*pass example="):
            gg.prune(cls(), layers)
        return
    torch.manual_seed(0)
    model = cls().eval()
    before, out = snapshot(model), model(x)
    pruned = gg.prune(model, layers, example=x if with_example else None)
    # the original is untouched: same modules, same weights, same answer
    assert all(not isinstance(model.get_submodule(n), nn.Identity) for n in layers)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert torch.equal(model(x), out)
    # the copy runs, keeps the output shape, and lost exactly the removed layers' parameters
    assert pruned(x).shape == out.shape
    assert all(isinstance(pruned.get_submodule(n), nn.Identity) for n in layers)
    assert n_params(pruned) == n_params(model) - sum(n_params(model.get_submodule(n)) for n in layers)


def test_a_removed_residual_block_is_its_shortcut():
    # with its residual branch silenced (last BN scaled to 0), a block computes relu(x + 0) = x on
    # the non-negative output of the block before: the pruned model must then answer identically
    torch.manual_seed(1)
    model = DemoNet().eval()
    with torch.no_grad():
        model.blocks[3].bn2.weight.zero_()
        model.blocks[3].bn2.bias.zero_()
    pruned = gg.prune(model, "blocks.3", example=SIGNAL)
    torch.testing.assert_close(pruned(SIGNAL), model(SIGNAL), rtol=0, atol=0)
    other = gg.prune(model, "blocks.1", example=SIGNAL)  # a block doing real work: the answer changes
    assert not torch.allclose(other(SIGNAL), model(SIGNAL))


@pytest.mark.parametrize(
    ("cls", "x", "layer", "match"),
    [
        (DemoNet, SIGNAL, "blocks.2", r"'blocks.2'.*output has shape \(N, 64, 20\) but its input \(N, 32, 40\)"),
        (DemoNet, SIGNAL, "stem.0", r"'stem.0'.*\(N, 32, 40\) but its input \(N, 1, 40\)"),
        (DemoNet, SIGNAL, "fc", r"'fc': it \(Linear\) produces the model's output"),
        (TinyResNet, IMAGE, "layer2.0", r"'layer2.0'.*downsampling"),
        (TinyVGG, IMAGE, "features.3", r"\(N, 16, 4, 4\) but its input \(N, 8, 4, 4\)"),
        (TinyVGG, IMAGE, "features.2", r"\(N, 8, 4, 4\) but its input \(N, 8, 8, 8\)"),  # the max-pool
        (TinyVGG, IMAGE, "classifier.0", r"'classifier.0'.*\(N, 256\) but its input \(N, 16, 4, 4\)"),  # flatten
    ],
)
def test_layers_that_change_shapes_are_refused_by_name(cls, x, layer, match):
    with pytest.raises(ValueError, match=match):
        gg.prune(cls(), [layer], example=x)


def test_prune_errors():
    model = DemoNet()
    with pytest.raises(ValueError, match=r"no layer 'blocks.9'; did you mean 'blocks.5'"):
        gg.prune(model, ["blocks.9"])
    with pytest.raises(ValueError, match="no layers to remove"):
        gg.prune(model, [])
    with pytest.raises(ValueError, match="the empty name is the whole model"):
        gg.prune(model, [""])
    with pytest.raises(ValueError, match=re.escape("named more than once: blocks.1")):
        gg.prune(model, ["blocks.1", "blocks.1"])
    with pytest.raises(ValueError, match=r"'blocks.1.conv2' is inside 'blocks.1'"):
        gg.prune(model, ["blocks.1", "blocks.1.conv2"])
    with pytest.raises(ValueError, match=r"'fc'.*\(N, 10\) but its input \(N, 64\)"):  # no example: probed alone
        gg.prune(model, ["fc"])
    with pytest.raises(ValueError, match=r"'features.4'.*input shape is unknown.*pass example="):
        gg.prune(TinyVGG(), ["features.4"])
    with pytest.raises(ValueError, match=r"'pool2'.*not called by a forward pass"):
        unused = DemoNet()
        unused.pool2 = nn.Identity()  # registered, never called
        gg.prune(unused, ["pool2"], example=SIGNAL)
    with pytest.raises(TypeError, match="not a TorchScript archive"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, still used
        gg.prune(torch.jit.script(nn.Linear(3, 3)), ["weight"])
    with pytest.raises(TypeError, match=re.escape("must be a torch.nn.Module")):
        gg.prune("model.pt", ["fc"])


def test_model_cost_is_pytorchs_counter_and_the_hand_count():
    # conv: 2 N C_out L_out C_in K = 2*3*4*10*2*3 = 1440; linear 2 N in out = 2*3*40*5 = 1200
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(40, 5)).train()
    x = torch.randn(3, 2, 10)
    cost = gg.model_cost(model, x)
    assert cost == {"params": 4 * 2 * 3 + 4 + 40 * 5 + 5, "flops": 1440 + 1200}
    assert model.training  # mode restored
    for cls, example in ((DemoNet, SIGNAL), (TinyResNet, IMAGE)):
        net = cls().eval()
        with FlopCounterMode(display=False) as counter:
            net(example)
        assert gg.model_cost(net, example)["flops"] == counter.get_total_flops()


def test_model_cost_of_a_pruned_model_drops_by_the_removed_blocks_flops():
    model = DemoNet()
    block = model.blocks[3]
    inner = torch.randn(1, 64, 20)  # what blocks.3 sees for a signal of length 40
    pruned = gg.prune(model, ["blocks.3"], example=SIGNAL)
    saved = gg.model_cost(model, SIGNAL[:1])["flops"] - gg.model_cost(pruned, SIGNAL[:1])["flops"]
    assert saved == gg.model_cost(block, inner)["flops"] == 2 * (2 * 64 * 20 * 64 * 3)


def curve_of(layers, means, final=("fc",)):
    return gg.LayerCurve(layers, np.array([means, means]), {"final": list(final)})


def test_prune_plan_takes_runs_that_add_less_than_tol_together():
    layers = ["input", "stem.0", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "fc"]
    # blocks.0 rises; blocks.1 adds 0.006: goes; blocks.2 (strided) stays; blocks.3 +0.004 and a
    # dip blocks.4 could go, but blocks.4 is strided; blocks.5 adds 0.008 over blocks.4: goes
    means = [0.10, 0.15, 0.30, 0.306, 0.306, 0.310, 0.300, 0.308, 0.90]
    plan = gg.prune_plan(curve_of(layers, means), DemoNet(), tol=0.01, example=SIGNAL)
    assert plan.layers == ["blocks.1", "blocks.3", "blocks.5"]
    assert plan.kept["blocks.0"].startswith("raises the modularity by 0.150")
    assert "downsampling" in plan.kept["blocks.2"] and "downsampling" in plan.kept["blocks.4"]
    assert plan.kept["fc"] == "the model's output" and "input" in plan.kept
    assert plan.removable == ["blocks.0", "blocks.1", "blocks.3", "blocks.5"]
    assert plan.redundant == ["blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5"]
    # a slow steady rise: each step adds 0.007 < tol, so redundant() lists every block, but two
    # steps together do not fit: blocks.1 stays after blocks.0 goes (and blocks.4 after blocks.3)
    steady = [0.10, 0.15, 0.157, 0.164, 0.171, 0.178, 0.185, 0.192, 0.90]
    plan = gg.prune_plan(curve_of(layers, steady), DemoNet(), tol=0.01, example=SIGNAL)
    assert plan.layers == ["blocks.0", "blocks.3", "blocks.5"]
    assert plan.redundant == [f"blocks.{i}" for i in range(6)]
    assert plan.kept["blocks.1"].startswith("raises the modularity by 0.014")
    assert gg.prune(DemoNet(), plan.layers, example=SIGNAL)(SIGNAL).shape == (6, 10)


def test_prune_plan_count_removes_the_least_changing_layers_one_by_one():
    layers = ["input", "stem.0", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "fc"]
    means = [0.10, 0.15, 0.30, 0.306, 0.306, 0.310, 0.300, 0.308, 0.90]
    curve = curve_of(layers, means)
    # gains over the nearest kept layer: blocks.0 0.150, blocks.1 0.006, blocks.3 0.004, blocks.5 0.008
    # (blocks.2 and blocks.4 downsample); removing one does not change another's reference here
    for count, expected in [
        (0, []),
        (1, ["blocks.3"]),
        (2, ["blocks.1", "blocks.3"]),
        (3, ["blocks.1", "blocks.3", "blocks.5"]),
        (4, ["blocks.0", "blocks.1", "blocks.3", "blocks.5"]),
    ]:
        plan = gg.prune_plan(curve, DemoNet(), example=SIGNAL, count=count)
        assert plan.layers == expected, count
    assert plan.count == 4 and "the 4 least changing" in str(plan)
    plan = gg.prune_plan(curve, DemoNet(), example=SIGNAL, count=2)
    assert plan.kept["blocks.5"] == "raises the modularity by 0.008 over blocks.4, more than the 2 removed"
    # blocks.0 +0.006 goes first; then blocks.1's reference is stem.0 (+0.013, not +0.007), so
    # blocks.3 (+0.010) is next
    slow = [0.10, 0.15, 0.156, 0.163, 0.30, 0.310, 0.30, 0.311, 0.90]
    assert gg.prune_plan(curve_of(layers, slow), DemoNet(), example=SIGNAL, count=2).layers == ["blocks.0", "blocks.3"]
    with pytest.raises(ValueError, match="count=5 but only 4 layer"):
        gg.prune_plan(curve, DemoNet(), example=SIGNAL, count=5)
    with pytest.raises(ValueError, match="count must be a non-negative integer"):
        gg.prune_plan(curve, DemoNet(), example=SIGNAL, count=-1)


def test_prune_plan_by_layer_similarity():
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal((40, 8)) for _ in range(3))
    rotation = np.linalg.qr(rng.standard_normal((8, 8)))[0]

    def t(x):
        return torch.tensor(x, dtype=torch.float32)

    layers = {
        "input": t(a),
        "stem.0": t(a + 0.3 * b),
        "blocks.0": t(a + 0.3 * b),  # the same graph: LSim 1
        "blocks.1": t(b),
        "blocks.2": t(c),
        "blocks.3": t(3 * c),  # LSim is blind to scale ...
        "blocks.4": t(a),
        "blocks.5": t(a @ rotation),
        "fc": t(b),
    }  # ... and to rotations
    acts = gg.Activations(layers, labels=torch.zeros(40, dtype=torch.long), final=["fc"])
    plan = gg.prune_plan(acts, DemoNet(), by="lsim", example=SIGNAL)
    assert plan.by == "lsim" and plan.tol == gg.studies.pruning.TOL["lsim"]
    assert plan.layers == ["blocks.0", "blocks.3", "blocks.5"]
    change = 1 - dense_lsim(a + 0.3 * b, b)
    assert change > 0.1
    assert plan.kept["blocks.1"] == f"changes the layer similarity (1 - LSim) by {change:.3f} over the last kept layer"
    assert plan.kept["fc"] == "the model's output" and "downsampling" in plan.kept["blocks.2"]
    assert plan.redundant == ["blocks.0", "blocks.3", "blocks.5"]
    # count: with a little noise on blocks.0 and more on blocks.5, the least changed goes first
    noisy = dict(layers, **{"blocks.0": t(a + 0.3 * b + 0.01 * c), "blocks.5": t(a @ rotation + 0.2 * b)})
    acts = gg.Activations(noisy, final=["fc"])
    gaps = {
        "blocks.0": 1 - dense_lsim(a + 0.3 * b, a + 0.3 * b + 0.01 * c),
        "blocks.3": 1 - dense_lsim(c, 3 * c),
        "blocks.5": 1 - dense_lsim(a, a @ rotation + 0.2 * b),
    }
    assert gaps["blocks.3"] < 1e-12 < gaps["blocks.0"] < gaps["blocks.5"]
    assert gg.prune_plan(acts, DemoNet(), by="lsim", example=SIGNAL, count=1).layers == ["blocks.3"]
    assert gg.prune_plan(acts, DemoNet(), by="lsim", example=SIGNAL, count=2).layers == ["blocks.0", "blocks.3"]
    plan = gg.prune_plan(acts, DemoNet(), by="lsim", example=SIGNAL, tol=gaps["blocks.5"] + 1e-6)
    assert plan.layers == ["blocks.0", "blocks.3", "blocks.5"]
    plan = gg.prune_plan(acts, DemoNet(), by="lsim", example=SIGNAL, tol=gaps["blocks.5"] - 1e-6)
    assert plan.layers == ["blocks.0", "blocks.3"]
    assert (
        plan.kept["blocks.5"]
        == f"changes the layer similarity (1 - LSim) by {gaps['blocks.5']:.3f} over the last kept layer"
    )


def test_prune_plan_errors():
    with pytest.raises(ValueError, match="tol must be non-negative"):
        gg.prune_plan(curve_of(["a", "b"], [0.1, 0.2], final=()), DemoNet(), tol=-1)
    with pytest.raises(TypeError, match="curve must be a LayerCurve"):
        gg.prune_plan({"blocks.1": 0.3}, DemoNet())
    with pytest.raises(ValueError, match='by must be "modularity" or "lsim"'):
        gg.prune_plan(curve_of(["a", "b"], [0.1, 0.2], final=()), DemoNet(), by="cka")
    with pytest.raises(TypeError, match=re.escape("not a modularity curve: pass gg.capture")):
        gg.prune_plan(curve_of(["a", "b"], [0.1, 0.2], final=()), DemoNet(), by="lsim")
    with pytest.raises(TypeError, match="needs the captured activations"):
        gg.prune_plan({"blocks.1": torch.zeros(4, 2)}, DemoNet(), by="lsim")


def test_training_helpers():
    # two separable blobs: the loop learns them; accuracy counts by hand; reinitialise is seeded
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(64, 5, generator=g) + 3, torch.randn(64, 5, generator=g) - 3])
    y = torch.cat([torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)])
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    reinitialise(model, seed=3)
    start = snapshot(model)
    predicted = model(x).argmax(1)
    assert accuracy(model, x, y) == float((predicted == y).sum()) / 128
    fit(model, x, y, epochs=10, batch_size=16, lr=0.05, log=None)
    assert accuracy(model, x, y) == 1.0
    reinitialise(model, seed=3)
    assert all(torch.equal(start[key], value) for key, value in model.state_dict().items())
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        fit(model, x, y, epochs=0)


def test_cli_prune_writes_model_report_and_plot(tmp_path, capsys):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, generator=g)
    y = (x[:, :20].sum(1) > 0).long() + 2 * (x[:, 20:].sum(1) > 0).long()  # 4 classes
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    model = DemoNet(classes=4)
    fit(model, x, y, epochs=2, log=None)
    torch.save(model, tmp_path / "model.pt")
    out = tmp_path / "out"
    # a tolerance of 1 marks every removable block of this barely trained net
    code = main(
        [
            "prune",
            str(tmp_path / "model.pt"),
            str(tmp_path / "data.pt"),
            "--tol",
            "1",
            "--epochs",
            "1",
            "--n",
            "20",
            "--repeats",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "prune.json").read_text())
    assert report["removed"] == ["blocks.0", "blocks.1", "blocks.3", "blocks.5"]
    pruned = torch.load(out / "pruned.pt", weights_only=False)
    assert pruned(x[:3]).shape == (3, 4)
    blocks = sum(n_params(model.get_submodule(n)) for n in report["removed"])
    assert report["pruned"]["params"] == report["before"]["params"] - blocks == n_params(pruned)
    assert report["before"]["flops"] == gg.model_cost(model, x[:1])["flops"]
    assert report["params_removed"] == pytest.approx(blocks / n_params(model))
    assert {"before", "pruned", "finetuned", "retrained"} <= set(report)
    assert all(0 <= report[key]["accuracy"] <= 1 for key in ("before", "pruned", "finetuned", "retrained"))
    assert (out / "curve.png").stat().st_size > 0
    text = capsys.readouterr().out
    assert "removed 4 layer(s)" in text and "pruned, fine-tuned" in text


def quadrant_images(n, seed):
    """1x8x8 images whose class (0..3) is the brightest quadrant."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    for c in range(4):
        r, col = divmod(c, 2)
        x[y == c, :, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 1.5
    return x, y


def conv_block_files(tmp_path, epochs: int):
    """The new user's conv -> BN -> ReLU network trained on quadrant images, saved with its
    training and test data for the command line: (model, (x, y), (x_test, y_test))."""
    torch.manual_seed(0)
    x, y = quadrant_images(240, 0)
    x_test, y_test = quadrant_images(120, 1)
    torch.save({"x": x, "y": y}, tmp_path / "train.pt")
    torch.save({"x": x_test, "y": y_test}, tmp_path / "test.pt")
    model = ConvBlockNet()
    fit(model, x, y, epochs=epochs, log=None)
    model.eval()
    torch.save(model, tmp_path / "model.pt")
    return model, (x, y), (x_test, y_test)


def run_prune(tmp_path, *options: str):
    """``gpugraph prune`` on the files of :func:`conv_block_files`, without fine-tuning, on
    small curves: (exit code, output folder)."""
    out = tmp_path / "out"
    files = [str(tmp_path / name) for name in ("model.pt", "train.pt")]
    common = ["--test", str(tmp_path / "test.pt"), "--epochs", "0", "--n", "30", "--repeats", "3", "--out", str(out)]
    return main(["prune", *files, *common, *options]), out


@pytest.mark.parametrize("bn", [True, False])
def test_cli_prune_removes_whole_conv_blocks_and_re_estimates_batch_norm(tmp_path, capsys, bn):
    # the new user's model: nn.Sequential(Conv2d, BatchNorm2d, ReLU) blocks; the curve's layers
    # are the blocks, pruning removes a block whole (no BN or ReLU left behind), and the pruned
    # copy's BN statistics are re-estimated on the training data before fine-tuning
    model, (x, _), (x_test, y_test) = conv_block_files(tmp_path, epochs=2)
    code, out = run_prune(tmp_path, "--tol", "1", *([] if bn else ["--no-bn"]))
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "prune.json").read_text())
    assert report["removed"] == ["mid.0", "mid.1", "mid.2"]
    saved = torch.load(out / "pruned.pt", weights_only=False)
    assert all(isinstance(saved.mid[i], nn.Identity) for i in range(3))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in saved.modules()) == 1  # conv1's only
    cut = gg.prune(model, report["removed"], example=x_test[:2])
    assert report["pruned"]["accuracy"] == accuracy(cut, x_test, y_test)
    text = capsys.readouterr().out
    if bn:
        recalibrate_bn(cut, x)
        assert report["recalibrated"]["accuracy"] == accuracy(cut, x_test, y_test)
        torch.testing.assert_close(saved.conv1[1].running_var, cut.conv1[1].running_var, rtol=0, atol=0)
        assert not torch.equal(saved.conv1[1].running_var, model.conv1[1].running_var)
        assert "pruned, BN re-estimated" in text
    else:
        assert "recalibrated" not in report and "BN re-estimated" not in text
        torch.testing.assert_close(saved.conv1[1].running_var, model.conv1[1].running_var, rtol=0, atol=0)


def test_cli_prune_by_layer_similarity_removes_count_blocks(tmp_path, capsys):
    model, _, (x_test, y_test) = conv_block_files(tmp_path, epochs=1)
    code, out = run_prune(tmp_path, "--by", "lsim", "--count", "2")
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "prune.json").read_text())
    acts = gg.capture(model, (x_test, y_test))
    expected = gg.prune_plan(acts, model, by="lsim", count=2, example=x_test[:2])
    assert report["by"] == "lsim" and report["count"] == 2 and report["tol"] == 0.002
    assert report["removed"] == expected.layers and len(expected.layers) == 2
    assert "the 2 least changing" in capsys.readouterr().out


def test_cli_prune_errors(tmp_path, capsys):
    torch.save({"x": torch.randn(20, 40), "y": torch.randn(20)}, tmp_path / "float.pt")
    torch.save(DemoNet(), tmp_path / "model.pt")
    assert main(["prune", str(tmp_path / "model.pt"), str(tmp_path / "float.pt")]) == 1
    assert "training needs integer class labels" in capsys.readouterr().err
    torch.save({"x": torch.randn(20, 40), "y": torch.arange(20) % 2}, tmp_path / "small.pt")
    assert main(["prune", str(tmp_path / "model.pt"), str(tmp_path / "small.pt")]) == 1
    assert "too few to hold out" in capsys.readouterr().err
    assert main(["prune", str(tmp_path / "model.pt"), str(tmp_path / "small.pt"), "--test-fraction", "1.5"]) == 1
    assert "--test-fraction must lie in (0, 1)" in capsys.readouterr().err


def test_recalibrate_bn_averages_the_batches_statistics():
    # running mean / variance = the average over the batches of each batch's mean and unbiased
    # variance of the BN's input (here the linear layer's output), weights untouched
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU()).eval()
    x = torch.randn(96, 4) * 3 + 1
    weights = snapshot(model)
    recalibrate_bn(model, x, batch_size=32)
    with torch.no_grad():
        z = model[0](x).double().reshape(3, 32, 3)  # (batches, rows, features)
    torch.testing.assert_close(model[1].running_mean.double(), z.mean(1).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var.double(), z.var(1).mean(0), rtol=1e-5, atol=1e-6)
    assert not model.training and model[1].momentum == 0.1
    assert all(
        torch.equal(weights[key], value)
        for key, value in model.state_dict().items()
        if "running" not in key and "num_batches" not in key
    )


class TiedHead(nn.Module):
    """Reads a layer's weight outside its call: without the layer the forward fails."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 6, bias=False)

    def forward(self, x):
        return self.embed(x) @ self.embed.weight.T


def test_a_copy_that_no_longer_runs_is_refused():
    with pytest.raises(ValueError, match=r"the model no longer runs without embed \('Identity' object"):
        gg.prune(TiedHead(), ["embed"], example=torch.randn(3, 6))


def test_seeded_helpers_leave_every_global_generator_alone(monkeypatch):
    # torch.manual_seed reseeds every CUDA generator too (and fork_rng(devices=[]) restores
    # only the CPU's): the seeded helpers must seed their own generators only
    def refuse(*args, **kwargs):
        raise AssertionError("a global seed was set")

    monkeypatch.setattr(torch, "manual_seed", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    state = torch.get_rng_state()
    reinitialise(model, seed=1)
    first = snapshot(model)
    fit(model, x, y, epochs=2, batch_size=8, log=None)
    gg.stitch(model, model, "1", x, y, epochs=1, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    reinitialise(model, seed=1)
    assert all(torch.equal(first[key], value) for key, value in model.state_dict().items())
