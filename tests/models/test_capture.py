import re
import typing

import pytest
import torch
from helpers import ConvBlockNet, Exploding, TinyResNet, TinyVGG
from torch import nn

import gpugraph as gg
from gpugraph.models.capture import default_layers


def data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def no_hooks_left(model):
    return all(not m._forward_hooks for m in model.modules())


def test_default_layers_follow_the_documented_rule():
    assert default_layers(TinyResNet()) == ["conv1", "layer1.0", "layer1.1", "layer2.0", "fc"]
    assert default_layers(TinyVGG()) == ["features.0", "features.3", "features.5", "classifier.1", "classifier.3"]
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert default_layers(mlp) == ["0", "2"]
    # conv -> BN -> ReLU blocks: each block's output (after its activation), not its raw conv
    assert default_layers(ConvBlockNet()) == ["conv1", "mid.0", "mid.1", "mid.2", "head.2"]
    # a Sequential with two convolutions, or with a Linear layer, is not one conv's block
    pair = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1)), nn.Flatten(), nn.LazyLinear(3))
    assert default_layers(pair) == ["0.0", "0.1", "2"]
    tail = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)))
    assert default_layers(tail) == ["0.0", "0.3"]


@pytest.mark.parametrize("model_cls", [TinyResNet, TinyVGG])
def test_captured_tensors_equal_a_manual_forward(model_cls):
    torch.manual_seed(0)
    model = model_cls()
    model.train()
    x, y = data()
    acts = gg.capture(model, (x, y), batch_size=16)
    assert model.training and all(m.training for m in model.modules())
    assert no_hooks_left(model)
    assert list(acts) == default_layers(model)
    torch.testing.assert_close(acts.labels, y)
    model.eval()
    seen = {}
    handles = [
        dict(model.named_modules())[name].register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.flatten(1))
        )
        for name in acts
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for name in acts:
        torch.testing.assert_close(acts[name], seen[name])


def test_data_forms_agree():
    model = TinyVGG()
    x, y = data(30)
    ref = gg.capture(model, (x, y))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    dicts = [{"image": x[i : i + 10], "label": y[i : i + 10]} for i in range(0, 30, 10)]
    for form in (loader, dicts, (x.numpy(), y.numpy()), [(x[:15], y[:15]), (x[15:], y[15:])]):
        acts = gg.capture(model, form)
        assert list(acts) == list(ref)
        torch.testing.assert_close(acts["features.5"], ref["features.5"])
        torch.testing.assert_close(acts.labels, ref.labels)
    unlabelled = gg.capture(model, x)
    assert unlabelled.labels is None and unlabelled.n == 30


def test_patterns_reduce_max_samples_and_dtype():
    model = TinyResNet()
    x, y = data(50)
    acts = gg.capture(model, (x, y), layers=["layer1.?", "fc"], reduce="avgpool", max_samples=33, dtype=torch.float16)
    assert list(acts) == ["layer1.0", "layer1.1", "fc"]
    assert acts["layer1.0"].shape == (33, 8) and acts["layer1.0"].dtype == torch.float16
    assert acts.labels.shape == (33,)
    custom = gg.capture(model, x, layers="layer2.0", reduce=lambda o: o.amax(dim=(2, 3)))
    assert custom["layer2.0"].shape == (50, 16)


def test_hooks_removed_and_mode_restored_when_forward_raises():
    model = Exploding()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        gg.capture(model, torch.randn(5, 4), layers=["lin"])
    assert no_hooks_left(model) and model.training


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_sequential_is_replayed_and_other_scripts_are_refused():
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(20, 4)
    acts = gg.capture(torch.jit.script(seq), x)
    assert list(acts) == ["0", "2"]
    torch.testing.assert_close(acts["2"], seq(x).detach())
    with pytest.raises(gg.GpuGraphError, match="only sequential TorchScript models are supported"):
        gg.capture(torch.jit.script(TinyVGG()), torch.randn(2, 3, 8, 8))


def test_capture_errors():
    model = TinyVGG()
    x, _ = data(4)
    with pytest.raises(ValueError, match="layer pattern 'nope' matches no module; modules are: features"):
        gg.capture(model, x, layers=["nope"])
    with pytest.raises(ValueError, match="reduce must be one of"):
        gg.capture(model, x, reduce="max")
    with pytest.raises(ValueError, match=r"reduce must map layer .* to \(B, D\)"):
        gg.capture(model, x, reduce=lambda o: o)
    with pytest.raises(TypeError, match=re.escape("model must be a torch.nn.Module")):
        gg.capture(lambda t: t, x)
    with pytest.raises(ValueError, match=r"forward takes no \['pixels'\] \(it takes \['x'\]\); drop those"):
        gg.capture(model, [{"pixels": x}])
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ValueError, match="ran 2 times in one forward pass"):
        gg.capture(twice, torch.randn(3, 4), layers=["0"])
    with pytest.raises(
        gg.GpuGraphError,
        match=r"need about .* GiB .* pass reduce='avgpool', a smaller max_samples, dtype=torch.float16",
    ):
        gg.capture(nn.Sequential(nn.Linear(4, 2**16)), torch.zeros(1, 4).expand(2**20, 4), layers=["0"], batch_size=1)


def test_datasets_give_the_activations_of_the_tensor_pair():
    """A TensorDataset, a map-style Dataset of dict samples and an iterable Dataset are batched
    in order as the (inputs, labels) pair is."""
    model = TinyVGG().eval()
    x = torch.randn(37, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(37) % 5

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"image": x[i], "label": y[i]}

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(x, y, strict=True))

    pair = gg.capture(model, (x, y), batch_size=8)
    for data in (torch.utils.data.TensorDataset(x, y), Dicts(), Stream()):
        acts = gg.capture(model, data, batch_size=8)
        assert list(acts) == list(pair) and acts.labels.tolist() == y.tolist()
        for name in pair:
            torch.testing.assert_close(acts[name], pair[name], atol=0, rtol=0)
    assert len(gg.capture(model, torch.utils.data.TensorDataset(x, y), max_samples=10)["features.0"]) == 10


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_scripted_model_gets_the_input_cast_of_a_module():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(1))
    plain = gg.capture(model, x)
    with pytest.warns(UserWarning, match="inputs are torch.float64 but the model's parameters are torch.float32"):
        scripted = gg.capture(torch.jit.script(model), x.double().numpy())
    assert list(scripted) == list(plain)
    for name in plain:
        torch.testing.assert_close(scripted[name], plain[name], atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own deprecations
def test_an_exported_program_gets_the_input_cast_and_layers_of_a_module():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(1))
    plain = gg.capture(model, x, batch_size=8)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x[:8],), dynamic_shapes={"input": {0: batch}})
    with pytest.warns(UserWarning, match="inputs are torch.float64 but the model's parameters are torch.float32"):
        exported = gg.capture(program, x.double(), batch_size=8)  # batches of 8, 8 and 4
    assert list(exported) == list(plain)
    for name in plain:
        torch.testing.assert_close(exported[name], plain[name])
    fixed = torch.export.export(model, (x[:8],))
    with pytest.raises(ValueError, match=r"refuses a batch of 4: it was exported for fixed input shapes .* dynamic"):
        gg.capture(fixed, x, batch_size=8)


def test_batches_as_dataclasses_and_tables_by_column_give_the_activations_of_the_pair():
    """A batch object with fields (a dataclass) and a data set indexed by sample with named
    columns (as a Hugging Face datasets.Dataset in torch format) read like dict batches."""
    import dataclasses

    model = TinyVGG().eval()
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(12) % 3

    @dataclasses.dataclass
    class Batch:
        image: torch.Tensor
        label: torch.Tensor

    class Table:  # datasets.Dataset's reading interface: rows as dicts, a length, column names
        column_names: typing.ClassVar[list[str]] = ["image", "label"]

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"image": x[i], "label": y[i]}

    pair = gg.capture(model, (x, y), batch_size=5)
    for data in ([Batch(x[:5], y[:5]), Batch(x[5:], y[5:])], Table()):
        acts = gg.capture(model, data, batch_size=5)
        assert acts.labels.tolist() == y.tolist()
        for name in pair:
            torch.testing.assert_close(acts[name], pair[name], atol=0, rtol=0)


def test_the_cast_warning_comes_once_a_capture():
    import warnings

    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU()).eval()
    x = torch.randn(30, 6, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        acts = gg.capture(model, x, batch_size=8)  # four batches
    casts = [w for w in caught if "casting the inputs" in str(w.message)]
    assert len(casts) == 1 and casts[0].filename == __file__
    assert acts["0"].dtype == torch.float32


def test_avgpool_of_a_single_channel_warns_once_and_names_flatten():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(20, 1, 8, 8)
    with pytest.warns(
        UserWarning, match=r"layer 'input' has one channel \(8, 1, 8, 8\): .* use reduce='flatten'"
    ) as caught:
        acts = gg.capture(model, x, reduce="avgpool", include_input=True, batch_size=8)
    assert sum("one channel" in str(w.message) for w in caught) == 1  # once, not once a batch
    assert acts["input"].shape == (20, 1) and acts["0"].shape == (20, 4)


def test_a_model_in_training_mode_is_said_to_run_in_eval_mode_once(monkeypatch):
    import warnings

    import gpugraph.models.capture as capture_module

    monkeypatch.setattr(capture_module, "_told_of_eval_mode", False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(3))
    x = torch.randn(16, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = gg.capture(model, x)
        second = gg.capture(model, x)
    told = [w for w in caught if "is in training mode; its layers are captured in eval mode" in str(w.message)]
    assert len(told) == 1 and told[0].filename == __file__
    assert model.training and all(m.training for m in model.modules())  # restored
    torch.testing.assert_close(first["2"], second["2"])  # eval mode: no dropout, running statistics
    monkeypatch.setattr(capture_module, "_told_of_eval_mode", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gg.capture(model, x, quiet_mode=True)
    assert not any("training mode" in str(w.message) for w in caught)


@pytest.mark.parametrize("reduce", ["flatten", "avgpool"])
def test_an_in_place_activation_after_a_hooked_layer_does_not_change_its_rows(reduce):
    # torchvision's VGG: Conv2d then ReLU(inplace=True); the conv's captured rows must be its
    # output, negative entries included, not what the ReLU later wrote over it
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x, y = data()
    acts = gg.capture(model, (x, y), layers=["0", "3"], reduce=reduce)
    with torch.no_grad():
        conv = model[0](x)
    want = conv.flatten(1) if reduce == "flatten" else conv.mean(dim=(2, 3))
    torch.testing.assert_close(acts["0"], want, rtol=0, atol=0)
    assert (acts["0"] < 0).any()
