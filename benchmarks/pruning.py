"""Lu et al.'s pruning application as a paired test, offline on MNIST-1D.

    python benchmarks/pruning.py [--seeds 0 1 ... 9] [--blocks 6] [--train 1000] [--held-out 1000]
                                 [--epochs 30] [--finetune 2] [--tol 0.01] [--json PATH]

For each seed: train a 1-D ResNet (three stages of --blocks residual blocks, widths 16, 32,
64; the first block of stages 2 and 3 downsamples, so it cannot be removed) on --train
MNIST-1D training signals, and measure its modularity curve on --held-out OTHER training
signals (5 subsets of 200, k = 3): the selection never sees the test signals. The plan
(``gg.prune_plan(tol)``) removes L blocks. Against it, at the same L, in the same run:

- random: L blocks drawn at random (with the seed) from all removable blocks;
- last: the plain rule "the last blocks of each stage" (the last block of stage 1, 2, 3,
  then the second-to-last of each, ..., skipping blocks that cannot go);
- lsim: GBS's layer similarity on the same held-out signals (``gg.prune_plan(acts,
  by="lsim", count=L)``): L times, the block whose dense LSim with the last kept layer is
  highest, i.e. that changes the samples' graph least;
- oracle: greedily, the block whose removal keeps the highest held-out accuracy (batch
  norms re-estimated), L times: a ceiling that looks at the labels of the held-out signals.

Every copy is scored on the 1000 test signals as cut, with its batch-norm statistics
re-estimated on the training signals (no weight changed), and after --finetune epochs of
fine-tuning. Per stage the table gives mean +- std, the paired wins of the plan over each
control (ties apart) and a two-sided sign test. Then how stable the plan is: the plans of the
curve at k = 3, 5, 7, 9, 11 (n = 200) and at n = 100 .. held-out (k = 3), and their Jaccard
overlap with the default plan.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from _common import environment
from scipy.stats import binomtest
from torch import nn

import gpugraph as gg
from gpugraph.models.training import accuracy, fit, recalibrate_bn
from gpugraph.tools.demo import ResBlock1d, mnist1d_data

VARIANTS = ("plan", "lsim", "random", "last", "oracle")
PAIRS = (
    ("plan", "random"),
    ("plan", "last"),
    ("lsim", "random"),
    ("lsim", "last"),
    ("lsim", "plan"),
    ("oracle", "plan"),
    ("oracle", "lsim"),
)
STAGES = ("cut", "recalibrated", "finetuned")


class DeepResNet1d(nn.Module):
    """Stem conv, three stages of ``blocks`` residual blocks (16, 32, 64 wide), pooled head."""

    def __init__(self, blocks: int = 4, classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, width, 5, padding=2, bias=False), nn.BatchNorm1d(width), nn.ReLU())
        layers, c_in = [], width
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                layers.append(ResBlock1d(c_in, w, stride=2 if stage and not b else 1))
                c_in = w
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x[:, None, :]
        return self.fc(self.blocks(self.stem(x)).mean(dim=2))


def split(seed: int, args, data):
    """(x, y) to train on, (x, y) held out for the selection, both from the training signals."""
    x_train, y_train, _, _ = data
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    train, held = perm[: args.train], perm[args.train : args.train + args.held_out]
    return (x_train[train], y_train[train]), (x_train[held], y_train[held])


def last_blocks(removable: list[str], blocks: int, count: int) -> list[str]:
    """The last removable blocks of each stage, taken in turn from the end of every stage."""
    order = [f"blocks.{stage * blocks + blocks - 1 - depth}" for depth in range(blocks) for stage in range(3)]
    return [name for name in order if name in removable][:count]


def oracle(model, removable: list[str], count: int, example, train, held) -> list[str]:
    """Greedy: ``count`` times, the block whose removal (with the ones already chosen) keeps
    the highest held-out accuracy after re-estimating the batch norms."""
    chosen: list[str] = []
    for _ in range(count):
        scores = {}
        for name in (n for n in removable if n not in chosen):
            pruned = recalibrate_bn(gg.prune(model, [*chosen, name], example=example), train[0])
            scores[name] = accuracy(pruned, *held)
        chosen.append(max(scores, key=lambda n: (scores[n], -removable.index(n))))
    return chosen


def plan_of(model, acts, example, k: int, n: int, seed: int, tol: float) -> list[str]:
    repeats = max(1, min(5, len(acts.labels) // n))
    curve = gg.modularity_curve(acts, k=k, n=n, repeats=repeats, seed=seed)
    return gg.prune_plan(curve, model, tol, example=example).layers


def one_seed(seed: int, args, data) -> dict:
    (x, y), held = split(seed, args, data)
    x_test, y_test = data[2], data[3]
    torch.manual_seed(seed)
    model = fit(DeepResNet1d(args.blocks), x, y, args.epochs, seed=seed, log=None).eval()
    example = x_test[:2]
    acts = gg.capture(model, held, include_input=True)
    curve = gg.modularity_curve(acts, k=3, n=min(200, args.held_out // 5), repeats=5, seed=seed)
    plan = gg.prune_plan(curve, model, args.tol, example=example)
    count = len(plan.layers)
    out = {
        "seed": seed,
        "base": accuracy(model, x_test, y_test),
        "layers": curve.layers,
        "curve": curve.mean.round(4).tolist(),
        "removable": plan.removable,
        "chosen": {"plan": plan.layers},
    }
    if count:
        rng = np.random.default_rng(seed)
        out["chosen"]["random"] = sorted(
            rng.choice(plan.removable, size=count, replace=False).tolist(), key=curve.layers.index
        )
        out["chosen"]["last"] = last_blocks(plan.removable, args.blocks, count)
        out["chosen"]["lsim"] = gg.prune_plan(acts, model, by="lsim", count=count, example=example).layers
        out["chosen"]["oracle"] = oracle(model, plan.removable, count, example, (x, y), held)
        cost = gg.model_cost(model, x_test[:1])
        for variant, layers in out["chosen"].items():
            pruned = gg.prune(model, layers, example=example)
            recalibrated = recalibrate_bn(copy.deepcopy(pruned), x)
            tuned = fit(copy.deepcopy(recalibrated), x, y, args.finetune, lr=args.finetune_lr, seed=seed, log=None)
            out[variant] = {
                "cut": accuracy(pruned, x_test, y_test),
                "recalibrated": accuracy(recalibrated, x_test, y_test),
                "finetuned": accuracy(tuned, x_test, y_test),
                "params_removed": 1 - gg.model_cost(pruned, x_test[:1])["params"] / cost["params"],
            }
    # how the plan moves with the curve's k and n (same held-out signals)
    out["plans_by_k"] = {k: plan_of(model, acts, example, k, 200, seed, args.tol) for k in (3, 5, 7, 9, 11)}
    sizes = [n for n in (100, 200, 500, 1000, 2000) if n <= args.held_out]
    out["plans_by_n"] = {n: plan_of(model, acts, example, 3, n, seed, args.tol) for n in sizes}
    return out


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def report(runs: list[dict], args) -> None:
    have = [r for r in runs if "plan" in r]
    print(
        f"\nDeepResNet1d, 3 x {args.blocks} blocks; {args.train} training signals, {args.held_out} others held out "
        f"for the curve (k = 3, 5 x 200) and the oracle, 1000 test signals; {args.epochs} epochs; fine-tuning "
        f"{args.finetune} epochs (lr {args.finetune_lr}); tol {args.tol}; seeds {args.seeds}"
    )
    print(f"seeds whose plan removes nothing: {len(runs) - len(have)} of {len(runs)}")
    if not have:
        return
    print(
        f"blocks removed: {', '.join(str(len(r['chosen']['plan'])) for r in have)} "
        f"(original accuracy {100 * np.mean([r['base'] for r in runs]):.1f} +- "
        f"{100 * np.std([r['base'] for r in runs]):.1f}%)"
    )
    print("\n| removed by | params removed | as cut | BN re-estimated | fine-tuned |")
    print("|---|---|---|---|---|")

    def ms(v) -> str:
        return f"{100 * np.mean(v):.1f} +- {100 * np.std(v):.1f}%"

    for variant in VARIANTS:
        print(
            f"| {variant} | {ms([r[variant]['params_removed'] for r in have])} | "
            + " | ".join(ms([r[variant][s] for r in have]) for s in STAGES)
            + " |"
        )
    print("\n| paired, per seed | as cut | BN re-estimated | fine-tuned |")
    print("|---|---|---|---|")
    for a, b in PAIRS:
        cells = []
        for stage in STAGES:
            diff = np.array([r[a][stage] - r[b][stage] for r in have])
            wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
            p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
            cells.append(f"{wins}-{losses} (p = {p:.3f}), mean {100 * diff.mean():+.1f} pt")
        print(f"| {a} vs {b} | " + " | ".join(cells) + " |")
    print("\nstability of the plan (Jaccard with the k = 3, n = 200 plan, mean over seeds):")
    for key, label in (("plans_by_k", "k"), ("plans_by_n", "n")):
        values = sorted({v for r in runs for v in map(int, r[key])})
        cells = [
            f"{label} = {v}: {np.mean([jaccard(r[key][v], r['chosen']['plan']) for r in runs]):.2f}" for v in values
        ]
        print("  " + ", ".join(cells))
    counts: dict[str, int] = {}
    for r in runs:
        for name in r["chosen"]["plan"]:
            counts[name] = counts.get(name, 0) + 1
    print(
        "blocks the plan removed, over the seeds: "
        + ", ".join(f"{n} x{c}" for n, c in sorted(counts.items(), key=lambda t: int(t[0].split(".")[-1])))
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--blocks", type=int, default=6, help="residual blocks per stage")
    ap.add_argument("--train", type=int, default=1000, help="training signals (of 4000)")
    ap.add_argument("--held-out", type=int, default=1000, help="other training signals for the selection")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune", type=int, default=2)
    ap.add_argument("--finetune-lr", type=float, default=1e-3, help="peak learning rate of the fine-tuning")
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.train + args.held_out > 4000:
        raise SystemExit(f"--train {args.train} + --held-out {args.held_out} exceed MNIST-1D's 4000 training signals")
    torch.set_num_threads(args.threads)
    print(environment())
    start = time.perf_counter()
    data = mnist1d_data()
    runs = []
    for seed in args.seeds:
        r = one_seed(seed, args, data)
        runs.append(r)
        line = "; ".join(
            f"{v} {r['chosen'][v]}: " + ", ".join(f"{r[v][s]:.1%}" for s in STAGES) for v in VARIANTS if v in r
        )
        print(f"seed {seed} ({r['base']:.1%}): {line or 'the plan removes nothing'}", flush=True)
    report(runs, args)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
