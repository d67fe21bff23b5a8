"""When does the modularity curve show a plateau, and is pruning it then free? A small grid
of network width against training-set size, offline on MNIST-1D.

    python benchmarks/pruning_sweep.py [--widths 8 16 32] [--train 300 1000 3000] [--seeds 0 1 2]
                                       [--blocks 6] [--epochs 30] [--finetune 2] [--tol 0.01] [--json PATH]

Lu et al. (2022) report plateaus "when the model is large for its data". For each width
(channels of the first stage; the 1-D ResNet of benchmarks/pruning.py, three stages of
--blocks residual blocks) and each number of training signals, per seed: train the network
(--epochs; weights cached in benchmarks/cache), measure its curve on 1000 OTHER training
signals (k = 3, 5 subsets of 200), and let ``gg.prune_plan(tol)`` pick the plateau blocks.
The plateau's size is the share of the removable blocks the plan takes. Then the plan's
blocks and as many blocks drawn at random are removed, the batch norms re-estimated and the
copy fine-tuned for --finetune epochs; both are scored on the 1000 test signals. "Free"
means the fine-tuned copy keeps the original test accuracy; the random draw at the same
count says whether the curve's choice is what makes it so.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from types import SimpleNamespace

import numpy as np
import torch
from _common import environment
from _zoo import CACHE
from pruning import DeepResNet1d, split

import gpugraph as gg
from gpugraph.models.training import accuracy, fit, recalibrate_bn
from gpugraph.tools.demo import mnist1d_data

HELD_OUT = 1000


def trained(width: int, train: int, seed: int, args, x, y) -> DeepResNet1d:
    """The network of one grid cell, from the cache when an identical run was saved."""
    torch.manual_seed(seed)
    model = DeepResNet1d(args.blocks, width=width)
    path = CACHE / f"sweep-w{width}-b{args.blocks}-n{train}-seed{seed}-e{args.epochs}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = fit(model, x, y, args.epochs, seed=seed, log=None).eval()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def one_cell(width: int, train: int, seed: int, args, data) -> dict:
    (x, y), held = split(seed, SimpleNamespace(train=train, held_out=HELD_OUT), data)
    x_test, y_test = data[2], data[3]
    model = trained(width, train, seed, args, x, y)
    example = x_test[:2]
    curve = gg.modularity_curve(gg.capture(model, held, include_input=True), k=3, n=200, repeats=5, seed=seed)
    plan = gg.prune_plan(curve, model, args.tol, example=example)
    count = len(plan.layers)
    out = {
        "width": width,
        "train": train,
        "seed": seed,
        "base": accuracy(model, x_test, y_test),
        "removable": len(plan.removable),
        "plan": plan.layers,
        "curve": curve.mean.round(4).tolist(),
    }
    if not count:
        return out
    rng = np.random.default_rng(seed)
    out["random"] = sorted(rng.choice(plan.removable, size=count, replace=False).tolist(), key=curve.layers.index)
    for variant in ("plan", "random"):
        cut = recalibrate_bn(gg.prune(model, out[variant], example=example), x)
        tuned = fit(copy.deepcopy(cut), x, y, args.finetune, lr=args.finetune_lr, seed=seed, log=None)
        out[f"{variant}_recalibrated"] = accuracy(cut, x_test, y_test)
        out[f"{variant}_finetuned"] = accuracy(tuned, x_test, y_test)
    return out


def report(cells: list[dict], args) -> None:
    print(
        f"\nDeepResNet1d, 3 x {args.blocks} blocks; curve on {HELD_OUT} held-out training signals (k = 3, 5 x 200), "
        f"tol {args.tol}; {args.epochs} epochs; fine-tuning {args.finetune} epochs (lr {args.finetune_lr}); "
        f"seeds {args.seeds}; accuracies on the 1000 test signals, mean over seeds"
    )
    print(
        "\n| width | training signals | accuracy | plateau: blocks removed (share of removable) "
        "| plan: BN re-est. / fine-tuned | random, same count: BN re-est. / fine-tuned | plan beats random "
        "(fine-tuned) |"
    )
    print("|---|---|---|---|---|---|---|")

    def pt(v) -> str:
        return f"{100 * np.mean(v):+.1f}"

    for width in args.widths:
        for train in args.train:
            runs = [c for c in cells if c["width"] == width and c["train"] == train]
            some = [c for c in runs if c["plan"]]
            removed = [len(c["plan"]) for c in runs]
            share = np.mean([len(c["plan"]) / c["removable"] for c in runs])
            row = [
                str(width),
                str(train),
                f"{100 * np.mean([c['base'] for c in runs]):.1f}%",
                f"{', '.join(map(str, removed))} ({share:.0%})",
            ]
            if some:
                drop = {
                    f"{v}_{s}": [c[f"{v}_{s}"] - c["base"] for c in some]
                    for v in ("plan", "random")
                    for s in ("recalibrated", "finetuned")
                }
                wins = sum(c["plan_finetuned"] > c["random_finetuned"] for c in some)
                losses = sum(c["plan_finetuned"] < c["random_finetuned"] for c in some)
                row += [
                    f"{pt(drop['plan_recalibrated'])} / {pt(drop['plan_finetuned'])} pt",
                    f"{pt(drop['random_recalibrated'])} / {pt(drop['random_finetuned'])} pt",
                    f"{wins}-{losses} of {len(some)}",
                ]
            else:
                row += ["nothing removed"] * 2 + ["-"]
            print("| " + " | ".join(row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32], help="channels of the first stage")
    ap.add_argument("--train", type=int, nargs="+", default=[300, 1000, 3000], help="training signals (of 4000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--blocks", type=int, default=6, help="residual blocks per stage")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune", type=int, default=2)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if max(args.train) + HELD_OUT > 4000:
        raise SystemExit(f"--train {max(args.train)} + {HELD_OUT} held out exceed MNIST-1D's 4000 training signals")
    torch.set_num_threads(args.threads)
    print(environment())
    start = time.perf_counter()
    data = mnist1d_data()
    cells = []
    for width in args.widths:
        for train in args.train:
            for seed in args.seeds:
                c = one_cell(width, train, seed, args, data)
                cells.append(c)
                tail = (
                    (
                        f"plan {c['plan']}: {c['plan_finetuned']:.1%} fine-tuned; random {c['random']}: "
                        f"{c['random_finetuned']:.1%}"
                    )
                    if c["plan"]
                    else "the plan removes nothing"
                )
                print(
                    f"width {width}, {train} signals, seed {seed} ({c['base']:.1%}): {tail} "
                    f"[{time.perf_counter() - start:.0f} s]",
                    flush=True,
                )
    report(cells, args)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cells": cells}, f, indent=1)


if __name__ == "__main__":
    main()
