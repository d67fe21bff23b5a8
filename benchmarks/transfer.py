"""Transferability: does gg.rank_sources order source networks as fine-tuning does?

    python benchmarks/transfer.py [--finetune-epochs 10] [--seeds 5]

Target task: MNIST-1D digits 5-9, 100 training signals a class; its test set: the held-out
signals of those classes. Sources (22): 1-D Tiny-10 CNNs (benchmarks/_zoo.py, cached in
benchmarks/cache/) spread over data and training: digits 0-4 for 1, 3, 5, 8 and 15 epochs
and from four seeds, on 200, 500 and 1000 signals of 0-4, on 0-1, 0-2, 0-3 and 1-4, on 0-4
with shuffled labels (two seeds), two untrained; and three *leaky* sources that have seen
some of the target's classes (all ten digits for 15 and 1 epochs, digits 0-6). Every
correlation is reported over all sources and over the 19 that have never seen a target
class: a leaky source can top every ranking for the wrong reason.

Ground truth per source, mean and spread over --seeds: fine-tuning (a new 5-class head, the
whole network trained on the target's 500 signals, AdamW one-cycle) and a linear probe
(logistic regression on the standardised frozen features a head reads). Scores:
gg.rank_sources on the target's 500 training signals, every measure. Kendall's tau-b of each
score with each ground truth, with a 95% bootstrap interval over the sources and a p-value
adjusted by Holm's method for the 10 comparisons (5 measures x 2 truths) of a source set.
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


FIVE = (0, 1, 2, 3, 4)
SOURCES = (
    ("0-4, 15 epochs, seed 0", FIVE, 15, {"seed": 0}),
    ("0-4, 15 epochs, seed 1", FIVE, 15, {"seed": 1}),
    ("0-4, 15 epochs, seed 2", FIVE, 15, {"seed": 2}),
    ("0-4, 15 epochs, seed 3", FIVE, 15, {"seed": 3}),
    ("0-4, 8 epochs", FIVE, 8, {}),
    ("0-4, 5 epochs", FIVE, 5, {}),
    ("0-4, 3 epochs", FIVE, 3, {}),
    ("0-4, 1 epoch", FIVE, 1, {}),
    ("0-1, 15 epochs", (0, 1), 15, {}),
    ("0-2, 15 epochs", (0, 1, 2), 15, {}),
    ("0-3, 15 epochs", (0, 1, 2, 3), 15, {}),
    ("1-4, 15 epochs", (1, 2, 3, 4), 15, {}),
    ("0-4, 200 signals", FIVE, 15, {"per_class": 40}),
    ("0-4, 500 signals", FIVE, 15, {"per_class": 100}),
    ("0-4, 1000 signals", FIVE, 15, {"per_class": 200}),
    ("0-4, shuffled labels", FIVE, 15, {"shuffle_seed": 0}),
    ("0-4, shuffled labels, seed 1", FIVE, 15, {"shuffle_seed": 1, "seed": 1}),
    ("all 10 digits", tuple(range(10)), 15, {}),
    ("all 10 digits, 1 epoch", tuple(range(10)), 1, {}),
    ("0-6, 15 epochs", tuple(range(7)), 15, {}),
)
UNTRAINED = {"untrained": 20, "untrained, seed 21": 21}


def leaky(name: str) -> bool:
    """Whether a source has seen one of the target's classes."""
    classes = next((c for label, c, _, _ in SOURCES if label == name), ())
    return bool(set(classes) & set(TARGET))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of ``pvalues``, in their order."""
    order = np.argsort(pvalues)
    adjusted = np.empty(len(pvalues))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def sources(x, y) -> dict[str, nn.Module]:
    zoo = {}
    for label, classes, epochs, kwargs in SOURCES:
        seed = kwargs.get("seed", 0)
        xs, ys = subset(x, y, classes, kwargs.get("per_class"), kwargs.get("shuffle_seed"))
        tag = (
            "c"
            + "".join(map(str, classes))
            + (f"-n{len(xs)}" if "per_class" in kwargs else "")
            + ("-shuffled" if "shuffle_seed" in kwargs else "")
        )
        zoo[label] = trained("cnn", seed, xs, ys, epochs, tag=tag, classes=len(classes))
    for label, seed in UNTRAINED.items():
        torch.manual_seed(seed)
        zoo[label] = TinyCnn(classes=5).eval()
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
    ap.add_argument("--seeds", type=int, default=5, help="fine-tuning seeds averaged per source")
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
        f"\n{'source':<{width}}  {'fine-tuned (std)':>16}  {'probe':>6}  "
        + "  ".join(f"{m:>12}" for m in ranking.measures)
    )
    for name in zoo:
        print(
            f"{name:<{width}}  {truth[name]['finetuned']:8.1%} ({truth[name]['finetuned_std']:4.1%})  "
            f"{truth[name]['probe']:6.1%}  "
            + "  ".join(f"{ranking.scores[name][m]:12.4f}" for m in ranking.measures)
            + ("  (leaky)" if leaky(name) else "")
        )
    print(f"(rank_sources: {scored:.1f} s for {len(zoo)} sources)")
    summary = {}
    for group, names in (("all", list(zoo)), ("not leaky", [n for n in zoo if not leaky(n)])):
        summary[group] = {}
        rows = []
        for outcome in ("finetuned", "probe"):
            for m in ranking.measures:
                result, (lo, hi) = correlation_ci(
                    kendalltau, [ranking.scores[n][m] for n in names], [truth[n][outcome] for n in names]
                )
                rows.append((outcome, m, float(result.statistic), float(result.pvalue), float(lo), float(hi)))
        adjusted = holm([r[3] for r in rows])
        for (outcome, m, tau, p, lo, hi), p_holm in zip(rows, adjusted, strict=True):
            summary[group].setdefault(outcome, {})[m] = {"tau": tau, "p": p, "p_holm": p_holm, "ci95": [lo, hi]}
        for outcome in ("finetuned", "probe"):
            print(
                f"\nKendall tau-b with the {outcome} accuracy, {group} sources ({len(names)}): 95% bootstrap CI, "
                "p, p adjusted (Holm, 10 comparisons):"
            )
            for m in ranking.measures:
                s = summary[group][outcome][m]
                print(
                    f"  {m:<14} {s['tau']:+.2f}  [{s['ci95'][0]:+.2f}, {s['ci95'][1]:+.2f}]  "
                    f"p={s['p']:.3f}  Holm {s['p_holm']:.3f}"
                )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "scores": ranking.scores,
                "truth": truth,
                "leaky": [n for n in zoo if leaky(n)],
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
