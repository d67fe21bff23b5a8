"""How the modularity curve moves with k and with the sample count n (Lu et al., 2022, claim
that it "barely changes"), offline on MNIST-1D.

    python benchmarks/ablation.py [--ks 3 5 7 9 11] [--ns 200 500 1000 2000 5000] [--epochs 12]
                                  [--null 100] [--out benchmarks/results] [--seed 0]

Trains the demo network (gpugraph.tools.demo.DemoNet, as ``gpugraph demo`` does) on the 4000
MNIST-1D training signals, then draws 5000 fresh held-out signals from the same generator
(another seed) and measures the curve (flattened block outputs, the input as the first
layer): for each k at n = 500 (5 disjoint subsets), and for each n at k = 3 (5 subsets
where 5 n <= 5000, else as many as fit). Each point also gets its z-score against --null
label permutations. Prints both tables and the largest move of each layer, writes
ablation.json and ablation.png under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import environment

import gpugraph as gg
from gpugraph.models.training import accuracy, fit
from gpugraph.tools.demo import DemoNet, mnist1d_data


def held_out(count: int, seed: int):
    """``count`` fresh MNIST-1D signals: the generator of the training set, another seed."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples, args.train_split = seed, count, 0.0
    d = make_dataset(args)
    return torch.tensor(np.asarray(d["x_test"]), dtype=torch.float32), torch.tensor(np.asarray(d["y_test"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", type=int, nargs="+", default=[3, 5, 7, 9, 11])
    p.add_argument("--ns", type=int, nargs="+", default=[200, 500, 1000, 2000, 5000])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--null", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    print(environment())
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = mnist1d_data()
    model = fit(DemoNet(), x_train, y_train, args.epochs, seed=args.seed, log=None)
    x, y = held_out(max(args.ns), seed=1000 + args.seed)
    print(
        f"DemoNet, {args.epochs} epochs: test accuracy {accuracy(model, x_test, y_test):.1%}, "
        f"held-out {accuracy(model, x, y):.1%} on {len(x)} fresh signals"
    )
    acts = gg.capture(model, (x, y), include_input=True)
    layers = list(acts.keys())

    def curve(k: int, n: int):
        repeats = max(1, min(5, len(x) // n))
        return gg.modularity_curve(acts, k=k, n=n, repeats=repeats, seed=args.seed, null=args.null)

    by_k = {k: curve(k, 500) for k in args.ks}
    by_n = {n: curve(3, n) for n in args.ns}
    report = {
        "environment": environment(),
        "layers": layers,
        "null": args.null,
        "seconds": None,
        "by_k": {str(k): c.to_dict() for k, c in by_k.items()},
        "by_n": {str(n): c.to_dict() for n, c in by_n.items()},
    }
    for title, curves, key in (("k (n = 500)", by_k, "k"), ("n (k = 3)", by_n, "n")):
        print(f"\nmodularity by {title}: mean +- std over the subsets; z against {args.null} label permutations")
        width = max(len(name) for name in layers)
        print(f"{'layer':<{width}}  " + "  ".join(f"{key}={v:<14}" for v in curves))
        for j, name in enumerate(layers):
            cells = [f"{c.mean[j]:.3f}+-{c.std[j]:.3f} z{c.z[j]:<4.0f}" for c in curves.values()]
            print(f"{name:<{width}}  " + "  ".join(f"{cell:<16}" for cell in cells))
        means = np.array([c.mean for c in curves.values()])  # (settings, L)
        moves = means.max(axis=0) - means.min(axis=0)
        print("largest move per layer: " + ", ".join(f"{n} {m:.3f}" for n, m in zip(layers, moves, strict=True)))
        report[f"moves_{key}"] = dict(zip(layers, moves.tolist(), strict=True))
    report["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(by_k, by_n, layers, out / "ablation.png")
    print(f"\nwrote {out / 'ablation.json'} and {out / 'ablation.png'} in {report['seconds']:.0f} s")


def _plot(by_k, by_n, layers, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    xs = np.arange(len(layers))
    for ax, curves, key in ((axes[0], by_k, "k"), (axes[1], by_n, "n")):
        for value, c in curves.items():
            ax.plot(xs, c.mean, marker="o", label=f"{key} = {value}")
            ax.fill_between(xs, c.mean - c.std, c.mean + c.std, alpha=0.15)
        ax.set_xticks(xs, layers, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"modularity curve by {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("modularity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
