"""Transferability: does gg.rank_sources order source networks as fine-tuning does?

    python benchmarks/transfer.py [--finetune-epochs 10] [--seeds 3]

Target task: MNIST-1D digits 5-9 (held out from every source but one), 100 training
signals a class; its test set: the held-out signals of those classes. Sources: 1-D Tiny-10
CNNs (benchmarks/_zoo.py, cached in benchmarks/cache/) trained on digits 0-4 for 15, 3 and
1 epochs, on 0-1 and 0-2 only, on 200 signals of 0-4, on 0-4 with shuffled labels, on all
ten digits (the target's classes included: an upper reference), and one untrained.

Ground truth per source, means over --seeds: fine-tuning (a new 5-class head, the whole
network trained on the target's 500 signals, AdamW one-cycle) and a linear probe (logistic
regression on the standardised frozen features a head reads). Scores: gg.rank_sources on the target's
500 training signals, every measure. Kendall's tau-b of each score with each ground truth,
with a 95% bootstrap interval over the sources.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import correlation_ci, environment
from _zoo import TinyCnn, mnist1d, trained
from scipy.stats import kendalltau
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import gpugraph as gg
from gpugraph.models.training import accuracy, fit

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = (5, 6, 7, 8, 9)


def subset(x, y, classes, per_class=None, shuffle_seed=None):
    """The signals of ``classes`` (labels renumbered 0..), at most per_class of each;
    labels permuted at random with ``shuffle_seed``."""
    keep = torch.cat([torch.nonzero(y == c).ravel()[:per_class] for c in classes]).sort().values
    codes = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
    codes[list(classes)] = torch.arange(len(classes))
    xs, ys = x[keep], codes[y[keep]]
    if shuffle_seed is not None:
        ys = ys[torch.randperm(len(ys), generator=torch.Generator().manual_seed(shuffle_seed))]
    return xs, ys


def sources(x, y) -> dict[str, nn.Module]:
    zoo = {}
    for label, classes, epochs, kwargs in (
        ("0-4, 15 epochs, seed 0", (0, 1, 2, 3, 4), 15, {"seed": 0}),
        ("0-4, 15 epochs, seed 1", (0, 1, 2, 3, 4), 15, {"seed": 1}),
        ("0-4, 3 epochs", (0, 1, 2, 3, 4), 3, {}),
        ("0-4, 1 epoch", (0, 1, 2, 3, 4), 1, {}),
        ("0-1, 15 epochs", (0, 1), 15, {}),
        ("0-2, 15 epochs", (0, 1, 2), 15, {}),
        ("0-4, 200 signals", (0, 1, 2, 3, 4), 15, {"per_class": 40}),
        ("0-4, shuffled labels", (0, 1, 2, 3, 4), 15, {"shuffle_seed": 0}),
        ("all 10 digits", tuple(range(10)), 15, {}),
    ):
        seed = kwargs.get("seed", 0)
        xs, ys = subset(x, y, classes, kwargs.get("per_class"), kwargs.get("shuffle_seed"))
        tag = (
            "c"
            + "".join(map(str, classes))
            + (f"-n{len(xs)}" if "per_class" in kwargs else "")
            + ("-shuffled" if "shuffle_seed" in kwargs else "")
        )
        zoo[label] = trained("cnn", seed, xs, ys, epochs, tag=tag, classes=len(classes))
    torch.manual_seed(20)
    zoo["untrained"] = TinyCnn(classes=5).eval()
    return zoo


def finetuned_accuracy(source: nn.Module, x, y, x_test, y_test, epochs: int, seed: int) -> float:
    model = copy.deepcopy(source)
    torch.manual_seed(seed)
    model.fc = nn.Linear(model.fc.in_features, len(TARGET))
    fit(model, x, y, epochs, seed=seed, log=None)
    return accuracy(model, x_test, y_test)


def probe_accuracy(source: nn.Module, x, y, x_test, y_test) -> float:
    def features(inputs):
        kept = []
        handle = source.fc.register_forward_pre_hook(lambda m, args: kept.append(args[0]))
        try:
            with torch.no_grad():
                source.eval()(inputs)
        finally:
            handle.remove()
        return kept[0].numpy()

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(features(x), y.numpy())
    return float(clf.score(features(x_test), y_test.numpy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds averaged per source")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(RESULTS / "transfer.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(environment())
    x_train, y_train, x_eval, y_eval = mnist1d(2000)
    zoo = sources(x_train, y_train)
    xt, yt = subset(x_train, y_train, TARGET, per_class=100)
    xt_test, yt_test = subset(x_eval, y_eval, TARGET)
    print(f"target: digits {TARGET}, {len(xt)} training / {len(xt_test)} test signals; {len(zoo)} sources")

    t0 = time.perf_counter()
    ranking = gg.rank_sources(zoo, (xt, yt), k=args.k)
    scored = time.perf_counter() - t0
    truth = {}
    for name, model in zoo.items():
        fine = [finetuned_accuracy(model, xt, yt, xt_test, yt_test, args.finetune_epochs, s) for s in range(args.seeds)]
        truth[name] = {
            "finetuned": float(np.mean(fine)),
            "finetuned_std": float(np.std(fine, ddof=1)) if len(fine) > 1 else 0.0,
            "probe": probe_accuracy(model, xt, yt, xt_test, yt_test),
        }
    width = max(len(n) for n in zoo)
    print(
        f"\n{'source':<{width}}  {'fine-tuned':>10}  {'probe':>6}  " + "  ".join(f"{m:>12}" for m in ranking.measures)
    )
    for name in zoo:
        print(
            f"{name:<{width}}  {truth[name]['finetuned']:10.1%}  {truth[name]['probe']:6.1%}  "
            + "  ".join(f"{ranking.scores[name][m]:12.4f}" for m in ranking.measures)
        )
    print(f"(rank_sources: {scored:.1f} s for {len(zoo)} sources)")
    summary = {}
    for outcome in ("finetuned", "probe"):
        print(f"\nKendall tau-b with the {outcome} accuracy ({len(zoo)} sources), 95% bootstrap CI, p-value:")
        summary[outcome] = {}
        for m in ranking.measures:
            result, (lo, hi) = correlation_ci(
                kendalltau, [ranking.scores[n][m] for n in zoo], [truth[n][outcome] for n in zoo]
            )
            tau, p = float(result.statistic), float(result.pvalue)
            summary[outcome][m] = {"tau": tau, "p": p, "ci95": [float(lo), float(hi)]}
            print(f"  {m:<14} {tau:+.2f}  [{lo:+.2f}, {hi:+.2f}]  p={p:.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "scores": ranking.scores,
                "truth": truth,
                "kendall": summary,
                "finetune_epochs": args.finetune_epochs,
                "seeds": args.seeds,
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.json}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
