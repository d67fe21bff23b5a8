"""Do graph measures of a layer predict how well two networks stitch there? (GBS paper, motifs.)

    python benchmarks/stitching.py [--epochs 5] [--n 500]

Networks (benchmarks/_zoo.py, 1-D Tiny-10 CNNs on MNIST-1D, cached in benchmarks/cache/):
a top network (seed 1, trained 15 epochs) and bottoms of graded quality: seeds 0, 2 and 3
each trained for 1, 2, 3, 5 and 15 epochs, and two untrained (seeds 20, 21). For every
bottom and each of the eight conv blocks, gg.stitch trains a 1x1 convolution from the
bottom's block output into the top's (started at the least-squares match of the two
layers' activations, --init random for PyTorch's default; then Adam, lr 1e-3, the top's BN
in eval mode) and the stitched network is evaluated on 2000 held-out signals.

Predictors, each on the first --n held-out signals, flattened outputs: the share of
same-class triangles in the bottom's kNN graph at the layer (k = 5, the authors' choice),
the bottom's modularity there (k = 5), dense LSim and linear CKA between the bottom's and
the top's outputs at the layer, and the layer's depth itself. Depth confounds the rest (deep
layers cluster classes and stitch well), so each predictor is read three ways: Spearman's
rho over all (bottom, layer) points; the partial rank correlation given depth (ranks of
predictor and accuracy regressed on the ranks of depth, residuals correlated); and the mean
within-layer rho (depth held fixed: the bottoms compared at each layer, then averaged).
Intervals: 95% bootstrap over the bottoms (networks resampled whole, all their layers
together), never over the points, which share networks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import environment
from _zoo import TinyCnn, hook_points, mnist1d, trained
from scipy.stats import pearsonr, rankdata, spearmanr

import gpugraph as gg
from gpugraph.models.training import accuracy

RESULTS = Path(__file__).resolve().parent / "results"
BOTTOMS = {
    **{
        f"seed {seed}, {epochs} epoch{'s' if epochs > 1 else ''}": (seed, epochs)
        for seed in (0, 2, 3)
        for epochs in (1, 2, 3, 5, 15)
    },
    "untrained, seed 20": (20, 0),
    "untrained, seed 21": (21, 0),
}
PREDICTORS = ["same_class_triangles", "modularity", "lsim", "cka", "depth"]


def partial_rank(x, y, z) -> float:
    """The partial Spearman correlation of x and y given z: the ranks of x and y, each
    regressed on the ranks of z (least squares with an intercept), residuals correlated."""
    rx, ry, rz = rankdata(x), rankdata(y), rankdata(z)
    design = np.column_stack([np.ones(len(rz)), rz])

    def residual(r):
        return r - design @ np.linalg.lstsq(design, r, rcond=None)[0]

    ex, ey = residual(rx), residual(ry)
    return float(pearsonr(ex, ey).statistic) if ex.std() > 0 and ey.std() > 0 else float("nan")


def within_layer(points, key: str) -> float:
    """Mean over layers of Spearman's rho between ``key`` and stitched accuracy across the
    bottoms at that layer (depth held fixed); layers where either is constant are skipped."""
    rhos = []
    for layer in sorted({p["depth"] for p in points}):
        at = [p for p in points if p["depth"] == layer]
        a, b = [p[key] for p in at], [p["stitched_accuracy"] for p in at]
        if len(set(a)) > 1 and len(set(b)) > 1:
            rhos.append(spearmanr(a, b).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


def statistics_of(points, key: str) -> dict[str, float]:
    acc = [p["stitched_accuracy"] for p in points]
    return {
        "rho": float(spearmanr([p[key] for p in points], acc).statistic),
        "partial_given_depth": partial_rank([p[key] for p in points], acc, [p["depth"] for p in points])
        if key != "depth"
        else float("nan"),
        "within_layer": within_layer(points, key) if key != "depth" else float("nan"),
    }


def by_networks(points, key: str, resamples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95% bootstrap intervals of :func:`statistics_of` with the bottoms resampled whole."""
    names = sorted({p["bottom"] for p in points})
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {}
    for _ in range(resamples):
        drawn = rng.choice(names, len(names))
        sample = [
            {**p, "bottom": f"{p['bottom']}#{i}"} for i, name in enumerate(drawn) for p in points if p["bottom"] == name
        ]
        for stat, value in statistics_of(sample, key).items():
            boot.setdefault(stat, []).append(value)
    return {
        stat: np.nanpercentile(values, [2.5, 97.5]).tolist() if not np.isnan(values).all() else [np.nan, np.nan]
        for stat, values in boot.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of stitch training")
    ap.add_argument("--n", type=int, default=500, help="held-out signals the predictors are measured on")
    ap.add_argument("--init", default="lstsq", choices=["lstsq", "random"], help="the stitch's start (gg.stitch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(RESULTS / "stitching.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(environment())
    x_train, y_train, x_eval, y_eval = mnist1d(2000)
    top = trained("cnn", 1, x_train, y_train, 15)
    bottoms = {}
    for name, (seed, epochs) in BOTTOMS.items():
        if epochs:
            bottoms[name] = trained("cnn", seed, x_train, y_train, epochs, log=None)
        else:
            torch.manual_seed(seed)
            bottoms[name] = TinyCnn().eval()
    layers = hook_points(top, "ours")[:-1]  # the eight conv blocks (a 1x1 stitch needs a spatial axis)
    x, y = x_eval[: args.n], y_eval[: args.n]
    top_acts = gg.capture(top, (x, y), layers=layers)
    print(f"top: held-out accuracy {accuracy(top, x_eval, y_eval):.1%}; stitching at {', '.join(layers)}")
    print(
        f"\n{'bottom':<20} {'layer':<11} {'bottom acc':>10} {'stitched':>9} {'same-class tri':>14} "
        f"{'modularity':>10} {'LSim':>6} {'CKA':>6} {'time':>5}"
    )
    points = []
    for name, bottom in bottoms.items():
        acts = gg.capture(bottom, (x, y), layers=layers)
        own = accuracy(bottom, x_eval, y_eval)
        for layer in layers:
            t0 = time.perf_counter()
            s = gg.stitch(bottom, top, layer, x_train, y_train, epochs=args.epochs, init=args.init, seed=0)
            stitched = accuracy(s, x_eval, y_eval)
            g = gg.knn_graph(acts[layer], 5)
            tri = gg.motifs(g, y)
            share = tri["same"] / max(1, sum(tri.values()))
            point = {
                "bottom": name,
                "layer": layer,
                "depth": layers.index(layer),
                "bottom_accuracy": own,
                "stitched_accuracy": stitched,
                "same_class_triangles": share,
                "modularity": gg.modularity(g, y),
                "lsim": gg.layer_similarity(acts[layer], top_acts[layer]),
                "cka": gg.cka(acts[layer], top_acts[layer]),
                "final_loss": s.losses[-1],
            }
            points.append(point)
            print(
                f"{name:<20} {layer:<11} {own:10.1%} {stitched:9.1%} {share:14.3f} {point['modularity']:10.3f} "
                f"{point['lsim']:6.3f} {point['cka']:6.3f} {time.perf_counter() - t0:4.0f}s"
            )

    summary = {}
    for subset, keep in (
        ("all bottoms", lambda p: True),
        (
            "trained bottoms (2-15 epochs)",
            lambda p: not p["bottom"].startswith("untrained") and "1 epoch" not in p["bottom"],
        ),
    ):
        chosen = [p for p in points if keep(p)]
        nets = len({p["bottom"] for p in chosen})
        print(
            f"\nwith stitched accuracy, {subset} ({nets} bottoms, {len(chosen)} points); 95% CI over bottoms:\n"
            f"  {'predictor':<22} {'Spearman rho':>24} {'partial, given depth':>24} {'within-layer rho (mean)':>24}"
        )
        summary[subset] = {}
        for key in PREDICTORS:
            stats, ci = statistics_of(chosen, key), by_networks(chosen, key)
            summary[subset][key] = {stat: {"value": stats[stat], "ci95": ci[stat]} for stat in stats}
            cells = [
                f"{stats[s]:+.2f} [{ci[s][0]:+.2f}, {ci[s][1]:+.2f}]" if not np.isnan(stats[s]) else "-"
                for s in ("rho", "partial_given_depth", "within_layer")
            ]
            print(f"  {key:<22} " + " ".join(f"{c:>24}" for c in cells))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {"points": points, "spearman": summary, "epochs": args.epochs, "n": args.n, "init": args.init}, indent=1
        )
    )
    print(f"\nwrote {args.json}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
