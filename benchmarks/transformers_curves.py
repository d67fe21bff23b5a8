"""Do transformers show the modularity curve's rise and plateaus? Two small transformers
trained offline, captured with their usual batches and no adapter code.

    python benchmarks/transformers_curves.py [--seeds 0 1] [--epochs 30] [--n 300] [--repeats 5]

- ViT: Hugging Face ViTForImageClassification (4 blocks, width 64, 4 heads, 4 x 4 patches of
  scikit-learn's digits upscaled to 16 x 16: 16 patches and a class token), trained on 1200
  digits with AdamW; curves on the other 597, of the class token ("cls") and of the mean
  over the tokens ("mean").
- Text: BertForSequenceClassification (4 blocks, width 64) on a synthetic task: sequences of
  8 to 24 random tokens, right-padded to 24, holding one of 4 key tokens at a random
  position; the label is the key. The model must find it by attention. Curves of the mean
  over the kept tokens (the attention mask's) and of the CLS token.

Each curve: k = 5, --repeats disjoint subsets of --n test samples (fewer where the test set is
smaller: 119 of the 597 digits) (gg.modularity_curve);
the untrained model's curve beside the trained one's; and the LSim matrix between the
blocks of the two seeds (gg.similarity_matrix), with the share of blocks whose most similar
block in the other seed is the same block.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
import transformers
from _common import environment
from sklearn.datasets import load_digits

import gpugraph as gg

LENGTH, VOCAB, KEYS = 24, 64, 4


def digits(seed: int):
    """Digits upscaled to 16 x 16 in [0, 1]; a fixed split of 1200 / 597."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div(16).repeat_interleave(2, 1).repeat_interleave(2, 2)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(123))
    x, y = x[order][:, None], torch.tensor(d.target)[order]
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def key_sequences(n: int, seed: int):
    """Token ids (n, LENGTH) right-padded with 0, the attention mask, and the labels: the key
    token (1..KEYS) planted once among random tokens KEYS+1..VOCAB-1."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, LENGTH + 1, (n,), generator=g)
    ids = torch.randint(KEYS + 1, VOCAB, (n, LENGTH), generator=g)
    labels = torch.randint(0, KEYS, (n,), generator=g)
    where = (torch.rand(n, generator=g) * lengths).long()
    ids[torch.arange(n), where] = labels + 1
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    return ids * mask, mask, labels


def vit(seed: int):
    torch.manual_seed(seed)
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=1,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(config)


def bert(seed: int):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=LENGTH,
        num_labels=KEYS,
    )
    return transformers.BertForSequenceClassification(config)


def train(model, batches, epochs: int, lr: float = 1e-3) -> None:
    """AdamW on the model's own loss (the batches carry their labels)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for _ in range(epochs):
        for batch in batches:
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
    model.eval()


def accuracy(model, batches) -> float:
    with torch.no_grad():
        right = sum(
            int((model(**{k: v for k, v in b.items() if k != "labels"}).logits.argmax(1) == b["labels"]).sum())
            for b in batches
        )
    return right / sum(len(b["labels"]) for b in batches)


def split(inputs: dict, labels, size: int, seed: int) -> list[dict]:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return [
        {**{k: v[order[i : i + size]] for k, v in inputs.items()}, "labels": labels[order[i : i + size]]}
        for i in range(0, len(labels), size)
    ]


def report(name: str, acts_by_seed: dict, untrained, args) -> None:
    n = min(args.n, untrained[next(iter(untrained))].n // args.repeats)  # disjoint subsets of the test set
    for reduce, acts in acts_by_seed.items():
        for seed, a in acts.items():
            curve = gg.modularity_curve(a, k=5, n=n, repeats=args.repeats)
            print(f"\n{name}, seed {seed}, reduce={reduce!r}, k=5, n={n} x {args.repeats}")
            print(curve.table(tol=0.01))
        with warnings.catch_warnings():  # an untrained model's curve is flat: the point of it
            warnings.filterwarnings("ignore", "the modularity curve is flat")
            curve = gg.modularity_curve(untrained[reduce], k=5, n=n, repeats=args.repeats)
        print(f"\n{name}, untrained, reduce={reduce!r}: " + ", ".join(f"{q:.3f}" for q in curve.mean))
        seeds = list(acts)
        if len(seeds) >= 2:
            sim = gg.similarity_matrix(acts[seeds[0]], acts[seeds[1]], measure="lsim")
            hits = np.mean([a == b for a, b in zip(sim.layers_a, sim.identify(), strict=True)])
            print(
                f"LSim between seeds {seeds[0]} and {seeds[1]}, reduce={reduce!r}: the most similar layer "
                f"is the same layer for {hits:.0%} of the layers"
            )
            print(sim)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(environment())
    start = time.perf_counter()

    (xtr, ytr), (xte, yte) = digits(0)
    test = [{"pixel_values": xte[i : i + 256], "labels": yte[i : i + 256]} for i in range(0, len(yte), 256)]
    acts = {"cls": {}, "mean": {}}
    for seed in args.seeds:
        model = vit(seed)
        train(model, split({"pixel_values": xtr}, ytr, 64, seed), args.epochs)
        print(f"ViT seed {seed}: test accuracy {accuracy(model, test):.3f}")
        for reduce in acts:
            acts[reduce][seed] = gg.capture(model, test, reduce=reduce)
    untrained = {reduce: gg.capture(vit(99), test, reduce=reduce) for reduce in acts}
    report("ViT on digits", acts, untrained, args)

    ids, mask, labels = key_sequences(4000, 0)
    tr = {"input_ids": ids[:3000], "attention_mask": mask[:3000]}
    test = split({"input_ids": ids[3000:], "attention_mask": mask[3000:]}, labels[3000:], 250, 0)
    acts = {"mean": {}, "cls": {}}
    for seed in args.seeds:
        model = bert(seed)
        train(model, split(tr, labels[:3000], 64, seed), max(1, args.epochs // 3))
        print(f"text transformer seed {seed}: test accuracy {accuracy(model, test):.3f}")
        for reduce in acts:
            acts[reduce][seed] = gg.capture(model, test, reduce=reduce)
    untrained = {reduce: gg.capture(bert(99), test, reduce=reduce) for reduce in acts}
    report("Text transformer, key-token task", acts, untrained, args)
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
