"""Do graph measures of a layer predict how well two networks stitch there? (GBS paper, motifs.)

    python benchmarks/stitching.py [--epochs 5] [--n 500]

Networks (benchmarks/_zoo.py, 1-D Tiny-10 CNNs on MNIST-1D, cached in benchmarks/cache/):
a top network (seed 1, trained 15 epochs) and bottoms of different quality: trained 15
epochs (seeds 0 and 2), trained one epoch (seed 10) and untrained (seed 20). For every
bottom and each of the eight conv blocks, gg.stitch trains a 1x1 convolution from the
bottom's block output into the top's (started at the least-squares match of the two
layers' activations, --init random for PyTorch's default; then Adam, lr 1e-3, the top's BN
in eval mode) and the stitched network is evaluated on 2000 held-out signals.

Predictors, each on the first --n held-out signals, flattened outputs: the share of
same-class triangles in the bottom's kNN graph at the layer (k = 5, the authors' choice),
the bottom's modularity there (k = 5), dense LSim and linear CKA between the bottom's and
the top's outputs at the layer. Spearman's rho of each with the stitched accuracy over all
(bottom, layer) points, with a 95% bootstrap interval over the points; also over the
trained bottoms alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import correlation_ci, environment
from _zoo import TinyCnn, hook_points, mnist1d, trained
from scipy.stats import spearmanr

import gpugraph as gg
from gpugraph.models.training import accuracy

RESULTS = Path(__file__).resolve().parent / "results"
BOTTOMS = {
    "trained, seed 0": (0, 15),
    "trained, seed 2": (2, 15),
    "1 epoch, seed 10": (10, 1),
    "untrained, seed 20": (20, 0),
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
            bottoms[name] = trained("cnn", seed, x_train, y_train, epochs)
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

    predictors = ["same_class_triangles", "modularity", "lsim", "cka"]
    summary = {}
    for subset, keep in (
        ("all bottoms", lambda p: True),
        ("trained bottoms", lambda p: p["bottom"].startswith("trained")),
    ):
        chosen = [p for p in points if keep(p)]
        print(f"\nSpearman rho with stitched accuracy, {subset} ({len(chosen)} points), 95% bootstrap CI:")
        summary[subset] = {}
        for key in predictors:
            result, (lo, hi) = correlation_ci(
                spearmanr, [p[key] for p in chosen], [p["stitched_accuracy"] for p in chosen]
            )
            rho = float(result.statistic)
            summary[subset][key] = {"rho": rho, "ci95": [float(lo), float(hi)]}
            print(f"  {key:<22} {rho:+.2f}  [{lo:+.2f}, {hi:+.2f}]")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {"points": points, "spearman": summary, "epochs": args.epochs, "n": args.n, "init": args.init}, indent=1
        )
    )
    print(f"\nwrote {args.json}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
