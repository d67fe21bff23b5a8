"""Capturing Hugging Face transformers as their users feed them: dict batches with padding,
ModelOutputs, token reductions, the residual stream as default layers; checked against the
models' own output_hidden_states. Tiny random configs built here: nothing is downloaded."""

import pytest
import torch

import gpugraph as gg

transformers = pytest.importorskip("transformers")


def tiny_bert(seed=0, classes=None):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=classes or 2,
    )
    model = transformers.BertForSequenceClassification(config) if classes else transformers.BertModel(config)
    return model.eval()


def padded_batches(n=24, length=11, batch=8, seed=1):
    """Dict batches as a tokenizer and a collator give them: right-padded ids, a mask, labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b0 in range(0, n, batch):
        ids = torch.randint(1, 60, (batch, length), generator=g)
        kept = torch.randint(3, length + 1, (batch,), generator=g)
        mask = (torch.arange(length)[None, :] < kept[:, None]).long()
        out.append({"input_ids": ids * mask, "attention_mask": mask, "labels": torch.arange(b0, b0 + batch) % 3})
    return out


def reference(model, batches, reduce):
    """Each hidden state of the model's own output_hidden_states, reduced over the tokens
    here, written out independently of gpugraph: (layers, N, D) float64."""
    per_layer = None
    for b in batches:
        with torch.no_grad():
            states = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True
            ).hidden_states
        mask = b["attention_mask"].double()
        rows = []
        for h in states:
            h = h.double()
            if reduce == "mean":
                rows.append((h * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True))
            elif reduce == "cls":
                rows.append(h[:, 0])
            else:  # last kept token
                last = mask.sum(1).long() - 1
                rows.append(h[torch.arange(len(h)), last])
        per_layer = (
            [[r] for r in rows] if per_layer is None else [[*p, r] for p, r in zip(per_layer, rows, strict=True)]
        )
    return [torch.cat(p) for p in per_layer]


def test_default_layers_of_a_bert_are_its_residual_stream_and_pooler():
    model = tiny_bert()
    acts = gg.capture(model, padded_batches(n=8), reduce="mean")
    assert list(acts) == ["encoder.layer.0:input", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2", "pooler"]
    assert acts.labels.tolist() == (torch.arange(8) % 3).tolist()


@pytest.mark.parametrize("reduce", ["mean", "cls", "last"])
def test_token_reductions_of_a_padded_bert_batch_equal_its_own_hidden_states(reduce):
    model, batches = tiny_bert(), padded_batches()
    acts = gg.capture(model, batches, reduce=reduce)
    expected = reference(model, batches, reduce)
    names = ["encoder.layer.0:input", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]
    for name, want in zip(names, expected, strict=True):
        torch.testing.assert_close(acts[name].double(), want, atol=1e-5, rtol=1e-5)
    pooled = torch.cat(
        [model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).pooler_output for b in batches]
    ).detach()
    torch.testing.assert_close(acts["pooler"], pooled)  # (B, D) passes through every reduction


def test_the_hidden_states_path_gives_the_rows_of_the_default_layers():
    model, batches = tiny_bert(), padded_batches()
    hooked = gg.capture(model, batches, reduce="mean")
    own = gg.capture(model, batches, layers="hidden_states", reduce="mean")
    assert list(own) == [f"hidden_states.{i}" for i in range(4)]
    for i, name in enumerate(["encoder.layer.0:input", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]):
        torch.testing.assert_close(own[f"hidden_states.{i}"], hooked[name], atol=0, rtol=0)


def test_labels_in_a_dict_batch_are_never_passed_to_the_model():
    model = tiny_bert(classes=3)
    with_labels = padded_batches(n=16)
    without = [{k: v for k, v in b.items() if k != "labels"} for b in with_labels]
    a, b = gg.capture(model, with_labels, reduce="cls"), gg.capture(model, without, reduce="cls")
    assert list(a) == list(b) and a.labels is not None and b.labels is None
    for name in a:  # with labels passed, the model would return a loss first and change nothing else
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0)
    assert a.final == ["classifier"]  # the logits are the model's answer


def test_a_vit_class_token_rows_equal_its_hidden_states():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=4,
    )
    model = transformers.ViTForImageClassification(config).eval()
    x = torch.randn(10, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.arange(10) % 4
    acts = gg.capture(model, [{"pixel_values": x, "labels": y}], reduce="cls")
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "ViTLayer"]  # per the version
    assert list(acts) == [blocks[0] + ":input", *blocks, "vit.layernorm", "classifier"]
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    for i, name in enumerate([blocks[0] + ":input", *blocks]):
        torch.testing.assert_close(acts[name], out.hidden_states[i][:, 0])
    torch.testing.assert_close(acts["classifier"], out.logits)
    assert acts.final == ["classifier"]
    with pytest.raises(ValueError, match=r"reduce='avgpool' .* transformer gives tokens .* use reduce='mean'"):
        gg.capture(model, [{"pixel_values": x}], reduce="avgpool")


@pytest.mark.filterwarnings("ignore:the modularity curve is flat")
def test_a_curve_and_a_similarity_matrix_of_a_bert_need_no_adapter_code():
    model, batches = tiny_bert(), padded_batches(n=48)
    acts = gg.capture(model, batches, reduce="mean")
    curve = gg.modularity_curve(acts, k=3, n=24, repeats=2)
    assert curve.layers == list(acts) and curve.values.shape == (2, 5)
    grid = gg.similarity_matrix(acts, gg.capture(tiny_bert(seed=1), batches, reduce="mean"))
    assert grid.values.shape == (5, 5)


def test_token_reduction_errors_say_what_to_do():
    model, batches = tiny_bert(), padded_batches(n=8)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    images = torch.randn(4, 1, 6, 6)
    with pytest.raises(ValueError, match=r"reduce='mean' reduces the tokens .* use reduce='avgpool' or 'flatten'"):
        gg.capture(conv, images, reduce="mean")
    short = [{**b, "attention_mask": b["attention_mask"][:, :5]} for b in batches]
    with pytest.raises(ValueError, match=r"gives 11 tokens a sample but the batch's attention_mask \(8, 5\) has 5"):
        gg.capture(model, short, reduce="mean")
    with pytest.raises(ValueError, match=r"select returned str for layer 'encoder.layer.0', not a tensor"):
        gg.capture(model, batches, layers=["encoder.layer.0"], select=lambda out: "nope")
    with pytest.raises(TypeError, match="select must be a function"):
        gg.capture(model, batches, select=3)

    class Tokens(torch.nn.Module):  # a forward without **kwargs
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(60, 4)

        def forward(self, input_ids, attention_mask):
            return self.embed(input_ids).sum(1)

    with pytest.raises(
        ValueError, match=r"forward takes no \['extra'\] \(it takes \['attention_mask', 'input_ids'\]\)"
    ):
        gg.capture(Tokens(), [{**b, "extra": b["input_ids"]} for b in batches])


def test_the_mask_must_fit_the_layer_tokens():
    class Pooling(torch.nn.Module):  # a layer that drops half the tokens
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(60, 8)
            self.halve = torch.nn.Linear(8, 8)

        def forward(self, input_ids, attention_mask):
            return self.halve(self.embed(input_ids)[:, ::2])

    with pytest.raises(ValueError, match=r"gives 6 tokens a sample but the batch's attention_mask \(8, 11\) has 11"):
        gg.capture(Pooling(), padded_batches(n=8), layers=["halve"], reduce="mean")


def test_select_picks_a_tensor_from_a_tuple_output():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pair, self.head = Pair(), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.pair(x)[1])

    x = torch.randn(5, 3)
    first = gg.capture(Net(), x, layers=["pair"])
    second = gg.capture(Net(), x, layers=["pair"], select=lambda out: out[1])
    torch.testing.assert_close(first["pair"], x + 1)  # the first tensor by default
    torch.testing.assert_close(second["pair"], x * 2)

    class Opaque(torch.nn.Module):
        def forward(self, x):
            return {"note": "no tensor here"}

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.opaque = Opaque()

        def forward(self, x):
            self.opaque(x)
            return x

    with pytest.raises(ValueError, match=r"layer 'opaque' returned dict holding no tensor; pass select="):
        gg.capture(Wrap(), x, layers=["opaque"])


def test_hidden_states_need_a_model_that_offers_them():
    with pytest.raises(ValueError, match="takes no such argument; name the layers instead"):
        gg.capture(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.randn(4, 3), layers="hidden_states")


def test_a_model_that_takes_output_hidden_states_must_return_them():
    class Quiet(torch.nn.Module):  # takes the flag, returns no hidden states
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x, output_hidden_states=False):
            return self.lin(x)

    with pytest.raises(ValueError, match="returned Tensor without hidden_states; name the layers instead"):
        gg.capture(Quiet(), torch.randn(4, 3), layers="hidden_states")


def test_a_dict_batch_without_any_tensor_is_refused():
    class Takes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, **kwargs):
            return self.lin(kwargs["x"])

    with pytest.raises(ValueError, match=r"a dict batch needs at least one input tensor, got keys \['note', 'y'\]"):
        gg.capture(Takes(), [{"note": "text", "y": [0, 1]}])
