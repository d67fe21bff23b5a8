"""Layer identification (Kornblith et al., 2019, section 6.1) per architecture and protocol,
offline on MNIST-1D: the GBS paper's sanity check.

    python benchmarks/sanity_check.py [--archs cnn resnet18 vgg16] [--nets 10] [--epochs 15]

--nets copies of each architecture (benchmarks/_zoo.py: a 1-D Tiny-10 CNN, ResNet-18 and
VGG-16) are trained from seeds 0..nets-1 on the 4000 MNIST-1D training signals (cached in
benchmarks/cache/ after the first run). For each pair of copies (a, b) and each layer of a,
a measure picks the most similar layer of b; accuracy is the share of picks that land on
the same depth, with a 95% bootstrap interval over the copies (resampled with replacement;
pairs of a copy with itself skipped).

Protocols:
- authors (the GBS code): hooks on every convolution's raw output (before BN), the first
  500 held-out signals, the 45 unordered pairs; CKA on average-pooled features, LSim and the
  kNN measures on flattened ones (CKA on flattened features is shown too).
- ours: the output of each block and of the pooled hidden layers, flattened, ordered pairs,
  at N = 500 and N = 2000 (the same first 500 within the 2000).
--protocols, --n-authors and --n-ours choose among them.
Diagnostics: dense LSim of centred features (CKA centres, LSim does not) and kNN LSim at
several k (dense graph against kNN graph).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import environment
from _zoo import ARCHS, hook_points, mnist1d, trained
from scipy.stats import binomtest

import gpugraph as gg
from gpugraph.models.training import accuracy

RESULTS = Path(__file__).resolve().parent / "results"


def picks(values: np.ndarray, nets: int, layers: int) -> np.ndarray:
    """(nets, nets, layers) hits[a, b, i]: whether layer i of copy a picks layer i of copy b
    (False for a == b)."""
    blocks = values.reshape(nets, layers, nets, layers).transpose(0, 2, 1, 3)  # (a, b, i, j)
    hits = blocks.argmax(axis=3) == np.arange(layers)
    hits[np.arange(nets), np.arange(nets)] = False
    return hits


def pairs_of(nets: int, ordered: bool) -> np.ndarray:
    """(nets, nets) mask of the pairs of copies a protocol reads: a != b, or a < b."""
    return ~np.eye(nets, dtype=bool) if ordered else np.triu(np.ones((nets, nets), dtype=bool), k=1)


def accuracy_of(hits: np.ndarray, sample: np.ndarray, layers: int, ordered: bool) -> float:
    """Accuracy over the pairs of the copies in ``sample`` (ordered, or a < b); ``hits``
    (nets, nets, layers)."""
    per_pair = hits.sum(axis=2)  # (nets, nets) picks at the right depth
    a, b = np.meshgrid(sample, sample, indexing="ij")
    keep = a != b
    if not ordered:  # an unordered pair is read from the lower copy to the higher one
        keep &= pairs_of(len(hits), False)
        a, b = np.minimum(a, b), np.maximum(a, b)
    return per_pair[a[keep], b[keep]].sum() / (keep.sum() * layers) if keep.any() else np.nan


def score(hits: np.ndarray, layers: int, ordered: bool, resamples: int = 2000, seed: int = 0):
    """Accuracy over the pairs of copies, and its 95% bootstrap interval over copies."""
    rng = np.random.default_rng(seed)
    boot = [accuracy_of(hits, rng.integers(0, len(hits), len(hits)), layers, ordered) for _ in range(resamples)]
    return accuracy_of(hits, np.arange(len(hits)), layers, ordered), np.nanpercentile(boot, [2.5, 97.5])


def paired(hits_a: np.ndarray, hits_b: np.ndarray, layers: int, ordered: bool, resamples: int = 2000, seed: int = 0):
    """Measure A against measure B on the same picks: (A right and B wrong, A wrong and B
    right, the exact McNemar p-value, the accuracy difference A - B and its 95% paired
    bootstrap interval over copies). McNemar treats the picks as independent, which picks
    sharing a network are not; the bootstrap resamples whole networks, both measures alike."""
    read = pairs_of(len(hits_a), ordered)
    a, b = hits_a[read], hits_b[read]  # (pairs, layers)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    rng = np.random.default_rng(seed)
    nets = len(hits_a)
    boot = []
    for _ in range(resamples):
        sample = rng.integers(0, nets, nets)
        boot.append(accuracy_of(hits_a, sample, layers, ordered) - accuracy_of(hits_b, sample, layers, ordered))
    whole = np.arange(nets)
    diff = accuracy_of(hits_a, whole, layers, ordered) - accuracy_of(hits_b, whole, layers, ordered)
    return only_a, only_b, p, diff, np.nanpercentile(boot, [2.5, 97.5])


def comparisons(labels: list[str], pooled: bool) -> list[tuple[str, str]]:
    """The pairs of measures read against each other: each LSim against CKA as the protocol
    computes it, and, where CKA is pooled, dense LSim against CKA on the same flattened features."""
    cka = "linear CKA" + (", pooled" if pooled else "")
    lsims = [label for label in labels if "LSim" in label]
    out = [(lsim, cka) for lsim in lsims]
    if pooled:
        out += [("dense LSim", "linear CKA, flattened"), ("dense LSim, centred", "linear CKA, flattened")]
    return out


def measures(ks: list[int], pooled: bool):
    """(label, function(flat, pooled) -> SimilarityMatrix) of one protocol."""
    cka_of = (lambda f, p: p) if pooled else (lambda f, p: f)
    rows = [
        ("dense LSim", lambda f, p: gg.similarity_matrix(f, measure="lsim")),
        ("dense LSim, centred", lambda f, p: gg.similarity_matrix(f, measure="lsim", centre=True)),
        *((f"kNN LSim, k={k}", lambda f, p, k=k: gg.similarity_matrix(f, measure="lsim", k=k)) for k in ks),
        ("linear CKA" + (", pooled" if pooled else ""), lambda f, p: gg.similarity_matrix(cka_of(f, p), measure="cka")),
        (
            "unbiased CKA" + (", pooled" if pooled else ""),
            lambda f, p: gg.similarity_matrix(cka_of(f, p), measure="cka", unbiased=True),
        ),
    ]
    if pooled:
        rows.append(("linear CKA, flattened", lambda f, p: gg.similarity_matrix(f, measure="cka")))
    rows += [
        ("mutual kNN, k=10", lambda f, p: gg.similarity_matrix(f, measure="mutual_knn", k=10)),
        ("kNN overlap, k=10", lambda f, p: gg.similarity_matrix(f, measure="knn_overlap", k=10)),
    ]
    return rows


def capture_all(models, x, y, protocol: str, reduce: str) -> tuple[dict, int]:
    acts, layers = {}, None
    for seed, model in enumerate(models):
        names = hook_points(model, protocol)
        layers = len(names)
        got = gg.capture(model, (x, y), layers=names, reduce=reduce)
        acts.update({f"net{seed}/{name}": got[name] for name in names})
    return acts, layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--nets", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10, 50], help="k of the kNN LSim rows")
    ap.add_argument("--protocols", nargs="+", default=["authors", "ours"], choices=["authors", "ours"])
    ap.add_argument("--n-authors", type=int, default=500, help="signals compared in the authors' protocol")
    ap.add_argument("--n-ours", type=int, nargs="+", default=[500, 2000], help="signal counts compared in ours")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(RESULTS / "sanity.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(environment())
    runs = [("authors", args.n_authors, False)] if "authors" in args.protocols else []
    runs += [("ours", n, True) for n in args.n_ours] if "ours" in args.protocols else []
    x_train, y_train, x_eval, y_eval = mnist1d(max(n for _, n, _ in runs))
    print(f"MNIST-1D: {len(x_train)} training signals; {len(x_eval)} held-out signals compared")
    report = {"nets": args.nets, "epochs": args.epochs, "tables": []}
    for arch in args.archs:
        models = [trained(arch, seed, x_train, y_train, args.epochs) for seed in range(args.nets)]
        accs = [accuracy(m, x_eval, y_eval) for m in models]
        print(f"\n## {arch}: {args.nets} copies, held-out accuracy {min(accs):.1%}-{max(accs):.1%}")
        for protocol, n, ordered in runs:
            x, y = x_eval[:n], y_eval[:n]
            flat, layers = capture_all(models, x, y, protocol, "flatten")
            pooled = capture_all(models, x, y, protocol, "avgpool")[0] if protocol == "authors" else None
            pairs = args.nets * (args.nets - 1) // (1 if ordered else 2)
            print(
                f"\n{arch}, protocol {protocol}, N={n}: {layers} layers, {pairs} "
                f"{'ordered' if ordered else 'unordered'} pairs, {pairs * layers} picks per measure"
            )
            print(f"{'measure':<24} {'accuracy':>8}  {'95% CI':>13}  {'time':>6}  per layer (%)")
            table = {"arch": arch, "protocol": protocol, "n": n, "ordered": ordered, "layers": layers, "rows": []}
            all_hits = {}
            for label, fn in measures(args.ks, pooled is not None):
                t0 = time.perf_counter()
                m = fn(flat, pooled)
                elapsed = time.perf_counter() - t0
                hits = all_hits[label] = picks(m.values, args.nets, layers)
                acc, (lo, hi) = score(hits, layers, ordered)
                read = pairs_of(args.nets, ordered)
                nets_pairs = hits.sum(axis=2) * read
                per_layer = hits[read].mean(axis=0)
                print(
                    f"{label:<24} {acc:8.1%}  {lo:5.1%}-{hi:5.1%}  {elapsed:5.1f}s  "
                    + " ".join(f"{100 * v:3.0f}" for v in per_layer)
                )
                table["rows"].append(
                    {
                        "measure": label,
                        "accuracy": acc,
                        "ci95": [lo, hi],
                        "seconds": elapsed,
                        "per_layer": per_layer.tolist(),
                        "hits": nets_pairs.tolist(),
                    }
                )
            print(f"paired: {'A vs B':<46} {'A only':>6} {'B only':>6}  {'McNemar p':>9}  A - B [95% CI over networks]")
            table["paired"] = []
            for a, b in comparisons(list(all_hits), pooled is not None):
                only_a, only_b, p, diff, (lo, hi) = paired(all_hits[a], all_hits[b], layers, ordered)
                pair = f"{a} vs {b}"
                print(f"        {pair:<46} {only_a:6d} {only_b:6d}  {p:9.2g}  {diff:+6.1%} [{lo:+.1%}, {hi:+.1%}]")
                table["paired"].append(
                    {"a": a, "b": b, "a_only": only_a, "b_only": only_b, "mcnemar_p": p, "diff": diff, "ci95": [lo, hi]}
                )
            report["tables"].append(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.json}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
