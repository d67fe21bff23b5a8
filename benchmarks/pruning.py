"""The pruning control experiment of Lu et al. (2022), offline on MNIST-1D.

    python benchmarks/pruning.py [--seeds 0 1 2] [--blocks 4] [--train 4000] [--noise 0.0]
                                 [--epochs 15] [--finetune 2] [--finetune-lr 1e-3] [--tol 0.01]
                                 [--json PATH]

For each seed: train a deeper 1-D ResNet (three stages of --blocks residual blocks, widths
16, 32, 64; the first block of stages 2 and 3 downsamples) on --train MNIST-1D signals (a
share --noise of their labels replaced at random), measure its modularity curve on the 1000
test signals (5 subsets of 200, k = 3), and let gpugraph.prune_plan pick the plateau blocks.
The control removes as many removable blocks that are NOT on a plateau (the ones the plan
keeps because they raise the modularity), drawn at random with the seed. Both pruned copies
are evaluated as cut (no training), with their batch-norm statistics re-estimated on the
training signals (no weight changed: gpugraph.models.training.recalibrate_bn) and after --finetune
epochs of fine-tuning, and retrained from scratch for --epochs (as Lu et al. retrain); params and
FLOPs per sample by gpugraph.model_cost. Prints one table, mean +- std over the seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from _common import environment
from torch import nn

import gpugraph as gg
from gpugraph.models.training import accuracy, fit, recalibrate_bn, reinitialise
from gpugraph.tools.demo import ResBlock1d, mnist1d_data


class DeepResNet1d(nn.Module):
    """Stem conv, three stages of ``blocks`` residual blocks (16, 32, 64 wide), pooled head."""

    def __init__(self, blocks: int = 4, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, 16, 5, padding=2, bias=False), nn.BatchNorm1d(16), nn.ReLU())
        layers, c_in = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for b in range(blocks):
                layers.append(ResBlock1d(c_in, width, stride=2 if stage and not b else 1))
                c_in = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x[:, None, :]
        return self.fc(self.blocks(self.stem(x)).mean(dim=2))


def one_seed(seed: int, args, data) -> dict:
    x_train, y_train, x_test, y_test = data
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x_train), generator=g)[: args.train]
    x, y = x_train[pick], y_train[pick].clone()
    noisy = torch.rand(len(y), generator=g) < args.noise
    y[noisy] = torch.randint(0, 10, (int(noisy.sum()),), generator=g)
    torch.manual_seed(seed)
    model = fit(DeepResNet1d(args.blocks), x, y, args.epochs, seed=seed, log=None)
    base = accuracy(model, x_test, y_test)
    acts = gg.capture(model, (x_test, y_test), include_input=True)
    curve = gg.modularity_curve(acts, k=3, n=200, repeats=5, seed=seed)
    example = x_test[:2]
    plan = gg.prune_plan(curve, model, args.tol, example=example)
    rising = [name for name in plan.removable if name not in plan.layers]  # off the plateaus
    rng = np.random.default_rng(seed)
    control = sorted(rng.choice(rising, size=min(len(plan.layers), len(rising)), replace=False).tolist(),
                     key=curve.layers.index)
    one = x_test[:1]
    cost = gg.model_cost(model, one)
    out = {"seed": seed, "base": base, "curve": curve.mean.round(4).tolist(), "layers": curve.layers,
           "plateau_layers": plan.layers, "control_layers": control}
    for variant, layers in (("plateau", plan.layers), ("control", control)):
        if not layers:
            continue
        pruned = gg.prune(model, layers, example=example)
        c = gg.model_cost(pruned, one)
        tuned = (fit(copy.deepcopy(pruned), x, y, args.finetune, lr=args.finetune_lr, seed=seed, log=None)
                 if args.finetune else pruned)
        cut = accuracy(pruned, x_test, y_test)
        recalibrated = accuracy(recalibrate_bn(copy.deepcopy(pruned), x), x_test, y_test)
        fresh = reinitialise(copy.deepcopy(pruned), seed)
        retrained = accuracy(fit(fresh, x, y, args.epochs, seed=seed, log=None), x_test, y_test)
        out[variant] = {"cut": cut, "recalibrated": recalibrated, "finetuned": accuracy(tuned, x_test, y_test),
                        "retrained": retrained,
                        "params_removed": 1 - c["params"] / cost["params"],
                        "flops_removed": 1 - c["flops"] / cost["flops"],
                        "dq": [float(curve.delta[curve.layers.index(n)]) for n in layers]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--blocks", type=int, default=4, help="residual blocks per stage")
    ap.add_argument("--train", type=int, default=4000, help="training signals (of 4000)")
    ap.add_argument("--noise", type=float, default=0.0, help="share of training labels replaced at random")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune", type=int, default=2)
    ap.add_argument("--finetune-lr", type=float, default=1e-3, help="peak learning rate of the fine-tuning")
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(environment())
    start = time.perf_counter()
    data = mnist1d_data()
    runs = []
    for seed in args.seeds:
        r = one_seed(seed, args, data)
        runs.append(r)
        print(f"seed {seed}: base {r['base']:.1%}; plateau {r['plateau_layers']}; control {r['control_layers']}",
              flush=True)
        for variant in ("plateau", "control"):
            if variant in r:
                v = r[variant]
                print(f"  {variant:8s} dQ {np.round(v['dq'], 3).tolist()}: cut {v['cut']:.1%}, BN recalibrated "
                      f"{v['recalibrated']:.1%}, fine-tuned {v['finetuned']:.1%}, retrained {v['retrained']:.1%}", flush=True)
    print(f"\nDeepResNet1d, 3 x {args.blocks} blocks, {args.train} training signals, label noise {args.noise:.0%}, "
          f"{args.epochs} epochs; fine-tuning {args.finetune} epochs (lr {args.finetune_lr}); tol {args.tol}; seeds {args.seeds}")
    print("| model | blocks removed | params removed | FLOPs removed | accuracy as cut | BN recalibrated "
          "| fine-tuned | retrained from scratch |")
    print("|---|---|---|---|---|---|---|---|")
    ms = lambda v: f"{100 * np.mean(v):.1f} +- {100 * np.std(v):.1f}%"
    print(f"| original | 0 | 0 | 0 | {ms([r['base'] for r in runs])} | | | |")
    for variant in ("plateau", "control"):
        have = [r for r in runs if variant in r]
        if not have:
            print(f"| {variant} | none chosen | | | | | | |")
            continue
        print(f"| {variant} | {np.mean([len(r[variant]['dq']) for r in have]):.1f} "
              f"| {ms([r[variant]['params_removed'] for r in have])} | {ms([r[variant]['flops_removed'] for r in have])} "
              f"| {ms([r[variant]['cut'] for r in have])} | {ms([r[variant]['recalibrated'] for r in have])} "
              f"| {ms([r[variant]['finetuned'] for r in have])} | {ms([r[variant]['retrained'] for r in have])} |")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
